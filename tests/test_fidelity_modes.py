"""Each faster encoder mode against the transformers reference, with its measured tolerance.

The f32 faithful path has its own strict test (tests/test_parity.py). Here the text model
stays f32 (and its KV cache too) so that only the projector's storage, and the kernels that
run it, differ. Fifteen clips (five lengths, three signals each), last-position logits and
a 20-token greedy continuation, as the parity test measures them. Measured on the tiny
model (Intel Xeon VM, GCC's and a clang build alike):

========================  =========  ==========  =====  ===================
mode                      max abs    min cosine  top-1  greedy tokens equal
========================  =========  ==========  =====  ===================
f16 projector             0.0024     0.9999996   15/15  300/300
q8_0, plain kernels       0.071      0.99978     15/15  291/300
q8_0, matrix units (AMX)  0.071      0.99978     15/15  291/300
========================  =========  ==========  =====  ===================

The bounds below leave about twice that room. Random tiny weights leave some logits nearly
tied, so a q8_0 continuation can part from the reference after a few tokens (4 and 10 of
20 on two clips); the bound is on the total, and every first token must agree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from qaudio_dev.fidelity import (  # noqa: E402
    N_GREEDY,
    Comparison,
    compare,
    make_clip,
    reference_run,
)
from qaudio_dev.reference import ReferenceModel  # noqa: E402
from qaudio_local.engine.cpu_probe import kernel_plan  # noqa: E402
from qaudio_local.engine.model import AudioModel, ModelOptions  # noqa: E402

pytestmark = pytest.mark.parity

CLIPS = [(s, seed) for s in (1.0, 5.0, 17.3, 30.0, 45.0) for seed in (0, 1, 2)]
# mode: (projector storage, --cpu-kernels, max abs, min cosine, greedy tokens equal of 300)
MODES = {
    "f16": ("f16", "auto", 5e-3, 0.99999, 300),
    "q8_0-plain": ("q8_0", "portable", 0.15, 0.9995, 270),
    "q8_0-as-planned": ("q8_0", "auto", 0.15, 0.9995, 270),
}


@pytest.fixture(scope="module")
def expected(tiny_checkpoint: Path) -> dict[tuple[float, int], tuple]:
    ref = ReferenceModel(tiny_checkpoint)
    return {c: reference_run(ref, make_clip(c[0], seed=c[1])) for c in CLIPS}


@pytest.fixture(scope="module")
def projectors(
    tiny_checkpoint: Path, tiny_gguf: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Path]]:
    from qaudio_local.convert import convert_checkpoint

    out = {"f32": tiny_gguf[1]}
    for mm in ("f16", "q8_0"):
        root = tmp_path_factory.mktemp(f"proj-{mm}")
        out[mm] = convert_checkpoint(
            tiny_checkpoint, root, outtype="f32", mmproj_outtype=mm
        ).mmproj_path
    yield out


@pytest.fixture(scope="module")
def measure(
    tiny_gguf: tuple[Path, Path], projectors: dict[str, Path], expected: dict
) -> Callable[[str, str], tuple[list[Comparison], int]]:
    """(comparisons on every clip, weights on the matrix units) for a projector storage and
    a --cpu-kernels choice, each measured once per module."""
    done: dict[tuple[str, str], tuple[list[Comparison], int]] = {}

    def run(storage: str, kernels: str) -> tuple[list[Comparison], int]:
        if (storage, kernels) not in done:
            opts = ModelOptions(n_ctx=8192, n_threads=2, kv_type="f32", cpu_kernels=kernels)
            with AudioModel(tiny_gguf[0], projectors[storage], opts) as model:
                rows = [compare(model, expected[c], make_clip(c[0], seed=c[1])) for c in CLIPS]
                done[storage, kernels] = rows, model._encoder.amx_weights
        return done[storage, kernels]

    return run


@pytest.mark.parametrize("mode", list(MODES))
def test_each_faster_mode_stays_within_its_measured_tolerance(
    mode: str, measure: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("QAUDIO_CPU_KERNELS", raising=False)
    storage, kernels, max_abs, min_cos, greedy = MODES[mode]
    rows, on_amx = measure(storage, kernels)
    planned = kernel_plan(kernels, text_quantized=False, projector_quantized=storage == "q8_0")
    # the mode is what the plan says: the matrix units only where the verdict lets them run
    assert (on_amx > 0) == planned.encoder_extra_bufts
    assert len(rows) * N_GREEDY == 300
    assert all(r.audio_tokens == r.ref_tokens for r in rows)
    assert max(r.max_abs for r in rows) <= max_abs, rows
    assert min(r.cosine for r in rows) >= min_cos, rows
    assert all(r.top1 for r in rows), rows
    assert sum(r.greedy_match for r in rows) >= greedy, [r.greedy_match for r in rows]


def test_the_tolerances_tell_the_modes_apart(measure: Callable) -> None:
    """The comparison can fail: each step down in storage is measurably further from the
    reference, and q8_0's distance would break f16's bound."""
    worst = [max(r.max_abs for r in measure(s, "portable")[0]) for s in ("f32", "f16", "q8_0")]
    assert worst[0] <= 2e-3  # tests/test_parity.py's bound for the f32 path
    assert worst[0] < worst[1] < worst[2]
    assert worst[2] > MODES["f16"][2]
