"""The encoder's Q8_0 weights on the CPU's matrix units (llama.cpp's AMX buffer type).

Only where the CPU-kernel verdict says the AMX matmul runs (the text models' probe steps
exercise the same kernels), or ``--cpu-kernels fast`` forces it. Each machine checks what
it has: with AMX kernels that run, the weights go there and the embeddings stay within a
measured tolerance of the plain kernels; without, nothing moves and they are identical.
The fault path runs everywhere through the seam (a real signal in a real child).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qaudio_local.engine import cpu_probe
from qaudio_local.engine.bindings.ggml_api import extra_buffer_types, ggml
from qaudio_local.engine.cpu_probe import STEPS, KernelVerdict, kernel_plan
from qaudio_local.engine.encoder import AudioEncoder, _runs_on_amx


@pytest.fixture(scope="module")
def q8_projector(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from qaudio_local.convert import convert_checkpoint

    out = tmp_path_factory.mktemp("q8proj")
    return convert_checkpoint(
        tiny_checkpoint, out, outtype="f16", mmproj_outtype="q8_0"
    ).mmproj_path


def test_which_weights_the_matrix_units_take() -> None:
    q8, f16 = 8, 1
    assert _runs_on_amx("a.blk.3.attn_q.weight", q8, [1280, 1280])
    assert _runs_on_amx("mm.a.fc.weight", q8, [1280, 3584])
    assert not _runs_on_amx("a.blk.3.attn_q.weight", f16, [1280, 1280])  # not Q8_0
    assert not _runs_on_amx("a.blk.3.attn_q.bias", q8, [1280])  # not a matrix
    assert not _runs_on_amx("a.blk.3.attn_q.weight", q8, [1280, 1288])  # rows do not tile
    assert not _runs_on_amx("a.conv1d.1.weight", q8, [3, 128])  # a convolution


def _verdict(text_ok: bool, amx: bool = True) -> KernelVerdict:
    bad = "ok" if text_ok else "SIGILL"
    return KernelVerdict(
        steps=tuple((s, bad if s.startswith("text:") else "ok") for s in STEPS), amx=amx
    )


@pytest.mark.parametrize(
    ("text_ok", "choice", "projector_quantized", "expected"),
    [
        (True, "auto", True, True),
        (False, "auto", True, False),  # the AMX matmul faults here: never
        (True, "auto", False, False),  # nothing to put there
        (True, "portable", True, False),
        (False, "fast", True, True),  # the user's word
    ],
)
def test_the_verdict_decides_where_the_encoder_weights_go(
    text_ok: bool,
    choice: str,
    projector_quantized: bool,
    expected: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QAUDIO_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("QAUDIO_CPU_KERNELS", raising=False)
    cpu_probe._store(cpu_probe.build_key(), _verdict(text_ok))
    plan = kernel_plan(choice, text_quantized=True, projector_quantized=projector_quantized)
    assert plan.encoder_extra_bufts is expected


def test_a_build_without_amx_kernels_keeps_the_encoder_weights_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build compiled without AMX kernels (its system info says none) on an AMX CPU:
    every probe step passes, yet there is nothing to move the weights to."""
    monkeypatch.setenv("QAUDIO_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("QAUDIO_CPU_KERNELS", raising=False)
    cpu_probe._store(cpu_probe.build_key(), _verdict(True, amx=False))
    plan = kernel_plan("auto", text_quantized=True, projector_quantized=True)
    assert plan.extra_bufts and not plan.encoder_extra_bufts


def _embeddings(path: Path, extra: bool) -> tuple[np.ndarray, int]:
    with AudioEncoder(path, use_gpu=False, n_threads=2, extra_bufts=extra) as enc:
        mel = np.random.default_rng(3).standard_normal((enc.dims.n_mels, 3000)).astype(np.float32)
        return enc.encode(0.5 * mel, 1000), enc.amx_weights


def test_this_machine_puts_the_weights_where_its_verdict_allows(q8_projector: Path) -> None:
    plan = kernel_plan("auto", text_quantized=True, projector_quantized=True)
    plain, none = _embeddings(q8_projector, extra=False)
    assert none == 0
    fast, moved = _embeddings(q8_projector, extra=plan.encoder_extra_bufts)
    g = ggml()
    has_amx = "AMX" in extra_buffer_types(g, g.ggml_backend_init_by_type(0, None))
    if plan.encoder_extra_bufts and has_amx:
        assert moved > 0
        cos = float((plain * fast).sum() / np.linalg.norm(plain) / np.linalg.norm(fast))
        # measured 0.99999 (tiny) and 0.99996 (real size, 30 s); activations are rounded to
        # 8 bits in both, in a different order
        assert cos > 0.9995
        assert float(np.abs(plain - fast).max()) < 0.05 * float(np.abs(plain).max())
    else:
        assert moved == 0
        assert np.array_equal(plain, fast)


CHILD = """
import sys
from qaudio_local.engine.encoder import AudioEncoder
with AudioEncoder(sys.argv[1], use_gpu=False, n_threads=2, extra_bufts=sys.argv[2] == "1"):
    print("loaded")
"""


@pytest.mark.parametrize(("extra", "rc"), [("1", -11), ("0", 0)])
def test_the_seam_faults_where_the_amx_weights_would_load(
    q8_projector: Path, extra: str, rc: int
) -> None:
    env = {**os.environ, cpu_probe.SEAM_ENV: "SIGSEGV", "PYTHONFAULTHANDLER": ""}
    run = subprocess.run(
        [sys.executable, "-c", CHILD, str(q8_projector), extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == rc, run.stderr[-500:]
