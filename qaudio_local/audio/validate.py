"""The checks every input passes, whatever form it came in, and the downmix to mono.

Rates (:func:`check_rate`), a file's header (:func:`check_header`), the length limit
(:func:`length_limit`, :func:`check_duration`: in samples at the target rate, before any
resampling), the sample values (:func:`check_samples`) and the result of resampling
(:func:`check_resampled`). Each raises the :mod:`qaudio_local.errors` class that names the
problem; the limits are those of :mod:`.limits`.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import numpy as np

from ..config import SAMPLE_RATE
from ..errors import (
    AudioDecodeError,
    AudioTooLongError,
    EmptyAudioError,
    InvalidAudioError,
    OptionError,
)
from .limits import MAX_FILE_CHANNELS, MAX_PEAK, MAX_RATE, MIN_RATE

__all__ = [
    "Limit",
    "check_duration",
    "check_header",
    "check_rate",
    "check_resampled",
    "check_samples",
    "downmix",
    "length_limit",
]


@dataclass(frozen=True)
class Limit:
    """The most samples a clip may have at the target rate (``None``: no limit)."""

    seconds: float | None
    samples: int | None


def length_limit(max_seconds: object, target: int) -> Limit:
    """Check ``max_seconds``.

    Raises:
        OptionError: Not a positive, finite number (or ``None``).
    """
    if max_seconds is None:
        return Limit(None, None)
    if (
        isinstance(max_seconds, bool)
        or not isinstance(max_seconds, int | float | np.integer | np.floating)
        or not math.isfinite(max_seconds)
        or max_seconds <= 0
    ):
        raise OptionError(
            f"max_seconds must be a positive number of seconds (or None), got {max_seconds!r}",
            option="max_seconds",
        )
    return Limit(float(max_seconds), math.ceil(float(max_seconds) * target))


def check_duration(n_in: int, rate: int, target: int, limit: Limit, desc: str) -> None:
    """Raise if ``n_in`` frames at ``rate`` make more samples at ``target`` than allowed.

    Raises:
        AudioTooLongError: They do.
    """
    if limit.samples is None or limit.seconds is None or n_in * target <= limit.samples * rate:
        return
    seconds = n_in / rate
    raise AudioTooLongError(
        f"{desc} is longer than the {limit.seconds:g} s accepted here: it holds at least "
        f"{seconds:.1f} s ({n_in} frames at {rate} Hz); cut it into parts, use "
        "`qaudio transcribe` for long recordings, or pass a larger max_seconds",
        source=desc,
        seconds=seconds,
        limit=limit.seconds,
        rate=rate,
    )


def check_header(desc: str, rate: int, channels: int) -> None:
    """Refuse a header no recording has, before anything is read or allocated.

    Raises:
        AudioDecodeError: The sample rate or channel count is impossible.
    """
    if not MIN_RATE <= rate <= MAX_RATE:
        raise AudioDecodeError(
            f"{desc} declares a sample rate of {rate} Hz, outside the {MIN_RATE}-{MAX_RATE} Hz "
            "recordings use; the file is damaged or mislabelled; export it again",
            source=desc,
        )
    if not 1 <= channels <= MAX_FILE_CHANNELS:
        raise AudioDecodeError(
            f"{desc} declares {channels} channels; the file is damaged; export it again",
            source=desc,
        )


def downmix(frames: np.ndarray) -> np.ndarray:
    """Average the channels of a ``(n_samples, channels)`` array into 1-D."""
    return frames[:, 0] if frames.shape[1] == 1 else frames.mean(axis=1)


def check_samples(frames: np.ndarray, desc: str, rate: int, *, offset: int) -> None:
    """Raise if ``(n, channels)`` float ``frames`` hold NaN, infinite or absurd values.

    Raises:
        InvalidAudioError: Some samples are NaN or infinite, or beyond :data:`MAX_PEAK`.
    """
    finite = np.isfinite(frames)
    if not finite.all():
        bad = ~finite.all(axis=1)
        first = (offset + int(np.argmax(bad))) / rate
        raise InvalidAudioError(
            f"{desc} contains {int(bad.sum())} NaN or infinite sample(s) (the first at "
            f"{first:.3f} s); replace them (e.g. numpy.nan_to_num) or export the audio again",
            source=desc,
        )
    peak = float(np.abs(frames).max())
    if peak > MAX_PEAK:
        raise InvalidAudioError(
            f"{desc} has samples as large as {peak:.3g}, far beyond full scale (1.0): these "
            "are not audio samples; scale them into [-1, 1] (int16 values: divide by 32768)",
            source=desc,
        )


def check_resampled(samples: np.ndarray, desc: str, n_in: int, rate: int, target: int) -> None:
    """Raise if resampling left no samples, or overflowed.

    Raises:
        EmptyAudioError: ``samples`` is empty.
        InvalidAudioError: ``samples`` holds non-finite values.
    """
    if samples.shape[0] == 0:
        raise EmptyAudioError(
            f"{desc} is too short: {n_in} sample(s) at {rate} Hz make no sample at {target} Hz",
            source=desc,
        )
    if not np.isfinite(samples).all():  # pragma: no cover - MAX_PEAK keeps soxr finite
        raise InvalidAudioError(
            f"resampling {desc} from {rate} Hz overflowed to infinite values; scale the "
            "samples into [-1, 1] first",
            source=desc,
        )


def check_rate(value: object, name: str, desc: str) -> int:
    """Return ``value`` as a sample rate from :data:`MIN_RATE` to :data:`MAX_RATE`.

    Raises:
        InvalidAudioError: ``value`` is not a whole number in that range.
    """
    rate: int | None = None
    if not isinstance(value, bool):
        try:
            rate = operator.index(value)  # type: ignore[arg-type]
        except TypeError:
            if isinstance(value, float | np.floating) and float(value).is_integer():
                rate = int(value)
    if rate is None or not MIN_RATE <= rate <= MAX_RATE:
        raise InvalidAudioError(
            f"{name} must be a positive whole number of samples per second from {MIN_RATE} to "
            f"{MAX_RATE} (e.g. 16000), got {value!r}",
            source=desc,
        )
    return rate


def model_samples(audio: object, desc: str) -> np.ndarray:
    """Audio as the model takes it: 16 kHz mono samples, checked as every input is.

    The one check for audio handed to the engine directly (an array in a prompt), the same
    :func:`check_samples` that files, bytes and arrays through ``load_audio`` go through.

    Returns:
        The samples as a C-contiguous float32 array.

    Raises:
        InvalidAudioError: Not a 1-D float array, empty, NaN, infinite or beyond
            :data:`MAX_PEAK`.
    """
    arr = np.asarray(audio) if isinstance(audio, np.ndarray) else None
    if arr is None or arr.ndim != 1 or not np.issubdtype(arr.dtype, np.floating):
        what = f"shape {arr.shape}, dtype {arr.dtype}" if arr is not None else type(audio).__name__
        raise InvalidAudioError(
            f"{desc} must be a 1-D float array of 16 kHz samples (got {what}); "
            "qaudio_local.load_audio() reads files, bytes and other arrays into one",
            source="<array>",
        )
    if arr.size == 0:
        raise InvalidAudioError(f"{desc} is empty", source="<array>")
    out = np.ascontiguousarray(arr, dtype=np.float32)
    check_samples(out[:, np.newaxis], desc, SAMPLE_RATE, offset=0)
    return out
