"""Audio front end: decode, downmix to mono, resample to 16 kHz and validate.

Everything the model hears goes through :func:`load_audio` (or :func:`load_clip`, which also
keeps where the audio came from). Problems are reported here, as :mod:`qaudio_local.errors`
classes, before anything reaches llama.cpp; no soundfile or libsndfile error escapes.

Decoding uses soundfile (libsndfile), so the readable formats are the ones the installed
libsndfile knows: WAV, FLAC, OGG (Vorbis, Opus), MP3 (libsndfile >= 1.1), AIFF and a few
rarer ones. M4A/AAC, WMA and video containers are not among them; convert those first,
e.g. ``ffmpeg -i in.m4a out.wav``.

Resampling uses soxr at quality ``"HQ"`` (see :data:`RESAMPLE_QUALITY`).
"""

from __future__ import annotations

import io
import operator
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeAlias

import numpy as np
import soundfile as sf
import soxr

from ..config import SAMPLE_RATE
from ..errors import (
    AudioDecodeError,
    AudioFileNotFoundError,
    EmptyAudioError,
    InvalidAudioError,
    QAudioError,
)
from .native_stderr import quiet_c_stderr

__all__ = ["AudioClip", "AudioSource", "load_audio", "load_clip"]

AudioSource: TypeAlias = (
    str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes] | np.ndarray
)
"""What :func:`load_audio` accepts: a path, an encoded file's bytes, a binary file object,
or a numpy array of samples (which then needs ``source_rate``)."""

# soxr "HQ" (20-bit precision, stop band ~ -120 dB) is librosa's default resampler, which is
# how Hugging Face `datasets` brings audio to 16 kHz for Whisper / Qwen2-Audio. Its aliasing
# floor already sits 40 dB below the 80 dB range the log-mel features keep (clamp to max - 8
# in log10 power), so "VHQ" (28-bit, ~30 % slower here) would change nothing the model sees.
RESAMPLE_QUALITY = "HQ"

# Frames decoded per read: 2**18 is ~5.5 s at 48 kHz, 2 MiB of float32 stereo. Long files are
# downmixed and resampled block by block, so peak memory is the 16 kHz mono result, not the
# whole file as multichannel float32.
BLOCK_FRAMES = 1 << 18

# A 2-D array whose first dimension is at most this (and smaller than the second) is taken as
# (channels, n_samples); otherwise as (n_samples, channels), soundfile's layout.
MAX_CHANNELS_FIRST = 8

# Integer PCM dtypes and how soundfile maps them to float: value / 2**(bits-1), uint8 centred.
_INT_SCALE = {
    np.dtype(np.int8): (0.0, 2.0**7),
    np.dtype(np.uint8): (128.0, 2.0**7),
    np.dtype(np.int16): (0.0, 2.0**15),
    np.dtype(np.int32): (0.0, 2.0**31),
}
_COMMON_FORMATS = ("WAV", "FLAC", "OGG", "MP3", "AIFF")
_NOT_LIBSNDFILE = {".m4a", ".mp4", ".aac", ".wma", ".webm", ".mkv", ".mov", ".amr", ".3gp"}


@dataclass(frozen=True, eq=False)
class AudioClip:
    """Decoded mono audio ready for the model, with where it came from.

    Attributes:
        samples: Mono float32 samples, 1-D, roughly in [-1, 1] (neither clipped nor
            normalised).
        sample_rate: Rate of ``samples`` in Hz (16000 unless asked otherwise).
        source: Where the audio came from: a path, ``"<bytes>"``, a file object's name or
            ``"<file>"``, or ``"<array>"``.
        source_rate: The rate the audio had before resampling, in Hz.
        source_channels: How many channels were averaged into ``samples``.
    """

    samples: np.ndarray
    sample_rate: int
    source: str
    source_rate: int
    source_channels: int

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.samples.shape[0] / self.sample_rate

    @property
    def resampled(self) -> bool:
        """Whether the audio was resampled to reach ``sample_rate``."""
        return self.source_rate != self.sample_rate


def load_audio(
    source: AudioSource, *, sample_rate: int = SAMPLE_RATE, source_rate: int | None = None
) -> np.ndarray:
    """Decode ``source`` into mono float32 samples at ``sample_rate``.

    The simple form of :func:`load_clip`, which documents the accepted sources and rules:
    channels are averaged, the rate is converted with soxr when it differs, and values are
    neither clipped nor normalised.

    Args:
        source: A path, an encoded file's bytes, a binary file object, or a numpy array.
        sample_rate: The rate to return, in Hz.
        source_rate: The rate of an array ``source`` in Hz; required for arrays only.

    Returns:
        A 1-D float32 array.

    Raises:
        AudioFileNotFoundError: The path does not exist.
        AudioDecodeError: A directory, or a file that is unreadable, corrupt or unsupported.
        EmptyAudioError: There are no samples (or fewer than one at ``sample_rate``).
        InvalidAudioError: NaN/inf samples, an unusable array or rate, or a bad ``source``.
    """
    return load_clip(source, sample_rate=sample_rate, source_rate=source_rate).samples


def load_clip(
    source: AudioSource, *, sample_rate: int = SAMPLE_RATE, source_rate: int | None = None
) -> AudioClip:
    """Decode ``source`` into an :class:`AudioClip` of mono float32 samples at ``sample_rate``.

    Accepted sources:

    - a path (``str`` or ``os.PathLike``) to any file libsndfile reads;
    - ``bytes``, ``bytearray`` or ``memoryview`` holding such a file;
    - a binary file object (opened with ``"rb"``); one that cannot seek is read into memory;
    - a numpy array with ``source_rate``: 1-D mono, or 2-D. A 2-D array is read as
      ``(n_samples, channels)``, soundfile's layout, unless its first dimension is at most
      :data:`MAX_CHANNELS_FIRST` (8) and smaller than its second, in which case it is read as
      ``(channels, n_samples)`` (the torchaudio / librosa layout). Float arrays (16/32/64-bit)
      are used as they are; int8, uint8, int16 and int32 arrays are scaled to [-1, 1) the way
      soundfile reads PCM (value / 2**(bits-1), uint8 centred on 128).

    Args:
        source: What to decode (see above).
        sample_rate: The rate to return, in Hz.
        source_rate: The rate of an array ``source`` in Hz; required for arrays, refused for
            anything else.

    Returns:
        The clip; ``samples`` is 1-D float32 at ``sample_rate``.

    Raises:
        AudioFileNotFoundError: The path does not exist.
        AudioDecodeError: The file is a directory, unreadable, corrupt or in a format the
            installed libsndfile cannot decode.
        EmptyAudioError: There are no samples (or fewer than one at ``sample_rate``).
        InvalidAudioError: NaN or infinite samples, an unusable array (dtype, shape, missing
            ``source_rate``), a bad rate, or an unsupported ``source`` type.
    """
    target = _check_rate(sample_rate, "sample_rate", "<audio>")
    if isinstance(source, np.ndarray | np.generic):
        return _clip_from_array(np.asarray(source), source_rate, target)
    desc = _describe(source)
    if source_rate is not None:
        raise InvalidAudioError(
            f"source_rate is only for numpy arrays; {desc} is an encoded file that carries its "
            "own sample rate, so drop source_rate",
            source=desc,
        )
    return _decode(_open_source(source, desc), desc, target)


# --- sources -------------------------------------------------------------------


def _describe(source: object) -> str:
    """Return a short, human-readable description of ``source`` for messages."""
    if isinstance(source, str | os.PathLike):
        return os.fsdecode(source)
    if isinstance(source, bytes | bytearray | memoryview):
        return "<bytes>"
    name = getattr(source, "name", None)
    return name if isinstance(name, str) and name else "<file>"


def _open_source(source: object, desc: str) -> Any:
    """Check ``source`` and turn it into something ``soundfile.SoundFile`` can open.

    Raises:
        AudioFileNotFoundError: A path that does not exist.
        AudioDecodeError: A directory or an unreadable path.
        EmptyAudioError: A zero-byte file or empty bytes.
        InvalidAudioError: A text-mode file object or an unsupported type.
    """
    if isinstance(source, str | os.PathLike):
        return _check_path(desc)
    if isinstance(source, bytes | bytearray | memoryview):
        if len(source) == 0:
            raise EmptyAudioError(
                "the audio bytes are empty (0 bytes); pass a whole file", source=desc
            )
        return io.BytesIO(source)
    if callable(getattr(source, "read", None)):
        return _check_file_object(source, desc)
    raise InvalidAudioError(
        f"cannot load audio from a {type(source).__name__}; pass a file path, the file's bytes, "
        "a binary file object, or a numpy array with source_rate",
        source=desc,
    )


def _check_path(path: str) -> str:
    """Return ``path`` after checking it names a readable, non-empty file.

    Raises:
        AudioFileNotFoundError: Nothing exists at ``path``.
        AudioDecodeError: A directory or a file this process may not read.
        EmptyAudioError: A zero-byte file.
    """
    if not os.path.exists(path):
        raise AudioFileNotFoundError(path)
    if os.path.isdir(path):
        raise AudioDecodeError(
            f"{path} is a directory, not an audio file; pass the path of one file inside it",
            source=path,
        )
    if not os.access(path, os.R_OK):
        raise AudioDecodeError(
            f"cannot read {path}: permission denied; check the file's permissions", source=path
        )
    if os.path.getsize(path) == 0:
        raise EmptyAudioError(f"{path} is empty (0 bytes); record or export it again", source=path)
    return path


def _check_file_object(fobj: Any, desc: str) -> Any:
    """Return a seekable binary file object for ``fobj``, reading it into memory if needed.

    Raises:
        InvalidAudioError: ``fobj`` is opened in text mode.
        AudioDecodeError: Reading it failed.
    """
    try:
        probe = fobj.read(0)
        if not isinstance(probe, bytes | bytearray):
            raise InvalidAudioError(
                f"{desc} is opened in text mode; open audio files with open(path, 'rb')",
                source=desc,
            )
        seekable = getattr(fobj, "seekable", None)
        if callable(seekable) and seekable() and hasattr(fobj, "tell"):
            return fobj
        return io.BytesIO(fobj.read())
    except OSError as exc:
        raise AudioDecodeError(f"cannot read {desc}: {exc}", source=desc) from exc


# --- decoding ------------------------------------------------------------------


def _decode(sf_input: Any, desc: str, target: int) -> AudioClip:
    """Decode an opened source block by block into a clip at ``target`` Hz.

    Raises:
        AudioDecodeError: libsndfile could not open or read it.
        EmptyAudioError: It holds no frames, or too few to make one sample at ``target``.
        InvalidAudioError: It holds NaN or infinite samples.
    """
    try:
        with quiet_c_stderr(), sf.SoundFile(sf_input) as f:
            rate, channels = int(f.samplerate), int(f.channels)
            samples = _read_mono(f, desc, rate, target)
    except QAudioError:
        raise
    except (RuntimeError, TypeError, ValueError, OSError, EOFError) as exc:
        reason = exc.error_string if isinstance(exc, sf.LibsndfileError) else str(exc)
        if "does not exist" in reason or "not a regular file" in reason:
            # libsndfile's wording when a file's content is not a format it knows
            reason = "not a valid audio file, or an unsupported format or codec"
        raise AudioDecodeError(_decode_message(desc, reason), source=desc) from exc
    return AudioClip(samples, target, desc, rate, channels)


def _read_mono(f: sf.SoundFile, desc: str, rate: int, target: int) -> np.ndarray:
    """Read all of ``f`` as mono float32 at ``target`` Hz, checking samples as they come.

    Raises:
        EmptyAudioError: No frames, or too few to make one sample at ``target``.
        InvalidAudioError: NaN or infinite samples.
    """
    stream = None
    if rate != target:
        stream = soxr.ResampleStream(rate, target, 1, dtype="float32", quality=RESAMPLE_QUALITY)
    parts: list[np.ndarray] = []
    n_read = 0
    # Read until an empty block rather than trusting the header's frame count, which is too
    # large for truncated MP3 and WAV files.
    while (block := f.read(BLOCK_FRAMES, dtype="float32", always_2d=True)).shape[0]:
        mono = _downmix(block).astype(np.float32, copy=False)
        _check_finite(mono, desc, rate, offset=n_read)
        n_read += mono.shape[0]
        parts.append(mono if stream is None else stream.resample_chunk(mono, last=False))
    if n_read == 0:
        raise EmptyAudioError(
            f"{desc} contains no audio frames (a header with no samples); record or export "
            "it again",
            source=desc,
        )
    if stream is not None:
        parts.append(stream.resample_chunk(np.zeros(0, np.float32), last=True))
    samples = np.concatenate(parts)
    _check_length(samples, desc, n_read, rate, target)
    return samples


def _decode_message(desc: str, reason: str) -> str:
    """Compose the message for a file libsndfile could not decode."""
    available = sf.available_formats()
    formats = ", ".join(name for name in _COMMON_FORMATS if name in available)
    hint = ""
    if desc.startswith("<"):
        command = "ffmpeg -i in.m4a -ac 1 -ar 16000 out.wav"
    else:
        path = Path(desc)
        if path.suffix.lower() in _NOT_LIBSNDFILE:
            hint = f" ({path.suffix} files are not a format libsndfile reads)"
        out = path.with_name(f"{path.stem}-16k.wav")
        command = f"ffmpeg -i {shlex.quote(desc)} -ac 1 -ar 16000 {shlex.quote(str(out))}"
    reason = reason.strip().rstrip(".") or "unknown libsndfile error"
    return (
        f"could not decode {desc}: {reason}{hint}. Readable formats here: {formats} "
        f"(libsndfile {sf.__libsndfile_version__}); convert other audio first, e.g. `{command}`"
    )


# --- arrays ----------------------------------------------------------------------


def _clip_from_array(x: np.ndarray, source_rate: int | None, target: int) -> AudioClip:
    """Validate, downmix and resample an array of samples.

    Raises:
        EmptyAudioError: No samples, or too few to make one sample at ``target``.
        InvalidAudioError: Missing or bad ``source_rate``, bad dtype or shape, NaN or inf.
    """
    desc = "<array>"
    if source_rate is None:
        raise InvalidAudioError(
            "a numpy array carries no sample rate; pass it as source_rate, "
            "e.g. load_audio(samples, source_rate=44100)",
            source=desc,
        )
    rate = _check_rate(source_rate, "source_rate", desc)
    frames = _as_frames(x, desc)
    mono = _downmix(_to_float(frames, desc)).astype(np.float32, copy=False)
    _check_finite(mono, desc, rate, offset=0)
    if rate == target:  # never hand back a view of the caller's array
        samples = mono.copy() if np.may_share_memory(mono, x) else mono
    else:
        samples = soxr.resample(mono, rate, target, quality=RESAMPLE_QUALITY)
    _check_length(samples, desc, mono.shape[0], rate, target)
    return AudioClip(samples, target, desc, rate, frames.shape[1])


def _as_frames(x: np.ndarray, desc: str) -> np.ndarray:
    """Return ``x`` as ``(n_samples, channels)``, applying the layout rule of :func:`load_clip`.

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


# --- shared checks -------------------------------------------------------------


def _downmix(frames: np.ndarray) -> np.ndarray:
    """Average the channels of a ``(n_samples, channels)`` array into 1-D."""
    return frames[:, 0] if frames.shape[1] == 1 else frames.mean(axis=1)


def _check_finite(mono: np.ndarray, desc: str, rate: int, *, offset: int) -> None:
    """Raise if ``mono`` holds NaN or infinite values.

    Raises:
        InvalidAudioError: Some samples are NaN or infinite.
    """
    bad = ~np.isfinite(mono)
    if not bad.any():
        return
    first = (offset + int(np.argmax(bad))) / rate
    raise InvalidAudioError(
        f"{desc} contains {int(bad.sum())} NaN or infinite sample(s) (the first at "
        f"{first:.3f} s); replace them (e.g. numpy.nan_to_num) or export the audio again",
        source=desc,
    )


def _check_length(samples: np.ndarray, desc: str, n_in: int, rate: int, target: int) -> None:
    """Raise if resampling left no samples.

    Raises:
        EmptyAudioError: ``samples`` is empty.
    """
    if samples.shape[0] == 0:
        raise EmptyAudioError(
            f"{desc} is too short: {n_in} sample(s) at {rate} Hz make no sample at {target} Hz",
            source=desc,
        )


def _check_rate(value: object, name: str, desc: str) -> int:
    """Return ``value`` as a positive int sample rate.

    Raises:
        InvalidAudioError: ``value`` is not a positive whole number.
    """
    rate: int | None = None
    if not isinstance(value, bool):
        try:
            rate = operator.index(value)  # type: ignore[arg-type]
        except TypeError:
            if isinstance(value, float) and value.is_integer():
                rate = int(value)
    if rate is None or rate <= 0:
        raise InvalidAudioError(
            f"{name} must be a positive whole number of samples per second (e.g. 16000), "
            f"got {value!r}",
            source=desc,
        )
    return rate
