"""The CPU-kernel probe: quantized kernels that fault are found in a child and avoided.

The machines this runs on may or may not have the fault (Intel VMs advertising AMX do);
faults are injected into the real child process (it kills itself with a real signal at
the named step), and a "broken" verdict is forced through the real cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qaudio_local.engine import cpu_probe
from qaudio_local.engine.cpu_probe import (
    ENCODER_STEP,
    FAULT_ENV,
    MTMD_STEP,
    SEAM_ENV,
    STEPS,
    TEXT_STEPS,
    KernelVerdict,
    build_key,
    cache_file,
    cached_verdict,
    cpu_kernel_verdict,
    cpu_name,
    kernel_plan,
    run_probe,
)
from qaudio_local.engine.model import AudioModel
from qaudio_local.engine.options import ModelOptions, SamplingOptions
from qaudio_local.errors import CpuKernelError, RuntimeBackendError
from tests.support.audio import tone
from tests.support.cli import invoke, run_args

FAULTED = KernelVerdict(
    steps=tuple((s, "SIGILL" if s == "text:Q4_K_M" else "ok") for s in STEPS),
    amx=True,
    cpu="Example Xeon",
)
FAULTED_LINE = (
    "CPU quantized kernels: llama.cpp's AMX kernels fault on this CPU (Example Xeon; SIGILL "
    "with a Q4_K_M model) - using the portable kernels (--cpu-kernels portable, chosen "
    "automatically)"
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
    data = json.loads(cache_file().read_text())
    assert cache_file().parent == own_cache and data["key"] == build_key()


def test_a_child_killed_by_a_signal_is_reported_not_propagated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(FAULT_ENV, "text:Q4_K_M")
    v = run_probe(amx=True)
    assert v.outcome("text:Q4_K_M") == "SIGILL"
    assert len(v.steps) == len(STEPS)  # a new child went on with the steps left
    assert not v.text_fast_ok
    assert (
        f"llama.cpp's AMX kernels fault on this CPU ({cpu_name()}; SIGILL with a Q4_K_M model)"
        in v.summary()
    )
    assert "--cpu-kernels portable" in v.summary()


def test_a_fault_in_libmtmd_is_its_own_finding(
    here: KernelVerdict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FAULT_ENV, f"{MTMD_STEP}:SIGABRT")
    v = run_probe()
    assert v.outcome(MTMD_STEP) == "SIGABRT"
    assert not v.mtmd_ok
    assert "libmtmd faults" in v.summary()
    assert all(v.outcome(s) == here.outcome(s) for s in TEXT_STEPS)  # this machine's own


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


@pytest.mark.slow
def test_the_cache_is_invalidated_when_the_build_changes(own_cache: Path) -> None:
    stale = {**build_key(), "llama_cpp_python": "0.0.1"}
    cpu_probe._store(stale, FAULTED)
    assert cached_verdict(stale) is not None and cached_verdict() is None
    fresh = cpu_kernel_verdict()
    assert not fresh.cached
    assert json.loads(cache_file().read_text())["key"] == build_key()
    cache_file().write_text("{not json")  # a corrupt cache: probe again
    assert cached_verdict() is None


def test_float_models_never_probe(own_cache: Path, tiny_gguf: tuple[Path, Path]) -> None:
    with AudioModel(*tiny_gguf, ModelOptions(n_ctx=256)) as model:
        assert model.extra_bufts and model.notices == ()
    assert not list(own_cache.glob("cpu-kernels*.json"))
    assert kernel_plan("auto", False, False).extra_bufts


def test_a_broken_verdict_loads_portably_and_says_so(own_cache: Path, quant_pairs: dict) -> None:
    _force(FAULTED)
    pair = quant_pairs["Q4_K_M"]
    sampling = SamplingOptions(max_tokens=4, stop_at_end_of_turn=False)
    with AudioModel(pair.model_path, pair.mmproj_path, ModelOptions(n_ctx=512)) as model:
        assert not model.extra_bufts
        assert not any(b in ("CPU_REPACK", "AMX") for b in model.weight_buffers)
        (notice,) = model.notices
        assert "AMX kernels fault on this CPU" in notice and "portable kernels" in notice
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


def test_cli_run_prints_no_kernel_note(
    here: KernelVerdict, own_cache: Path, quant_pairs: dict
) -> None:
    """The verdict is said once where it matters (hardware, plan, selftest), not per run."""
    _force(FAULTED)
    pair = quant_pairs["Q8_0"]
    result = invoke(*run_args((pair.model_path, pair.mmproj_path), tone_file(own_cache)))
    assert result.exit_code == 0, result.stderr
    assert "note:" not in result.stderr and "kernels" not in result.stderr
    assert result.stdout.strip()
    forced = "fast" if here.text_fast_ok else "portable"  # never crash this test run
    pair_args = (pair.model_path, pair.mmproj_path)
    result = invoke(*run_args(pair_args, tone_file(own_cache), extra=("--cpu-kernels", forced)))
    assert result.exit_code == 0 and "note:" not in result.stderr


def test_hardware_and_plan_report_the_verdict_in_one_short_line(own_cache: Path) -> None:
    _force(FAULTED)
    for cmd in (("hardware",), ("plan", "--ram", "16")):
        result = invoke(*cmd)
        assert result.exit_code == 0, result.stderr
        out = result.stdout.splitlines()
        # one line gives the verdict, and no other repeats it (the plan's reason for its
        # projector may mention the kernels, but not the fault)
        lines = [ln for ln in out if ln.startswith("CPU quantized kernels")]
        assert lines == [FAULTED_LINE], lines
        assert [ln for ln in out if "fault" in ln or "SIGILL" in ln] == [FAULTED_LINE], out
    assert len(FAULTED_LINE) < 200
    data = json.loads(invoke("hardware", "--json").stdout)
    assert data["cpu_fast_kernels"] is False and "SIGILL" in data["cpu_kernels"]


def tone_file(folder: Path) -> Path:
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tone.wav"
    sf.write(path, tone(1.0), 16000)
    return path


# --- the seam: llama.cpp's AMX fault, on any machine ---------------------------------------
# QAUDIO_TEST_FAST_KERNEL_FAULT makes a process that loads a quantized text model with the
# fast kernels kill itself with a real signal, as those kernels do on Intel VMs with AMX.
# Each test below runs the real children (probe, trial load, selftest) under it.

SEAM = "SIGSEGV"


def _qaudio() -> list[str]:
    return [str(Path(sys.executable).with_name("qaudio"))]


@pytest.mark.parametrize(
    ("quantized", "extra_bufts", "rc"), [(True, True, -11), (True, False, 0), (False, True, 0)]
)
def test_the_seam_kills_a_real_child_only_where_the_fast_kernels_would_run(
    quantized: bool, extra_bufts: bool, rc: int
) -> None:
    code = (
        "from qaudio_local.engine.cpu_probe import fast_kernel_seam; "
        f"fast_kernel_seam({quantized}, {extra_bufts}); print('alive')"
    )
    env = {**os.environ, SEAM_ENV: SEAM}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=60)
    assert proc.returncode == rc
    assert (b"alive" in proc.stdout) is (rc == 0)


@pytest.mark.slow
def test_the_verdict_under_the_fault_is_right_for_every_path(
    own_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every text level faults; the mtmd and encoder steps, run with the kernels they will
    really use, do not: libmtmd is not blamed for the text model's fault."""
    monkeypatch.setenv(SEAM_ENV, SEAM)
    v = cpu_kernel_verdict()
    assert v.error is None and not v.cached
    assert [v.outcome(s) for s in TEXT_STEPS] == [SEAM] * len(TEXT_STEPS)
    assert v.outcome(MTMD_STEP) == "ok" and v.outcome(ENCODER_STEP) == "ok"
    assert not v.text_fast_ok and v.mtmd_ok and v.encoder_ok
    line = v.summary()
    assert f"on this CPU ({cpu_name()}; SIGSEGV with a Q4_K_M model)" in line
    assert "--cpu-kernels portable" in line and "libmtmd" not in line
    assert "damaged" not in line and len(line) < 250
    plan = kernel_plan("auto", True, True)
    assert not plan.extra_bufts and plan.mtmd_fault is None and not plan.widen_encoder


def test_each_environment_keeps_its_own_verdict(own_cache: Path) -> None:
    """Two virtual environments used in turn keep one cached verdict each."""
    here_key = build_key()
    other_key = {**here_key, "library_path": "/elsewhere/.venv/lib/llama_cpp/lib"}
    ok = KernelVerdict(steps=tuple((s, "ok") for s in STEPS))
    cpu_probe._store(here_key, FAULTED)
    cpu_probe._store(other_key, ok)
    assert cache_file(here_key) != cache_file(other_key)
    assert cached_verdict(here_key).steps == FAULTED.steps  # type: ignore[union-attr]
    assert cached_verdict(other_key).steps == ok.steps  # type: ignore[union-attr]
    seam_key = {**here_key, "seam": SEAM}  # a simulated fault never reads a real verdict
    assert cache_file(seam_key) != cache_file(here_key) and cached_verdict(seam_key) is None


@pytest.mark.slow
def test_a_kernel_fault_in_the_trial_load_names_the_cpu_not_the_file(
    own_cache: Path, quant_pairs: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SEAM_ENV, SEAM)
    pair = quant_pairs["Q4_K_M"]
    forced = ModelOptions(n_ctx=512, cpu_kernels="fast")
    with pytest.raises(CpuKernelError) as err:
        AudioModel(pair.model_path, pair.mmproj_path, forced)
    msg = str(err.value)
    assert cpu_name() in msg and "SIGSEGV" in msg and "--cpu-kernels portable" in msg
    assert "damaged" not in msg and "download it again" not in msg and "\n" not in msg
    assert err.value.path == str(pair.model_path) and err.value.how == "SIGSEGV"
    sampling = SamplingOptions(max_tokens=3, stop_at_end_of_turn=False)
    with AudioModel(pair.model_path, pair.mmproj_path, ModelOptions(n_ctx=512)) as model:
        assert not model.extra_bufts  # auto: the verdict routes around the fault
        assert model.generate("Hi", [tone(1.0)], sampling=sampling).usage.completion_tokens == 3
    result = invoke(*run_args((pair.model_path, pair.mmproj_path), tone_file(own_cache)))
    assert result.exit_code == 0 and result.stdout.strip(), result.stderr
    forced_run = run_args(
        (pair.model_path, pair.mmproj_path), tone_file(own_cache), extra=("--cpu-kernels", "fast")
    )
    result = invoke(*forced_run)
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: llama.cpp's fast CPU kernels") and cpu_name() in line


@pytest.mark.slow
def test_selftest_passes_where_the_fast_kernels_fault(tmp_path: Path) -> None:
    """README command 1 on a machine like the Intel VMs with AMX: `OK`, exit 0."""
    env = {
        **os.environ,
        SEAM_ENV: SEAM,
        "QAUDIO_CACHE_DIR": str(tmp_path / "cache"),
        "QAUDIO_HOME": str(tmp_path / "home"),
        # this checkout's package first
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]
        ),
    }
    proc = subprocess.run(
        [*_qaudio(), "selftest"], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1] == "OK"
    (kernels,) = [ln for ln in lines if ln.startswith("CPU quantized kernels: ")]
    assert "fault on this CPU" in kernels and "SIGSEGV" in kernels and "libmtmd" not in kernels
    for level in ("Q4_K_M", "Q8_0"):
        for path in ("faithful", "mtmd"):
            assert f"quantized {level} + q8_0 projector, {path} path: ok" in proc.stdout
