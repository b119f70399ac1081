"""Audio front end: decode, downmix to mono, resample to 16 kHz and validate.

Everything the model hears goes through :func:`load_audio` (or :func:`load_clip`, which also
keeps where the audio came from). Problems are reported here, as :mod:`qaudio_local.errors`
classes, before anything reaches llama.cpp; no soundfile or libsndfile error escapes, and
nothing is printed (libsndfile's own messages go to the ``qaudio_local.native`` logger).

Decoding uses soundfile (libsndfile), so the readable formats are the ones the installed
libsndfile knows: WAV, FLAC, OGG (Vorbis, Opus), MP3 (libsndfile >= 1.1), AIFF and a few
rarer ones. M4A/AAC, WMA and video containers are not among them; convert those first,
e.g. ``ffmpeg -i in.m4a out.wav``.

Resampling uses soxr at quality ``"HQ"`` (see :data:`RESAMPLE_QUALITY`).

Nothing a file declares is trusted: sample rates outside :data:`MIN_RATE`..:data:`MAX_RATE`
are refused, and the length the audio will have after resampling is checked against
``max_seconds`` (default :data:`MAX_SECONDS`) block by block, *before* each block is
resampled, so a header claiming 1 Hz never turns a small file into gigabytes of samples.
Streams without a size (standard input, pipes, unseekable file objects) are read up to
:data:`MAX_STREAM_BYTES`.
"""

from __future__ import annotations

import contextlib
import io
import math
import operator
import os
import shlex
import stat
import sys
import tempfile
from collections.abc import Iterator
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
    AudioTooLargeError,
    AudioTooLongError,
    EmptyAudioError,
    InvalidAudioError,
    OptionError,
    QAudioError,
)
from .native_stderr import quiet_c_stderr

__all__ = ["AudioClip", "AudioSource", "load_audio", "load_clip", "read_stdin_audio"]

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
# whole file as multichannel float32. Files with many channels read fewer frames per block,
# so that a block never exceeds BLOCK_BYTES whatever the header says.
BLOCK_FRAMES = 1 << 18
BLOCK_BYTES = BLOCK_FRAMES * 2 * 4

# Rates any recording (or requested output) can have, in Hz: telephone speech is 8 kHz,
# studio audio up to 384 kHz. Outside this range a header is damaged, and soxr would spend
# minutes (or gigabytes) on the ratio. audio.stream uses the same upper bound.
MIN_RATE = 1_000
MAX_RATE = 1_000_000
MAX_FILE_CHANNELS = 1024  # libsndfile's own limit (SF_MAX_CHANNELS)

# The default length limit of load_clip: twice what one prompt can hold (8192 tokens of
# context at 25 audio tokens/s is ~5.5 min), 38 MB of 16 kHz float32. Long-form callers,
# which stream and segment, pass a larger max_seconds.
MAX_SECONDS = 600.0

# The most bytes read from a stream that has no size (stdin, a FIFO, an unseekable file
# object): 10 min of 48 kHz stereo 24-bit PCM is 173 MB.
MAX_STREAM_BYTES = 256 << 20

# Samples larger than this are not audio on any scale (int32 PCM passed as floats peaks at
# 2**31); much larger values overflow float32 in resampling or in the log-mel power.
MAX_PEAK = 2.0**31

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
            ``"<file>"``, ``"<stdin>"``, or ``"<array>"``.
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
    source: AudioSource,
    *,
    sample_rate: int = SAMPLE_RATE,
    source_rate: int | None = None,
    max_seconds: float | None = MAX_SECONDS,
) -> np.ndarray:
    """Decode ``source`` into mono float32 samples at ``sample_rate``.

    The simple form of :func:`load_clip`, which documents the accepted sources and rules:
    channels are averaged, the rate is converted with soxr when it differs, and values are
    neither clipped nor normalised.

    Args:
        source: A path, an encoded file's bytes, a binary file object, or a numpy array.
        sample_rate: The rate to return, in Hz.
        source_rate: The rate of an array ``source`` in Hz; required for arrays only.
        max_seconds: The longest audio accepted (:data:`MAX_SECONDS` by default; ``None``
            for no limit).

    Returns:
        A 1-D float32 array.

    Raises:
        AudioFileNotFoundError: The path does not exist.
        AudioDecodeError: A directory, or a file that is unreadable, corrupt or unsupported.
        AudioTooLongError: Longer than ``max_seconds``.
        AudioTooLargeError: A stream with more than :data:`MAX_STREAM_BYTES` bytes.
        EmptyAudioError: There are no samples (or fewer than one at ``sample_rate``).
        InvalidAudioError: NaN/inf samples, an unusable array or rate, or a bad ``source``.
    """
    clip = load_clip(
        source, sample_rate=sample_rate, source_rate=source_rate, max_seconds=max_seconds
    )
    return clip.samples


def load_clip(
    source: AudioSource,
    *,
    sample_rate: int = SAMPLE_RATE,
    source_rate: int | None = None,
    max_seconds: float | None = MAX_SECONDS,
) -> AudioClip:
    """Decode ``source`` into an :class:`AudioClip` of mono float32 samples at ``sample_rate``.

    Accepted sources:

    - a path (``str`` or ``os.PathLike``) to any file libsndfile reads, or to a pipe such as
      ``<(cat clip.wav)`` (read once, up to :data:`MAX_STREAM_BYTES`);
    - ``bytes``, ``bytearray`` or ``memoryview`` holding such a file;
    - a binary file object (opened with ``"rb"``); one that cannot seek is read into memory
      (up to :data:`MAX_STREAM_BYTES`);
    - a numpy array (or a list of numbers) with ``source_rate``: 1-D mono, or 2-D. A 2-D
      array is read as ``(n_samples, channels)``, soundfile's layout, unless its first
      dimension is at most :data:`MAX_CHANNELS_FIRST` (8) and smaller than its second, in
      which case it is read as ``(channels, n_samples)`` (the torchaudio / librosa layout).
      Float arrays (16/32/64-bit) are used as they are; int8, uint8, int16 and int32 arrays
      are scaled to [-1, 1) the way soundfile reads PCM (value / 2**(bits-1), uint8 centred
      on 128).

    MP3 data without an ID3 tag decodes the same from bytes, file objects and pipes as from
    a ``.mp3`` path (libsndfile recognises such data by the file name only, so it is given
    one).

    Args:
        source: What to decode (see above).
        sample_rate: The rate to return, in Hz (:data:`MIN_RATE` to :data:`MAX_RATE`).
        source_rate: The rate of an array ``source`` in Hz; required for arrays, refused for
            anything else.
        max_seconds: The longest audio accepted, checked before any resampling
            (:data:`MAX_SECONDS` by default: enough for any one prompt; ``None`` for no
            limit, for callers that bound the input themselves).

    Returns:
        The clip; ``samples`` is 1-D float32 at ``sample_rate``.

    Raises:
        AudioFileNotFoundError: The path does not exist.
        AudioDecodeError: The file is a directory, unreadable, corrupt, declares an
            impossible sample rate or channel count, or is in a format the installed
            libsndfile cannot decode.
        AudioTooLongError: The audio is longer than ``max_seconds``.
        AudioTooLargeError: A stream with more than :data:`MAX_STREAM_BYTES` bytes.
        EmptyAudioError: There are no samples (or fewer than one at ``sample_rate``).
        InvalidAudioError: NaN, infinite or absurdly large samples, an unusable array
            (dtype, shape, missing ``source_rate``), a bad rate, a closed or text-mode file
            object, or an unsupported ``source`` type.
        OptionError: ``max_seconds`` is not a positive number.
    """
    target = _check_rate(sample_rate, "sample_rate", "<audio>")
    limit = _limit(max_seconds, target)
    if _is_samples(source) and source_rate is not None:
        source = _array_from_sequence(source)  # type: ignore[arg-type]
    if isinstance(source, np.ndarray | np.generic):
        return _clip_from_array(np.asarray(source), source_rate, target, limit)
    desc = _describe(source)
    if source_rate is not None:
        raise InvalidAudioError(
            f"source_rate is only for numpy arrays; {desc} is an encoded file that carries its "
            "own sample rate, so drop source_rate",
            source=desc,
        )
    return _decode(_open_source(source, desc), desc, target, limit)


def read_stdin_audio(max_bytes: int = MAX_STREAM_BYTES) -> io.BytesIO:
    """Read one whole audio file from standard input (``qaudio run -``), at most ``max_bytes``.

    Returns:
        The bytes as a file object named ``"<stdin>"``, for :func:`load_clip`.

    Raises:
        InvalidAudioError: There is no standard input, or it is a terminal (nothing piped).
        AudioTooLargeError: More than ``max_bytes`` bytes arrive.
        AudioDecodeError: Reading failed.
        EmptyAudioError: Standard input holds no bytes.
    """
    desc = "<stdin>"
    stream = getattr(sys.stdin, "buffer", None)
    if stream is None:
        raise InvalidAudioError(
            "there is no standard input to read audio from; pass the audio file's path",
            source=desc,
        )
    try:
        interactive = stream.isatty()
    except (OSError, ValueError):
        interactive = False
    if interactive:
        raise InvalidAudioError(
            "'-' reads audio from standard input, but nothing is piped in (it is a "
            "terminal); run e.g. `qaudio run - < clip.wav`, or pass the file's path",
            source=desc,
        )
    data = _read_capped(stream, desc, max_bytes)
    if not data.getbuffer().nbytes:
        raise EmptyAudioError(
            "standard input holds no audio (0 bytes); pipe a whole file in", source=desc
        )
    data.name = desc  # how _describe names it
    return data


# --- sources -------------------------------------------------------------------


def _describe(source: object) -> str:
    """Return a short, printable description of ``source`` for messages."""
    if isinstance(source, str | os.PathLike):
        text = os.fsdecode(os.fspath(source))
    elif isinstance(source, bytes | bytearray | memoryview):
        return "<bytes>"
    else:
        name = getattr(source, "name", None)
        text = name if isinstance(name, str) and name else "<file>"
    # a path that is not valid UTF-8 holds surrogate escapes, which no terminal can print
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _open_source(source: object, desc: str, max_bytes: int = MAX_STREAM_BYTES) -> Any:
    """Check ``source`` and turn it into something ``soundfile.SoundFile`` can open.

    Raises:
        AudioFileNotFoundError: A path that does not exist.
        AudioDecodeError: A directory or an unreadable path.
        AudioTooLargeError: A stream longer than ``max_bytes``.
        EmptyAudioError: A zero-byte file, stream or buffer.
        InvalidAudioError: A closed or text-mode file object, or an unsupported type.
    """
    if isinstance(source, str | os.PathLike):
        return _check_path(os.fsdecode(os.fspath(source)), desc, max_bytes)
    if isinstance(source, bytes | bytearray | memoryview):
        return io.BytesIO(_buffer_bytes(source, desc))
    if callable(getattr(source, "read", None)):
        return _check_file_object(source, desc, max_bytes)
    kind = type(source).__name__
    hint = " without source_rate" if _is_samples(source) else ""
    raise InvalidAudioError(
        f"cannot load audio from a {kind}{hint}; pass a file path, the file's bytes, a binary "
        "file object, or samples (a numpy array) with source_rate",
        source=desc,
    )


def _buffer_bytes(source: bytes | bytearray | memoryview, desc: str) -> bytes | bytearray:
    """The bytes of an in-memory file (a memoryview of any layout is copied out).

    Raises:
        EmptyAudioError: No bytes.
        InvalidAudioError: A released memoryview.
    """
    data: bytes | bytearray
    try:
        data = source.tobytes() if isinstance(source, memoryview) else source
    except ValueError as exc:  # a released memoryview
        raise InvalidAudioError(
            f"cannot read the audio bytes: {exc}; pass bytes", source=desc
        ) from exc
    if len(data) == 0:
        raise EmptyAudioError("the audio bytes are empty (0 bytes); pass a whole file", source=desc)
    return data


def _check_path(path: str, desc: str, max_bytes: int) -> Any:
    """Return what soundfile should open for ``path``, after checking it.

    A regular file is opened by name (as bytes on POSIX, so that any file name works); a
    pipe or device is read once into memory, up to ``max_bytes``.

    Raises:
        AudioFileNotFoundError: Nothing exists at ``path``.
        AudioDecodeError: A directory, or a file this process may not read.
        AudioTooLargeError: A pipe or device giving more than ``max_bytes``.
        EmptyAudioError: A zero-byte file.
        InvalidAudioError: A terminal.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise AudioFileNotFoundError(desc) from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the name
        raise AudioDecodeError(f"cannot open {desc}: {exc}; check the path", source=desc) from exc
    if stat.S_ISDIR(info.st_mode):
        raise AudioDecodeError(
            f"{desc} is a directory, not an audio file; pass the path of one file inside it",
            source=desc,
        )
    if not os.access(path, os.R_OK):
        raise AudioDecodeError(
            f"cannot read {desc}: permission denied; check the file's permissions", source=desc
        )
    if stat.S_ISREG(info.st_mode):
        if info.st_size == 0:
            raise EmptyAudioError(
                f"{desc} is empty (0 bytes); record or export it again", source=desc
            )
        return path if os.name == "nt" else os.fsencode(path)
    # a pipe (`qaudio run <(cat clip.wav)`), a device or a socket: it has no size to trust
    try:
        with open(path, "rb") as fh:
            if fh.isatty():
                raise InvalidAudioError(
                    f"{desc} is a terminal, not an audio file; pass a file", source=desc
                )
            data = _read_capped(fh, desc, max_bytes)
    except OSError as exc:
        raise AudioDecodeError(f"cannot read {desc}: {exc}", source=desc) from exc
    if not data.getbuffer().nbytes:
        raise EmptyAudioError(f"{desc} gave no bytes; pass a whole audio file", source=desc)
    return data


def _check_file_object(fobj: Any, desc: str, max_bytes: int) -> Any:
    """Return a seekable binary file object for ``fobj``, reading it into memory if needed.

    Raises:
        InvalidAudioError: ``fobj`` is closed or opened in text mode.
        AudioDecodeError: Reading it failed.
        AudioTooLargeError: An unseekable stream longer than ``max_bytes``.
    """
    if getattr(fobj, "closed", False) is True:
        raise InvalidAudioError(
            f"{desc} is a closed file object; pass an open one (open(path, 'rb')) or the path",
            source=desc,
        )
    try:
        probe = fobj.read(0)
        if not isinstance(probe, bytes | bytearray):
            raise InvalidAudioError(
                f"{desc} is opened in text mode; open audio files with open(path, 'rb')",
                source=desc,
            )
        seekable = getattr(fobj, "seekable", None)
        if callable(seekable) and seekable() and callable(getattr(fobj, "tell", None)):
            fobj.tell()
            return fobj
    except QAudioError:
        raise
    except ValueError as exc:  # closed, detached
        raise InvalidAudioError(f"cannot read {desc}: {exc}", source=desc) from exc
    except OSError as exc:
        raise AudioDecodeError(f"cannot read {desc}: {exc}", source=desc) from exc
    return _read_capped(fobj, desc, max_bytes)


def _read_capped(fobj: Any, desc: str, max_bytes: int) -> io.BytesIO:
    """Read ``fobj`` to its end into memory, refusing more than ``max_bytes``.

    Raises:
        AudioTooLargeError: More than ``max_bytes`` bytes.
        AudioDecodeError: A read failed or returned something other than bytes.
    """
    out = io.BytesIO()
    total = 0
    try:
        while True:
            chunk = fobj.read(min(1 << 20, max_bytes + 1 - total))
            if chunk is None:  # a non-blocking stream with nothing ready
                raise AudioDecodeError(
                    f"{desc} is a non-blocking stream with no data ready; pass a file",
                    source=desc,
                )
            if not isinstance(chunk, bytes | bytearray):
                raise InvalidAudioError(
                    f"{desc} returned {type(chunk).__name__}, not bytes; open it with 'rb'",
                    source=desc,
                )
            if not chunk:
                break
            total += len(chunk)
            if total > max_bytes:
                raise AudioTooLargeError(
                    f"{desc} holds more than {max_bytes >> 20} MiB of audio data, the most read "
                    "from a stream; save it to a file and pass its path (long recordings: "
                    "`qaudio transcribe FILE`)",
                    source=desc,
                    limit_bytes=max_bytes,
                )
            out.write(chunk)
    except QAudioError:
        raise
    except (OSError, ValueError) as exc:
        raise AudioDecodeError(f"cannot read {desc}: {exc}", source=desc) from exc
    out.seek(0)
    return out


# --- decoding ------------------------------------------------------------------


@dataclass(frozen=True)
class _Limit:
    """The most samples a clip may have at the target rate (``None``: no limit)."""

    seconds: float | None
    samples: int | None


def _limit(max_seconds: object, target: int) -> _Limit:
    """Check ``max_seconds``.

    Raises:
        OptionError: Not a positive, finite number (or ``None``).
    """
    if max_seconds is None:
        return _Limit(None, None)
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
    return _Limit(float(max_seconds), math.ceil(float(max_seconds) * target))


def _check_duration(n_in: int, rate: int, target: int, limit: _Limit, desc: str) -> None:
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


def _decode(sf_input: Any, desc: str, target: int, limit: _Limit) -> AudioClip:
    """Decode an opened source block by block into a clip at ``target`` Hz.

    Raises:
        AudioDecodeError: libsndfile could not open or read it, or its header is absurd.
        AudioTooLongError: It is longer than the limit.
        EmptyAudioError: It holds no frames, or too few to make one sample at ``target``.
        InvalidAudioError: It holds NaN, infinite or absurdly large samples.
    """
    try:
        with _opened(sf_input, desc) as f:
            rate, channels = int(f.samplerate), int(f.channels)
            _check_header(desc, rate, channels)
            with quiet_c_stderr():
                samples = _read_mono(f, desc, rate, target, limit)
    except QAudioError:
        raise
    except (RuntimeError, TypeError, ValueError, OSError, EOFError, MemoryError) as exc:
        raise AudioDecodeError(_decode_message(desc, _reason(exc)), source=desc) from exc
    return AudioClip(samples, target, desc, rate, channels)


def _reason(exc: BaseException) -> str:
    """libsndfile's (or Python's) words for why decoding failed."""
    reason = exc.error_string if isinstance(exc, sf.LibsndfileError) else str(exc)
    if "does not exist" in reason or "not a regular file" in reason:
        # libsndfile's wording when a file's content is not a format it knows
        reason = "not a valid audio file, or an unsupported format or codec"
    return reason


@contextlib.contextmanager
def _opened(sf_input: Any, desc: str) -> Iterator[sf.SoundFile]:
    """Open ``sf_input`` with soundfile; in-memory MP3 data goes through a ``.mp3`` file.

    Raises:
        AudioDecodeError: libsndfile cannot open it.
    """
    start = None if isinstance(sf_input, str | bytes) else _tell(sf_input)
    try:
        with quiet_c_stderr():
            f = sf.SoundFile(sf_input)
    except (RuntimeError, TypeError, ValueError, OSError, EOFError) as exc:
        spooled = None if start is None else _spool_mpeg(sf_input, start, desc)
        if spooled is None:
            raise AudioDecodeError(_decode_message(desc, _reason(exc)), source=desc) from exc
    else:
        with f:
            yield f
        return
    try:
        with _opened(spooled if os.name == "nt" else os.fsencode(spooled), desc) as f:
            yield f
    finally:
        with contextlib.suppress(OSError):
            os.unlink(spooled)


def _tell(fobj: Any) -> int | None:
    try:
        return int(fobj.tell())
    except (AttributeError, OSError, ValueError):
        return None


def _spool_mpeg(fobj: Any, start: int, desc: str) -> str | None:
    """Copy ``fobj`` from ``start`` into a temporary ``.mp3`` file if it holds MPEG audio.

    libsndfile recognises MPEG audio without an ID3 tag by the ``.mp3`` file name only, so
    such data decodes from a path but not from memory unless it is given one.

    Returns:
        The temporary file's path, or ``None`` when the data is not MPEG audio.
    """
    try:
        fobj.seek(start)
        head = fobj.read(1 << 16)
        if not isinstance(head, bytes | bytearray) or not _looks_like_mpeg(bytes(head)):
            return None
        fobj.seek(start)
        data = _read_capped(fobj, desc, MAX_STREAM_BYTES)
    except (OSError, ValueError):
        return None
    fd, name = tempfile.mkstemp(suffix=".mp3", prefix="qaudio-")
    with os.fdopen(fd, "wb") as out:
        out.write(data.getbuffer())
    return name


# MPEG audio frame headers: bit rates (kbit/s, index 1..14) by (MPEG-1?, layer), and sample
# rates by version (bits 19-20: 3 = MPEG-1, 2 = MPEG-2, 0 = MPEG-2.5).
_BITRATES = {
    (True, 1): (32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MPEG_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _mpeg_frame(data: bytes, i: int) -> tuple[int, int] | None:
    """The (length, kind) of the MPEG audio frame whose header starts at ``data[i]``."""
    if i + 4 > len(data):
        return None
    h = int.from_bytes(data[i : i + 4], "big")
    version, layer_bits = (h >> 19) & 3, (h >> 17) & 3
    bitrate_index, rate_index, padding = (h >> 12) & 15, (h >> 10) & 3, (h >> 9) & 1
    if h >> 21 != 0x7FF or version == 1 or layer_bits == 0:
        return None
    if bitrate_index in (0, 15) or rate_index == 3:
        return None
    layer, mpeg1 = 4 - layer_bits, version == 3
    bitrate = _BITRATES[(mpeg1, layer)][bitrate_index - 1] * 1000
    rate = _MPEG_RATES[version][rate_index]
    if layer == 1:
        length = (12 * bitrate // rate + padding) * 4
    else:
        length = (144 if mpeg1 or layer == 2 else 72) * bitrate // rate + padding
    return length, h & 0xFFFE0C00  # version, layer and rate must stay the same


def _looks_like_mpeg(head: bytes) -> bool:
    """Whether three consecutive MPEG audio frames start somewhere in ``head``."""
    i = head.find(b"\xff")
    while 0 <= i < len(head) - 4:
        first = _mpeg_frame(head, i)
        if first is not None:
            j, ok = i + first[0], True
            for _ in range(2):
                nxt = _mpeg_frame(head, j)
                if nxt is None or nxt[1] != first[1]:
                    ok = False
                    break
                j += nxt[0]
            if ok:
                return True
        i = head.find(b"\xff", i + 1)
    return False


def _check_header(desc: str, rate: int, channels: int) -> None:
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


def _read_mono(f: sf.SoundFile, desc: str, rate: int, target: int, limit: _Limit) -> np.ndarray:
    """Read all of ``f`` as mono float32 at ``target`` Hz, checking samples as they come.

    Raises:
        AudioTooLongError: More audio than ``limit`` allows (found before resampling it).
        EmptyAudioError: No frames, or too few to make one sample at ``target``.
        InvalidAudioError: NaN, infinite or absurdly large samples.
    """
    stream = None
    frames = max(1, min(BLOCK_FRAMES, BLOCK_BYTES // (4 * f.channels)))
    parts: list[np.ndarray] = []
    n_read = 0
    # Read until an empty block rather than trusting the header's frame count, which is too
    # large for truncated MP3 and WAV files.
    while (block := f.read(frames, dtype="float32", always_2d=True)).shape[0]:
        _check_duration(n_read + block.shape[0], rate, target, limit, desc)
        _check_samples(block, desc, rate, offset=n_read)
        mono = _downmix(block).astype(np.float32, copy=False)
        n_read += mono.shape[0]
        if rate != target and stream is None:  # created once the first block passed the checks
            stream = soxr.ResampleStream(rate, target, 1, dtype="float32", quality=RESAMPLE_QUALITY)
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
    _check_resampled(samples, desc, n_read, rate, target)
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


def _is_samples(source: object) -> bool:
    """Whether ``source`` is plain Python samples: a list, a tuple or a number."""
    return isinstance(source, list | tuple | int | float) and not isinstance(source, bool)


def _array_from_sequence(seq: list[Any] | tuple[Any, ...] | float) -> np.ndarray:
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


def _clip_from_array(
    x: np.ndarray, source_rate: int | None, target: int, limit: _Limit
) -> AudioClip:
    """Validate, downmix and resample an array of samples.

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
    rate = _check_rate(source_rate, "source_rate", desc)
    frames = _as_frames(x, desc)
    _check_duration(frames.shape[0], rate, target, limit, desc)
    floats = _to_float(frames, desc)
    _check_samples(floats, desc, rate, offset=0)
    mono = _downmix(floats).astype(np.float32, copy=False)
    if rate == target:  # never hand back a view of the caller's array
        samples = mono.copy() if np.may_share_memory(mono, x) else mono
    else:
        samples = soxr.resample(mono, rate, target, quality=RESAMPLE_QUALITY)
    _check_resampled(samples, desc, mono.shape[0], rate, target)
    return AudioClip(np.ascontiguousarray(samples), target, desc, rate, frames.shape[1])


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


def _check_samples(frames: np.ndarray, desc: str, rate: int, *, offset: int) -> None:
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


def _check_resampled(samples: np.ndarray, desc: str, n_in: int, rate: int, target: int) -> None:
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


def _check_rate(value: object, name: str, desc: str) -> int:
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
