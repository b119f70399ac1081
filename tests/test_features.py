"""Tests for the numpy log-mel features: rules, and parity with WhisperFeatureExtractor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from qaudio_local.audio import load_audio
from qaudio_local.audio.features import (
    Features,
    audio_tokens,
    conv_frames,
    log_mel,
    mel_filters,
    valid_frames,
)
from qaudio_local.config import N_FRAMES, N_MELS, N_SAMPLES, SAMPLE_RATE
from qaudio_local.errors import InvalidAudioError

CLIP_SECONDS = (0.5, 1.0, 5.0, 17.3, 29.9, 30.0)
PEAKS = {"normal": 0.5, "quiet": 0.01}
# The target is 1e-5 against the extractor. Its numpy implementation takes the same precision
# steps as ours: a few float32 ulps at most (0 measured). Its torch implementation (used when
# torch is installed) works in float32, and its own rounding noise reaches ~6e-5 in mel bins
# 60-80 dB below the window's maximum; within 40 dB of the maximum 1e-5 holds (~2e-6).
TOL = 1e-5
NUMPY_TOL = 5e-7  # ~4 float32 ulps at |x| < 2
TORCH_TOL_DEEP = 2e-4
NEAR_MAX = 1.0  # 40 dB: one unit of (log10 + 4) / 4 is 4 log10 units of power


def make_clip(seconds: float, signal: str, peak: float, seed: int = 0) -> np.ndarray:
    """Noise, or tones plus a chirp, scaled to ``peak``, float32 at 16 kHz."""
    n = round(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    if signal == "noise":
        x = np.random.default_rng(seed).standard_normal(n)
    else:
        x = np.sin(2 * np.pi * 440 * t) + 0.3 * np.sin(2 * np.pi * 3001.3 * t)
        x += 0.5 * np.sin(2 * np.pi * (100 + 200 * t) * t)  # chirp 100 Hz -> up
    return (peak * x / np.abs(x).max()).astype(np.float32)


# --- rules (numpy only) ------------------------------------------------------------------


def test_shape_dtype_and_counts() -> None:
    feats = log_mel(make_clip(1.0, "noise", 0.5))
    assert isinstance(feats, Features)
    assert feats.mel.shape == (N_MELS, N_FRAMES) and feats.mel.dtype == np.float32
    assert (feats.n_valid_frames, feats.n_conv_frames, feats.n_audio_tokens) == (100, 50, 25)


@pytest.mark.parametrize(
    ("n_samples", "frames"),
    [
        (1, 1),
        (160, 1),
        (161, 2),
        (320, 2),
        (321, 3),
        (16_000, 100),
        (479_999, 3000),
        (N_SAMPLES, 3000),
    ],
)
def test_valid_frames_is_ceil_of_samples_over_hop(n_samples: int, frames: int) -> None:
    assert valid_frames(n_samples) == frames
    assert log_mel(np.ones(n_samples, dtype=np.float32)).n_valid_frames == frames


@pytest.mark.parametrize(
    ("frames", "conv", "tokens"),
    [
        (1, 1, 0),
        (2, 1, 0),
        (3, 2, 1),
        (4, 2, 1),
        (5, 3, 1),
        (50, 25, 12),
        (100, 50, 25),
        (3000, 1500, 750),
    ],
)
def test_conv_and_token_formulas(frames: int, conv: int, tokens: int) -> None:
    assert conv_frames(frames) == conv
    assert audio_tokens(frames) == tokens


def test_float64_input_is_rounded_to_float32_first() -> None:
    x = np.random.default_rng(1).standard_normal(12_345) * 0.1
    np.testing.assert_array_equal(log_mel(x).mel, log_mel(x.astype(np.float32)).mel)


def test_silence_sits_on_the_log_floor() -> None:
    feats = log_mel(np.zeros(8000, dtype=np.float32))
    np.testing.assert_array_equal(feats.mel, np.full((N_MELS, N_FRAMES), -1.5, np.float32))


def test_clamp_to_max_minus_eight_or_the_power_floor() -> None:
    loud = log_mel(make_clip(2.0, "noise", 0.5)).mel
    assert loud.min() == pytest.approx(loud.max() - 2.0, abs=1e-6)  # 8 log10 units / 4
    assert (loud[:, -1] == loud.min()).all()  # the zero padding sits on the clamp
    # Peak 1e-3 (about -60 dBFS): max - 8 falls below log10(1e-10), so the floor binds.
    quiet = log_mel(make_clip(2.0, "noise", 1e-3)).mel
    assert quiet.max() - quiet.min() < 2.0
    assert quiet.min() == np.float32(-1.5) and (quiet[:, -1] == -1.5).all()


@pytest.mark.parametrize("bad", [np.zeros((2, 100)), np.zeros(0), np.zeros(N_SAMPLES + 1)])
def test_rejects_what_is_not_one_window(bad: np.ndarray) -> None:
    with pytest.raises(InvalidAudioError, match="split_windows"):
        log_mel(bad)


def test_mel_filters_are_cached_and_read_only() -> None:
    bank = mel_filters()
    assert bank.shape == (N_MELS, 201) and bank is mel_filters()
    assert not bank.flags.writeable and (bank >= 0).all() and (bank.max(axis=1) > 0).all()


# --- parity with transformers ------------------------------------------------------------


@pytest.fixture(scope="module")
def extractor():
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    return transformers.WhisperFeatureExtractor(
        feature_size=128, sampling_rate=16000, hop_length=160, chunk_length=30, n_fft=400
    )


def _extract(extractor, window: np.ndarray, torch_impl: bool, monkeypatch) -> tuple:
    """The extractor's (features, mask) for one window, with or without its torch code."""
    from transformers.models.whisper import feature_extraction_whisper as module

    with monkeypatch.context() as m:
        m.setattr(module, "is_torch_available", lambda: torch_impl)
        out = extractor(
            window,
            sampling_rate=16000,
            padding="max_length",
            truncation=True,
            return_attention_mask=True,
            return_tensors="np",
        )
    return out["input_features"][0], out["attention_mask"][0]


def _assert_matches(
    extractor, window: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> dict[str, float]:
    ours = log_mel(window)
    numpy_ref, mask = _extract(extractor, window, False, monkeypatch)
    torch_ref, torch_mask = _extract(extractor, window, True, monkeypatch)
    assert ours.n_valid_frames == int(mask.sum()) == int(torch_mask.sum())
    diff_np = np.abs(ours.mel - numpy_ref)
    diff_torch = np.abs(ours.mel - torch_ref)
    near_max = ours.mel >= ours.mel.max() - NEAR_MAX
    assert diff_np.max() <= NUMPY_TOL
    assert diff_torch[near_max].max() <= TOL
    assert diff_torch.max() <= TORCH_TOL_DEEP
    return {"numpy": float(diff_np.max()), "torch": float(diff_torch.max())}


@pytest.mark.parity
@pytest.mark.parametrize("peak", PEAKS.values(), ids=PEAKS.keys())
@pytest.mark.parametrize("signal", ["noise", "tones"])
@pytest.mark.parametrize("seconds", CLIP_SECONDS)
def test_matches_extractor(
    extractor, seconds: float, signal: str, peak: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    _assert_matches(extractor, make_clip(seconds, signal, peak), monkeypatch)


@pytest.mark.parity
@pytest.mark.parametrize("n_samples", [1, 159, 320, 321, 80_001, 479_999])
def test_mask_and_features_at_awkward_lengths(
    extractor, n_samples: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    _assert_matches(extractor, make_clip(n_samples / SAMPLE_RATE, "noise", 0.5), monkeypatch)


@pytest.mark.parity
@pytest.mark.parametrize("seconds", [45.0, 75.5])
def test_windows_of_longer_clips(
    extractor, seconds: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    from qaudio_local.audio.windows import split_windows

    clip = make_clip(seconds, "tones", 0.5)
    clip[N_SAMPLES:] *= 0.05  # a quieter second window: normalisation is per window
    for window in split_windows(clip):
        _assert_matches(extractor, window, monkeypatch)


@pytest.mark.parity
def test_stereo_and_mono_sources(
    extractor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    left = make_clip(3.0, "tones", 0.4)
    right = make_clip(3.0, "noise", 0.2)
    stereo = np.stack([left, right], axis=1)
    sf.write(tmp_path / "stereo32k.wav", np.repeat(stereo, 2, axis=0), 32_000, subtype="FLOAT")
    sf.write(tmp_path / "mono.wav", left, SAMPLE_RATE, subtype="PCM_16")
    sources = {
        "stereo array": load_audio(stereo, source_rate=SAMPLE_RATE),
        "stereo file 32 kHz": load_audio(tmp_path / "stereo32k.wav"),
        "mono file": load_audio(tmp_path / "mono.wav"),
    }
    np.testing.assert_allclose(sources["stereo array"], (left + right) / 2, atol=1e-7)
    for samples in sources.values():
        assert samples.ndim == 1
        _assert_matches(extractor, samples, monkeypatch)
