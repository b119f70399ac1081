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

import numpy as np
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


# --- the base model's prompt (Qwen2-Audio-7B: no chat template) -------------------------------


@pytest.fixture(scope="module")
def base_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A base-shaped tiny checkpoint (no chat template) and its f32 GGUF pair."""
    from qaudio_local.convert import convert_checkpoint
    from qaudio_local.convert.tiny import make_tiny_checkpoint

    root = tmp_path_factory.mktemp("base")
    ckpt = make_tiny_checkpoint(root / "tiny-qwen2-audio-base", base=True)
    res = convert_checkpoint(ckpt, root / "gguf", outtype="f32")
    return ckpt, res.model_path, res.mmproj_path


@pytest.mark.parametrize("seconds", [1.0, 12.5])
def test_the_base_prompt_matches_the_official_processor(
    base_pair: tuple[Path, Path, Path], seconds: float
) -> None:
    """The base model's ASR prompt through Qwen2AudioProcessor and the official forward and
    generate, against the engine with the format it reads from the GGUF."""
    import torch
    import transformers

    from qaudio_dev.reference import AUDIO_MARKER, torch_threads
    from qaudio_local.config import BASE_DEFAULT_PROMPT, SAMPLE_RATE
    from qaudio_local.engine.options import SamplingOptions

    ckpt, text_gguf, mmproj = base_pair
    ref = ReferenceModel(ckpt)
    processor = transformers.AutoProcessor.from_pretrained(str(ckpt))
    clip = make_clip(seconds, 0.5, False)
    task = f"{BASE_DEFAULT_PROMPT}<|en|>"
    inputs = processor(
        text=AUDIO_MARKER + task, audio=[clip], sampling_rate=SAMPLE_RATE, return_tensors="pt"
    )
    n_audio = int((inputs["input_ids"] == ref.audio_token_id).sum())
    with torch.no_grad(), torch_threads():
        official = ref.model(**inputs).logits[0, -1].numpy()
        generated = ref.model.generate(
            **inputs, max_new_tokens=N_GREEDY, min_new_tokens=N_GREEDY, do_sample=False
        )[0, inputs["input_ids"].shape[1] :].tolist()
    opts = ModelOptions(n_ctx=2048, n_threads=2, kv_type="f32")
    with AudioModel(text_gguf, mmproj, opts) as model:
        assert model.prompt_format == "base"
        assert model.prompt_tokens(task, [clip]) == inputs["input_ids"].shape[1]
        logits = model.prompt_logits(task, [clip])
        sampling = SamplingOptions(max_tokens=N_GREEDY, stop_at_end_of_turn=False)
        res = model.generate(task, [clip], sampling=sampling)
    assert res.usage.audio_tokens == n_audio == int(25 * seconds)
    assert np.abs(logits - official).max() <= 2e-3
    assert list(res.tokens) == generated
