"""The ggml audio encoder on its own: shapes, both attention forms, and the reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qaudio_local.audio.features import audio_tokens, log_mel
from qaudio_local.engine.encoder import AudioEncoder
from tests.support.audio import tone


@pytest.fixture(scope="module")
def encoder(tiny_gguf: tuple[Path, Path]):
    with AudioEncoder(tiny_gguf[1], n_threads=2) as enc:
        yield enc


@pytest.mark.parametrize("seconds", [0.02, 0.5, 1.0, 12.3, 30.0])
def test_token_count_and_width(encoder: AudioEncoder, seconds: float) -> None:
    f = log_mel(tone(seconds))
    out = encoder.encode(f.mel, f.n_valid_frames)
    assert out.shape == (audio_tokens(f.n_valid_frames), encoder.dims.out_dim)
    assert out.shape[0] == f.n_audio_tokens and np.isfinite(out).all()


def test_flash_and_plain_attention_agree(encoder: AudioEncoder) -> None:
    f = log_mel(tone(7.0, 523))
    fused = encoder.encode(f.mel, f.n_valid_frames)
    encoder._flash = False
    try:
        plain = encoder.encode(f.mel, f.n_valid_frames)
    finally:
        encoder._flash = True
    assert 0 < np.abs(fused - plain).max() < 1e-5  # two algorithms, the same numbers


def test_windows_of_any_order_share_the_kept_buffers(tiny_gguf: tuple[Path, Path]) -> None:
    """The compute buffers are kept from window to window: a short window after a long one,
    a longer one after that, and the same again give what a fresh encoder gives."""
    feats = [log_mel(tone(s, hz)) for s, hz in ((3.0, 440), (30.0, 330), (1.0, 550), (12.0, 660))]
    fresh = []
    for f in feats:
        with AudioEncoder(tiny_gguf[1], n_threads=2) as enc:
            fresh.append(enc.encode(f.mel, f.n_valid_frames))
    with AudioEncoder(tiny_gguf[1], n_threads=2) as enc:
        for _ in range(2):
            for f, want in zip(feats, fresh, strict=True):
                assert np.array_equal(enc.encode(f.mel, f.n_valid_frames), want)
        assert enc._galloc  # kept, not made per window


def test_rejects_bad_shapes(encoder: AudioEncoder) -> None:
    with pytest.raises(ValueError, match="mel"):
        encoder.encode(np.zeros((80, 3000), np.float32), 100)
    with pytest.raises(ValueError, match="n_valid_frames"):
        encoder.encode(np.zeros((128, 3000), np.float32), 0)


@pytest.mark.parity
@pytest.mark.parametrize("seconds", [0.5, 9.0, 29.9])
def test_matches_the_reference_encoder(
    encoder: AudioEncoder, tiny_checkpoint: Path, seconds: float
) -> None:
    pytest.importorskip("transformers")
    from qaudio_dev.reference import ReferenceModel

    clip = tone(seconds, 311) + 0.02 * np.random.default_rng(3).standard_normal(
        int(seconds * 16000)
    ).astype(np.float32)
    expected = ReferenceModel(tiny_checkpoint).audio_embeddings(clip).numpy()
    f = log_mel(clip)
    got = encoder.encode(f.mel, f.n_valid_frames)
    assert got.shape == expected.shape
    # f32 rounding through 3 layers of random weights: ~1e-4 on values of magnitude ~2
    assert np.abs(got - expected).max() < 5e-4
