"""Split long audio into the encoder's 30 s windows, and count the audio tokens they make.

The official Qwen2-Audio front end (``Qwen2AudioProcessor`` with ``WhisperFeatureExtractor``)
truncates every clip to its first 30 s. For longer audio this project defines the reference
as **the official processing applied to each consecutive 30 s window**:

- the clip is cut into windows ``samples[480000 * k : 480000 * (k + 1)]``; every window but
  the last is exactly 30 s, the last holds the remainder;
- each window goes through the official feature extraction (zero-padded to 30 s, with its
  own attention mask and its own ``max - 8`` normalisation), the masked audio encoder and the
  projector, and keeps only its valid audio tokens;
- the windows' tokens are concatenated in order and take the place of the clip's one
  ``<|AUDIO|>`` placeholder (between one ``<|audio_bos|>`` and one ``<|audio_eos|>``).

For a clip of at most 30 s this is exactly the official path. A clip of exactly 30 s is one
window (750 tokens), never 30 s plus an empty one. A last window too short to make a single
audio token (:data:`MIN_WINDOW_SAMPLES`) is dropped: the reference would mask all of it
away, so it contributes nothing, and no padded near-silent window ever reaches the model.
"""

from __future__ import annotations

import numpy as np

from ..config import HOP_LENGTH, N_SAMPLES
from .features import audio_tokens, valid_frames

__all__ = [
    "MIN_WINDOW_SAMPLES",
    "WINDOW_SAMPLES",
    "audio_token_count",
    "split_windows",
    "window_token_count",
]

WINDOW_SAMPLES = N_SAMPLES  # 480 000 samples = 30 s at 16 kHz = 3000 frames = 750 tokens
# One audio token needs 3 valid frames: 3 -> conv (3-1)//2+1 = 2 -> pool (2-2)//2+1 = 1,
# while 2 frames -> 1 -> 0. ceil(n / 160) >= 3 holds from n = 2 * 160 + 1 = 321 samples (20 ms).
MIN_WINDOW_SAMPLES = 2 * HOP_LENGTH + 1


def window_token_count(n_samples: int) -> int:
    """Return the audio tokens one window of ``n_samples`` (at most 480 000) makes.

    ``ceil(n / 160)`` valid frames -> ``(f - 1) // 2 + 1`` after the stride-2 conv ->
    ``(c - 2) // 2 + 1`` after the stride-2 pooling: 25 per second, 750 for a full window,
    12 for 0.5 s, 0 below 321 samples.

    Raises:
        ValueError: ``n_samples`` is negative or longer than a window.
    """
    if not 0 <= n_samples <= WINDOW_SAMPLES:
        raise ValueError(f"a window holds 0 to {WINDOW_SAMPLES} samples, not {n_samples}")
    return audio_tokens(valid_frames(n_samples))


def split_windows(samples: np.ndarray) -> list[np.ndarray]:
    """Split mono 16 kHz audio into consecutive windows of at most 30 s.

    Args:
        samples: 1-D mono samples at 16 kHz.

    Returns:
        Views into ``samples``: full 480 000-sample windows, then the remainder when it makes
        at least one audio token. Empty for audio shorter than :data:`MIN_WINDOW_SAMPLES`.

    Raises:
        ValueError: ``samples`` is not 1-D.
    """
    if samples.ndim != 1:
        raise ValueError(f"expected 1-D mono samples, got shape {samples.shape}; downmix first")
    windows = [samples[i : i + WINDOW_SAMPLES] for i in range(0, samples.size, WINDOW_SAMPLES)]
    if windows and window_token_count(windows[-1].size) == 0:
        windows.pop()
    return windows


def audio_token_count(n_samples: int) -> int:
    """Return the audio tokens a whole clip of ``n_samples`` makes: the sum over its windows.

    25 per second within each window: 750 per full 30 s window, so 30 s -> 750, 45 s ->
    750 + 375, 3 min -> 6 * 750 = 4500.

    Raises:
        ValueError: ``n_samples`` is negative.
    """
    if n_samples < 0:
        raise ValueError(f"n_samples must be >= 0, not {n_samples}")
    full, tail = divmod(n_samples, WINDOW_SAMPLES)
    return full * window_token_count(WINDOW_SAMPLES) + window_token_count(tail)
