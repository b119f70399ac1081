"""``qaudio plan`` and ``qaudio hardware`` through click's CliRunner.

Vendor tools are faked as in test_hardware.py (this machine has no GPU); a few runs use the
real machine and the real llama.cpp build with no fakes at all.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from qaudio_local.cli.main import main
from qaudio_local.models import hardware, hardware_probes

RTX_4070 = "0, NVIDIA GeForce RTX 4070, 12282, 11563, 8.9, 550.54.14\n"


def invoke(*args: str) -> Result:
    if "mix_stderr" in inspect.signature(CliRunner).parameters:  # click < 8.2
        runner = CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    else:
        runner = CliRunner()
    result = runner.invoke(main, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"the CLI leaked {result.exception!r}") from result.exception
    return result


@pytest.fixture()
def machine(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """An RTX 4070 (11.3 GiB free), 32 GiB RAM and a CUDA build of llama.cpp."""
    monkeypatch.setattr(hardware_probes, "probe_nvml", lambda: None)
    monkeypatch.setattr(
        hardware_probes,
        "run_probe",
        lambda cmd, timeout=0: RTX_4070 if cmd[0] == "nvidia-smi" else None,
    )
    monkeypatch.setattr(hardware_probes, "platform_id", lambda: ("Linux", "x86_64"))
    monkeypatch.setattr(hardware_probes, "ram", lambda *a: (32 * hardware.GIB, 30 * hardware.GIB))
    monkeypatch.setattr(hardware, "_backend", lambda: (True, ("CUDA", "CPU"), "0.3.36", None))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return monkeypatch


def test_plan_shows_hardware_decision_arithmetic_and_why(machine: pytest.MonkeyPatch) -> None:
    r = invoke("plan", "--vram", "8")
    assert r.exit_code == 0, r.stderr
    out = r.stdout
    assert "GPU 0: NVIDIA GeForce RTX 4070 (nvidia)" in out and "8.00 GiB usable (--vram)" in out
    assert "compute 8.9" in out and "driver 550.54.14" in out
    assert "backends CUDA, CPU; GPU offload: yes" in out
    assert "quant Q4_K_M" in out and "n_gpu_layers=33" in out
    assert "KV cache f16" in out and "2.00 GiB" in out and "safety margin" in out
    assert "why: Q4_K_M is the best quant that fits entirely on the GPU" in out
    assert r.stderr == ""


def test_plan_json(machine: pytest.MonkeyPatch) -> None:
    r = invoke("plan", "qwen2-audio", "--n-ctx", "8192", "--kv-type", "q8_0", "--json")
    assert r.exit_code == 0, r.stderr
    data = json.loads(r.stdout)
    p = data["plan"]
    assert p["model"] == "qwen2-audio-7b-instruct" and p["n_ctx"] == 8192
    assert p["kv_type"] == "q8_0" and p["fits"] is True and p["quant"] in ("Q6_K", "Q8_0")
    assert p["expected_bytes"]["gpu"] <= 11563 * 1024 * 1024
    gpu = p["devices"][0]
    assert gpu["kind"] == "gpu" and gpu["needed"] == sum(x["bytes"] for x in gpu["lines"])
    assert data["hardware"]["gpus"][0]["compute_capability"] == "8.9"


def test_cpu_only_build_prints_the_reinstall_command(machine: pytest.MonkeyPatch) -> None:
    machine.setattr(hardware, "_backend", lambda: (False, ("CPU",), "0.3.36", None))
    r = invoke("plan")
    assert r.exit_code == 0
    assert "placement: all layers on the CPU (n_gpu_layers=0)" in r.stdout
    assert (
        'CMAKE_ARGS="-DGGML_CUDA=on" pip install --force-reinstall --no-cache-dir '
        "llama-cpp-python==0.3.36" in r.stdout
    )
    r = invoke("hardware")
    assert r.exit_code == 0 and "GPU offload: no" in r.stdout and "CMAKE_ARGS" in r.stderr


def test_forced_quant_refused_then_forced(machine: pytest.MonkeyPatch) -> None:
    r = invoke("plan", "qwen2-audio:Q8_0", "--vram", "4", "--ram", "8")
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.startswith("error: Q8_0 does not fit") and r.stderr.count("\n") == 1
    assert "8.00 GiB is available" in r.stderr and "--force" in r.stderr
    r = invoke("plan", "--quant", "q8_0", "--vram", "4", "--ram", "8", "--force")
    assert (
        r.exit_code == 0 and "DOES NOT FIT" in r.stdout and "warning: Q8_0 was forced" in r.stdout
    )


def test_bad_names_and_conflicting_quants(machine: pytest.MonkeyPatch) -> None:
    r = invoke("plan", "whisper")
    assert r.exit_code == 2 and "unknown model 'whisper'" in r.stderr
    assert "qwen2-audio-7b-instruct" in r.stderr
    r = invoke("plan", "qwen2-audio:Q3_K_S")
    assert r.exit_code == 2 and "Q4_K_M" in r.stderr
    r = invoke("plan", "qwen2-audio:Q4_K_M", "--quant", "Q8_0")
    assert r.exit_code == 2 and "pick one" in r.stderr
    r = invoke("plan", "--n-ctx", "100000")
    assert r.exit_code == 2 and "--n-ctx 8192" in r.stderr


def test_broken_user_registry_is_one_clean_error(
    machine: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bad = tmp_path / "mine.toml"
    bad.write_text("[models.qwen2-audio]\nsize = 3\n")
    machine.setenv("QAUDIO_MODELS", str(bad))
    r = invoke("plan")
    assert r.exit_code == 2
    assert r.stderr == (
        f"error: {bad}: [models.qwen2-audio] size: unknown key; valid keys here: aliases, "
        "description, prompt, repo, revision, dims, quants, projectors\n"
    )


def test_real_machine_no_fakes() -> None:
    r = invoke("hardware", "--json")
    assert r.exit_code == 0, r.stderr
    hw = json.loads(r.stdout)
    assert hw["cpu_cores"] >= 1 and hw["ram_total"] > 0
    r = invoke("plan", "--ram", "16")
    assert r.exit_code == 0, r.stderr
    assert "model qwen2-audio-7b-instruct" in r.stdout and "why:" in r.stdout


def test_plan_parallel_shares_one_kv_cache(machine: pytest.MonkeyPatch) -> None:
    """llama.cpp's unified cache: N sequences share n_ctx cells, so memory stays the same."""
    one = json.loads(invoke("plan", "--json").stdout)["plan"]
    r = invoke("plan", "--parallel", "4")
    assert r.exit_code == 0, r.stderr
    assert "parallel: 4 sequences share the 4096-token KV cache (about 1024 tokens each" in r.stdout
    assert "one pool for 4 sequences" in r.stdout
    four = json.loads(invoke("plan", "--parallel", "4", "--json").stdout)["plan"]
    assert four["n_parallel"] == 4 and one["n_parallel"] == 1
    assert four["expected_bytes"] == one["expected_bytes"] and four["quant"] == one["quant"]
    bad = invoke("plan", "--parallel", "0")
    assert bad.exit_code == 2 and "--parallel" in bad.stderr
