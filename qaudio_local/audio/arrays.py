"""Samples handed over in memory: numpy arrays, and lists or tuples of numbers.

An array is validated (dtype, shape, values), put in ``(n_samples, channels)`` layout by the
rule :func:`qaudio_local.audio.load_clip` documents, scaled to float like soundfile scales
PCM, downmixed and resampled with soxr. The caller's array is never modified nor handed back.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import soxr

from ..errors import EmptyAudioError, InvalidAudioError
from .limits import MAX_CHANNELS_FIRST, RESAMPLE_QUALITY
from .validate import Limit, check_duration, check_rate, check_resampled, check_samples, downmix

__all__ = ["array_from_sequence", "is_samples", "samples_from_array"]

# Integer PCM dtypes and how soundfile maps them to float: value / 2**(bits-1), uint8 centred.
_INT_SCALE = {
    np.dtype(np.int8): (0.0, 2.0**7),
    np.dtype(np.uint8): (128.0, 2.0**7),
    np.dtype(np.int16): (0.0, 2.0**15),
    np.dtype(np.int32): (0.0, 2.0**31),
}


def is_samples(source: object) -> bool:
    """Whether ``source`` is plain Python samples: a list, a tuple or a number."""
    return isinstance(source, list | tuple | int | float) and not isinstance(source, bool)


def array_from_sequence(seq: list[Any] | tuple[Any, ...] | float) -> np.ndarray:
    """A list or tuple of samples (or a single number) as an array.

    Raises:
        InvalidAudioError: It is not a rectangular array of numbers.
    """
    try:
        return np.asarray(seq)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidAudioError(
            f"the list of samples is not a rectangular array of numbers ({exc}); pass a 1-D "
            "numpy array of float32 samples",
            source="<array>",
        ) from exc


def samples_from_array(
    x: np.ndarray, source_rate: int | None, target: int, limit: Limit
) -> tuple[np.ndarray, int, int]:
    """Validate, downmix and resample an array of samples.

    Returns:
        The mono float32 samples at ``target`` Hz (C-contiguous, never a view of ``x``),
        the rate ``x`` had, and how many channels it had.

    Raises:
        AudioTooLongError: Longer than ``limit`` (found before resampling).
        EmptyAudioError: No samples, or too few to make one sample at ``target``.
        InvalidAudioError: Missing or bad ``source_rate``, bad dtype or shape, NaN, inf or
            absurdly large samples.
    """
    desc = "<array>"
    if source_rate is None:
        raise InvalidAudioError(
            "a numpy array carries no sample rate; pass it as source_rate, "
            "e.g. load_audio(samples, source_rate=44100)",
            source=desc,
        )
    rate = check_rate(source_rate, "source_rate", desc)
    frames = _as_frames(x, desc)
    check_duration(frames.shape[0], rate, target, limit, desc)
    floats = _to_float(frames, desc)
    check_samples(floats, desc, rate, offset=0)
    mono = downmix(floats).astype(np.float32, copy=False)
    if rate == target:  # never hand back a view of the caller's array
        samples = mono.copy() if np.may_share_memory(mono, x) else mono
    else:
        samples = soxr.resample(mono, rate, target, quality=RESAMPLE_QUALITY)
    check_resampled(samples, desc, mono.shape[0], rate, target)
    return np.ascontiguousarray(samples), rate, frames.shape[1]


def _as_frames(x: np.ndarray, desc: str) -> np.ndarray:
    """Return ``x`` as ``(n_samples, channels)``, applying the layout rule of ``load_clip``.

    Raises:
        InvalidAudioError: ``x`` is 0-D or has more than 2 dimensions.
        EmptyAudioError: ``x`` has no samples or no channels.
    """
    if x.ndim not in (1, 2):
        raise InvalidAudioError(
            f"audio arrays must be 1-D (mono) or 2-D (samples x channels), got shape {x.shape}; "
            "select one clip, e.g. batch[0]",
            source=desc,
        )
    if x.size == 0:
        raise EmptyAudioError(f"the audio array is empty (shape {x.shape})", source=desc)
    if x.ndim == 1:
        return x[:, np.newaxis]
    first, second = x.shape
    return x.T if first <= MAX_CHANNELS_FIRST and second > first else x


def _to_float(x: np.ndarray, desc: str) -> np.ndarray:
    """Return ``x`` as a float array, scaling integer PCM like soundfile does.

    Raises:
        InvalidAudioError: ``x`` has a dtype that is not audio (complex, bool, object, ...) or
            an integer type without a standard full scale.
    """
    if x.dtype in _INT_SCALE:
        offset, scale = _INT_SCALE[x.dtype]
        return (x.astype(np.float32) - np.float32(offset)) / np.float32(scale)
    if x.dtype.kind == "f":
        return x if x.dtype in (np.float32, np.float64) else x.astype(np.float32)
    if x.dtype.kind in "iu":
        hint = "convert it to float32 in [-1, 1] or to int16 / int32 PCM"
    else:
        hint = "pass real-valued float32 samples in [-1, 1] (or int16 PCM)"
    raise InvalidAudioError(
        f"audio arrays of dtype {x.dtype} are not supported; {hint}", source=desc
    )
