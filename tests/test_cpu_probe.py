"""The CPU-kernel probe: quantized kernels that fault are found in a child and avoided.

The machines this runs on may or may not have the fault (Intel VMs advertising AMX do);
faults are injected into the real child process (it kills itself with a real signal at
the named step), and a "broken" verdict is forced through the real cache.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from qaudio_local.engine import cpu_probe
from qaudio_local.engine.cpu_probe import (
    ENCODER_STEP,
    FAULT_ENV,
    MTMD_STEP,
    STEPS,
    TEXT_STEPS,
    KernelVerdict,
    build_key,
    cached_verdict,
    cpu_kernel_verdict,
    kernel_plan,
    run_probe,
)
from qaudio_local.engine.model import AudioModel
from qaudio_local.engine.results import ModelOptions, SamplingOptions
from qaudio_local.errors import RuntimeBackendError

from .conftest import tone
from .test_cli import invoke, run_args

FAULTED = KernelVerdict(
    steps=tuple((s, "SIGILL" if s == "text:Q4_K_M" else "ok") for s in STEPS), amx=True
)


@pytest.fixture
def here() -> KernelVerdict:
    """This machine's real verdict (the session's cache). Tests never force the fast
    kernels where it found a fault: on such a machine they would kill the test run."""
    return cpu_kernel_verdict()


@pytest.fixture
def own_cache(here: KernelVerdict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache folder of this test's own (the session's verdict stays untouched)."""
    monkeypatch.setenv("QAUDIO_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def like_here(here: KernelVerdict, outcomes: dict[str, str] | None = None) -> KernelVerdict:
    """A verdict with this machine's outcomes but for the given ones."""
    named = outcomes or {}
    return KernelVerdict(steps=tuple((s, named.get(s, here.outcome(s))) for s in STEPS))


@pytest.fixture(scope="module")
def quant_pairs(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Q4_K_M (llama.cpp's quantizer) and Q8_0 text models, each with a q8_0 projector."""
    from qaudio_local.convert import convert_checkpoint

    root = tmp_path_factory.mktemp("quant")
    return {
        q: convert_checkpoint(tiny_checkpoint, root / q, outtype=q, mmproj_outtype="q8_0")
        for q in ("Q4_K_M", "Q8_0")
    }


def _force(verdict: KernelVerdict) -> None:
    cpu_probe._store(build_key(), verdict)


def test_the_probe_runs_every_step_once_then_reads_the_cache(own_cache: Path) -> None:
    first = cpu_kernel_verdict()
    assert [s for s, _ in first.steps] == list(STEPS) and first.error is None
    assert not first.cached and first.seconds > 0
    if "AMX" not in build_key()["system_info"]:  # no AMX kernels: nothing here can fault
        assert first.text_fast_ok and first.encoder_ok and first.mtmd_ok
    again = cpu_kernel_verdict()
    assert again.cached and again.steps == first.steps
    data = json.loads((own_cache / "cpu-kernels.json").read_text())
    assert data["key"] == build_key()


def test_a_child_killed_by_a_signal_is_reported_not_propagated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(FAULT_ENV, "text:Q4_K_M")
    v = run_probe(amx=True)
    assert v.outcome("text:Q4_K_M") == "SIGILL"
    assert len(v.steps) == len(STEPS)  # a new child went on with the steps left
    assert not v.text_fast_ok
    assert "AMX faults on this machine (SIGILL with a Q4_K_M model)" in v.summary()
    assert "portable" in v.summary()


def test_a_fault_in_libmtmd_is_its_own_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAULT_ENV, f"{MTMD_STEP}:SIGSEGV")
    v = run_probe()
    assert v.outcome(MTMD_STEP) == "SIGSEGV"
    assert not v.mtmd_ok
    assert "libmtmd faults" in v.summary()
    assert all(v.outcome(s) != "SIGSEGV" for s in TEXT_STEPS)


def test_a_probe_that_cannot_run_means_portable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        cpu_probe, "_child_command", lambda *a: [sys.executable, "-c", "raise SystemExit(3)"]
    )
    v = run_probe()
    assert v.error == "exit code 3" and not v.text_fast_ok
    assert "not checked (exit code 3)" in v.summary()


def test_a_hanging_step_is_a_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    code = (
        "import json, time; print(json.dumps({'start': 'text:Q8_0'}), flush=True); time.sleep(30)"
    )
    monkeypatch.setattr(cpu_probe, "_child_command", lambda *a: [sys.executable, "-c", code])
    v = run_probe(timeout_s=2)
    assert v.outcome("text:Q8_0") == "timeout" and not v.text_fast_ok


def test_the_cache_is_invalidated_when_the_build_changes(own_cache: Path) -> None:
    stale = {**build_key(), "llama_cpp_python": "0.0.1"}
    cpu_probe._store(stale, FAULTED)
    assert cached_verdict(stale) is not None and cached_verdict() is None
    fresh = cpu_kernel_verdict()
    assert not fresh.cached
    assert json.loads((own_cache / "cpu-kernels.json").read_text())["key"] == build_key()
    (own_cache / "cpu-kernels.json").write_text("{not json")  # a corrupt cache: probe again
    assert cached_verdict() is None


def test_float_models_never_probe(own_cache: Path, tiny_gguf: tuple[Path, Path]) -> None:
    with AudioModel(*tiny_gguf, ModelOptions(n_ctx=256)) as model:
        assert model.extra_bufts and model.notices == ()
    assert not (own_cache / "cpu-kernels.json").exists()
    assert kernel_plan("auto", False, False).extra_bufts


def test_a_broken_verdict_loads_portably_and_says_so(own_cache: Path, quant_pairs: dict) -> None:
    _force(FAULTED)
    pair = quant_pairs["Q4_K_M"]
    sampling = SamplingOptions(max_tokens=4, stop_at_end_of_turn=False)
    with AudioModel(pair.model_path, pair.mmproj_path, ModelOptions(n_ctx=512)) as model:
        assert not model.extra_bufts
        assert not any(b in ("CPU_REPACK", "AMX") for b in model.weight_buffers)
        (notice,) = model.notices
        assert "SIGILL" in notice and "portable" in notice and "--cpu-kernels fast" in notice
        slow = model.generate("Hi", [tone(1.0)], sampling=sampling)
    assert slow.usage.completion_tokens == 4
    opts = ModelOptions(n_ctx=512, cpu_kernels="portable")  # forced: no notice
    with AudioModel(pair.model_path, pair.mmproj_path, opts) as model:
        assert not model.extra_bufts and model.notices == ()


def test_the_real_verdict_decides(here: KernelVerdict, quant_pairs: dict) -> None:
    """Fast kernels where the probe found them working, portable ones where not."""
    pair = quant_pairs["Q4_K_M"]
    with AudioModel(pair.model_path, pair.mmproj_path, ModelOptions(n_ctx=512)) as model:
        assert model.extra_bufts is here.text_fast_ok
        assert bool(model.notices) is not here.text_fast_ok
        assert "CPU_Mapped" in model.weight_buffers  # llama.cpp's load log was read
        model.generate("Hi", [tone(1.0)], sampling=SamplingOptions(max_tokens=2))
    opts = ModelOptions(n_ctx=512, cpu_kernels="portable")
    with AudioModel(pair.model_path, pair.mmproj_path, opts) as portable:
        assert not portable.extra_bufts
        assert not any(b in ("CPU_REPACK", "AMX") for b in portable.weight_buffers)


def test_a_faulting_libmtmd_is_refused_and_the_encoder_widened(
    here: KernelVerdict, own_cache: Path, quant_pairs: dict
) -> None:
    _force(like_here(here, {MTMD_STEP: "SIGSEGV", ENCODER_STEP: "SIGILL"}))
    pair = quant_pairs["Q8_0"]
    with pytest.raises(RuntimeBackendError, match="libmtmd.*faults.*faithful"):
        AudioModel(pair.model_path, pair.mmproj_path, ModelOptions(audio_path="mtmd"))
    with AudioModel(pair.model_path, pair.mmproj_path, ModelOptions(n_ctx=512)) as model:
        assert any("F32 copies" in n for n in model.notices)
        logits = model.prompt_logits("Hi", [tone(1.0)])
    _force(like_here(here))  # the encoder on its quantized kernels again
    with AudioModel(pair.model_path, pair.mmproj_path, ModelOptions(n_ctx=512)) as model:
        plain = model.prompt_logits("Hi", [tone(1.0)])
    # the same model, with F32 copies of the q8_0 weights: close, and not the same kernels
    cos = float((logits @ plain) / ((logits @ logits) ** 0.5 * (plain @ plain) ** 0.5))
    assert cos > 0.999 and abs(logits - plain).max() > 0


def test_bad_cpu_kernels_option() -> None:
    with pytest.raises(ValueError, match="cpu_kernels must be one of auto, fast, portable"):
        ModelOptions(cpu_kernels="amx")


def test_cli_run_prints_one_notice_line(
    here: KernelVerdict, own_cache: Path, quant_pairs: dict
) -> None:
    _force(FAULTED)
    pair = quant_pairs["Q8_0"]
    result = invoke(*run_args((pair.model_path, pair.mmproj_path), tone_file(own_cache)))
    assert result.exit_code == 0, result.stderr
    notes = [ln for ln in result.stderr.splitlines() if ln.startswith("note: ")]
    assert len(notes) == 1 and "SIGILL" in notes[0]
    assert result.stdout.strip()
    forced = "fast" if here.text_fast_ok else "portable"  # never crash this test run
    pair_args = (pair.model_path, pair.mmproj_path)
    result = invoke(*run_args(pair_args, tone_file(own_cache), extra=("--cpu-kernels", forced)))
    assert result.exit_code == 0 and "note:" not in result.stderr


def test_hardware_and_plan_report_the_verdict(own_cache: Path) -> None:
    _force(FAULTED)
    for cmd in (("hardware",), ("plan", "--ram", "16")):
        result = invoke(*cmd)
        assert result.exit_code == 0, result.stderr
        assert (
            "CPU quantized kernels: AMX faults on this machine (SIGILL with a Q4_K_M model) - "
            "using the portable kernels" in result.stdout
        )
    data = json.loads(invoke("hardware", "--json").stdout)
    assert data["cpu_fast_kernels"] is False and "SIGILL" in data["cpu_kernels"]


def tone_file(folder: Path) -> Path:
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tone.wav"
    sf.write(path, tone(1.0), 16000)
    return path
