"""The faithful audio path against the transformers reference (issue 4's acceptance).

With f32 GGUFs and an f32 KV cache, the last-position logits must be within 2e-3 of the
reference, top-1 must agree, all 20 greedy tokens must match, and the audio token count
must equal the reference's, at every clip length and amplitude. The one deliberate
difference is on the reference side: its conv kernels are rounded to F16, as the GGUF
stores them (see qaudio_dev/reference.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from qaudio_dev.fidelity import (  # noqa: E402
    CASES,
    N_GREEDY,
    compare,
    make_clip,
    reference_run,
)
from qaudio_dev.reference import ReferenceModel  # noqa: E402
from qaudio_local.engine.model import AudioModel, ModelOptions  # noqa: E402

pytestmark = pytest.mark.parity


@pytest.fixture(scope="module")
def reference(tiny_checkpoint: Path) -> ReferenceModel:
    return ReferenceModel(tiny_checkpoint)


@pytest.fixture(scope="module")
def exact_model(tiny_gguf: tuple[Path, Path]) -> Iterator[AudioModel]:
    opts = ModelOptions(n_ctx=8192, n_threads=2, kv_type="f32")
    with AudioModel(*tiny_gguf, opts) as model:
        yield model


@pytest.mark.parametrize(
    ("seconds", "peak", "stereo"),
    CASES,
    ids=[f"{s}s-peak{p}{'-stereo' if st else ''}" for s, p, st in CASES],
)
def test_faithful_path_matches_reference(
    reference: ReferenceModel, exact_model: AudioModel, seconds: float, peak: float, stereo: bool
) -> None:
    clip = make_clip(seconds, peak, stereo)
    got = compare(exact_model, reference_run(reference, clip), clip)
    assert got.audio_tokens == got.ref_tokens
    n_windows = -(-seconds // 30)
    assert abs(got.ref_tokens - 25 * seconds) <= n_windows  # 25/s, rounded down per window
    assert got.max_abs <= 2e-3, got
    assert got.top1, got
    assert got.greedy_match == N_GREEDY, got


def test_mtmd_path_is_measurably_different(
    reference: ReferenceModel, tiny_gguf: tuple[Path, Path]
) -> None:
    """The comparison can fail: llama.cpp's own path misses the reference on a 1 s clip."""
    clip = make_clip(1.0)
    opts = ModelOptions(n_ctx=4096, n_threads=2, kv_type="f32", audio_path="mtmd")
    with AudioModel(*tiny_gguf, opts) as model:
        got = compare(model, reference_run(reference, clip), clip)
    assert got.audio_tokens == 750 and got.ref_tokens == 25
    assert got.max_abs > 0.1
