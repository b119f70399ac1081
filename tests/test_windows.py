"""Tests for 30 s windowing and audio token counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qaudio_local.audio.features import log_mel
from qaudio_local.audio.windows import (
    MIN_WINDOW_SAMPLES,
    WINDOW_SAMPLES,
    audio_token_count,
    split_windows,
    window_token_count,
)
from qaudio_local.config import SAMPLE_RATE

SECOND = SAMPLE_RATE


@pytest.mark.parametrize(
    ("n_samples", "tokens"),
    [
        (0, 0),
        (320, 0),  # 2 frames -> 1 conv position -> 0 tokens
        (321, 1),  # 3 frames -> 2 -> 1
        (SECOND // 2, 12),
        (SECOND, 25),
        (5 * SECOND, 125),
        (round(17.3 * SECOND), 432),
        (round(29.9 * SECOND), 747),
        (30 * SECOND, 750),
    ],
)
def test_window_token_count(n_samples: int, tokens: int) -> None:
    assert window_token_count(n_samples) == tokens
    if n_samples:
        assert log_mel(np.zeros(n_samples, np.float32)).n_audio_tokens == tokens


def test_window_token_count_rejects_more_than_a_window() -> None:
    with pytest.raises(ValueError, match="480000"):
        window_token_count(WINDOW_SAMPLES + 1)
    with pytest.raises(ValueError):
        audio_token_count(-1)


@pytest.mark.parametrize("seconds", range(1, 31))
def test_25_tokens_per_second_within_a_window(seconds: int) -> None:
    assert audio_token_count(seconds * SECOND) == 25 * seconds


@pytest.mark.parametrize(
    ("n_samples", "tokens"),
    [
        (30 * SECOND, 750),  # one window, not 750 + an empty one
        (30 * SECOND + MIN_WINDOW_SAMPLES - 1, 750),  # tail too short for a token: dropped
        (30 * SECOND + MIN_WINDOW_SAMPLES, 751),
        (45 * SECOND, 750 + 375),
        (60 * SECOND, 1500),
        (180 * SECOND, 4500),
    ],
)
def test_audio_token_count_sums_the_windows(n_samples: int, tokens: int) -> None:
    assert audio_token_count(n_samples) == tokens
    windows = split_windows(np.zeros(n_samples, np.float32))
    assert sum(window_token_count(w.size) for w in windows) == tokens


def test_exactly_30_s_is_one_window() -> None:
    samples = np.arange(30 * SECOND, dtype=np.float32)
    (window,) = split_windows(samples)
    assert window.size == WINDOW_SAMPLES and np.shares_memory(window, samples)


def test_45_s_and_3_min() -> None:
    samples = np.arange(45 * SECOND, dtype=np.float32)
    first, second = split_windows(samples)
    assert (first.size, second.size) == (WINDOW_SAMPLES, 15 * SECOND)
    np.testing.assert_array_equal(np.concatenate([first, second]), samples)
    windows = split_windows(np.zeros(180 * SECOND, np.float32))
    assert [w.size for w in windows] == [WINDOW_SAMPLES] * 6


@pytest.mark.parametrize("tail", [1, 100, MIN_WINDOW_SAMPLES - 1])
def test_tiny_tail_is_dropped_not_padded(tail: int) -> None:
    windows = split_windows(np.zeros(60 * SECOND + tail, np.float32))
    assert [w.size for w in windows] == [WINDOW_SAMPLES, WINDOW_SAMPLES]


def test_too_short_clip_and_empty_give_no_windows() -> None:
    assert split_windows(np.zeros(MIN_WINDOW_SAMPLES - 1, np.float32)) == []
    assert split_windows(np.zeros(0, np.float32)) == []
    assert len(split_windows(np.zeros(MIN_WINDOW_SAMPLES, np.float32))) == 1


def test_split_rejects_multichannel() -> None:
    with pytest.raises(ValueError, match="downmix"):
        split_windows(np.zeros((2, 1000), np.float32))


def test_counts_agree_for_many_lengths() -> None:
    rng = np.random.default_rng(0)
    for n in rng.integers(0, 200 * SECOND, size=200):
        windows = split_windows(np.empty(int(n), np.float32))
        assert sum(window_token_count(w.size) for w in windows) == audio_token_count(int(n))
        assert all(window_token_count(w.size) > 0 for w in windows)


# --- against the reference ---------------------------------------------------------------


@pytest.mark.parity
@pytest.mark.parametrize(
    "n_samples",
    [SECOND // 2, SECOND, 5 * SECOND, round(17.3 * SECOND), round(29.9 * SECOND), 30 * SECOND],
)
def test_processor_expands_audio_to_this_many_tokens(tiny_checkpoint: Path, n_samples: int) -> None:
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    processor = transformers.AutoProcessor.from_pretrained(str(tiny_checkpoint))
    clip = 0.1 * np.random.default_rng(0).standard_normal(n_samples).astype(np.float32)
    text = "Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\nhi"
    ids = processor(text=text, audio=[clip], sampling_rate=SAMPLE_RATE)["input_ids"][0]
    audio_id = processor.tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    assert list(ids).count(audio_id) == audio_token_count(n_samples)


@pytest.mark.parity
@pytest.mark.parametrize("n_samples", [45 * SECOND, 60 * SECOND + 100, 60 * SECOND + 321])
def test_windows_match_the_reference_windowing(n_samples: int) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from qaudio_dev.reference import reference_features

    samples = np.zeros(n_samples, np.float32)
    lengths = [int(mask.sum()) for _, mask in reference_features(samples)]
    ref_tokens = [(((n - 1) // 2 + 1) - 2) // 2 + 1 for n in lengths]  # Qwen2AudioProcessor's
    ours = split_windows(samples)
    assert [t for t in ref_tokens if t] == [window_token_count(w.size) for w in ours]
    assert sum(ref_tokens) == audio_token_count(n_samples)
