"""Audio front end: decode, downmix to mono, resample to 16 kHz and validate.

Everything the model hears goes through :func:`load_audio` (or :func:`load_clip`, which also
keeps where the audio came from). This module decodes with libsndfile; the other jobs have
modules of their own: the forms a source comes in (:mod:`.sources`: paths, bytes, file
objects, standard input), arrays of samples (:mod:`.arrays`), MP3 data without an ID3 tag
(:mod:`.mpeg`), the checks every input passes (:mod:`.validate`) and the limits they
enforce (:mod:`.limits`, where the constants named below are defined).

Problems are reported as :mod:`qaudio_local.errors` classes, before anything reaches
llama.cpp; no soundfile or libsndfile error escapes, and nothing is printed (libsndfile's
own messages go to the ``qaudio_local.native`` logger).

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
import os
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from ..config import SAMPLE_RATE
from ..errors import AudioDecodeError, EmptyAudioError, InvalidAudioError, QAudioError
from .arrays import array_from_sequence, is_samples, samples_from_array
from .limits import BLOCK_BYTES, BLOCK_FRAMES, MAX_SECONDS, RESAMPLE_QUALITY
from .mpeg import mp3_name
from .native_stderr import quiet_c_stderr
from .sources import AudioSource, describe_source, open_source
from .validate import (
    Limit,
    check_duration,
    check_header,
    check_rate,
    check_resampled,
    check_samples,
    downmix,
    length_limit,
)

__all__ = ["AudioClip", "decode_error", "load_audio", "load_clip"]

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
    target = check_rate(sample_rate, "sample_rate", "<audio>")
    limit = length_limit(max_seconds, target)
    if is_samples(source) and source_rate is not None:
        source = array_from_sequence(source)  # type: ignore[arg-type]
    if isinstance(source, np.ndarray | np.generic):
        samples, rate, channels = samples_from_array(np.asarray(source), source_rate, target, limit)
        return AudioClip(samples, target, "<array>", rate, channels)
    desc = describe_source(source)
    if source_rate is not None:
        raise InvalidAudioError(
            f"source_rate is only for numpy arrays; {desc} is an encoded file that carries its "
            "own sample rate, so drop source_rate",
            source=desc,
        )
    return _decode(open_source(source, desc), desc, target, limit)


# --- decoding with libsndfile -------------------------------------------------------


def _decode(sf_input: Any, desc: str, target: int, limit: Limit) -> AudioClip:
    """Decode an opened source block by block into a clip at ``target`` Hz.

    Raises:
        AudioDecodeError: libsndfile could not open or read it, or its header is absurd.
        AudioTooLongError: It is longer than the limit.
        EmptyAudioError: It holds no frames, or too few to make one sample at ``target``.
        InvalidAudioError: It holds NaN, infinite or absurdly large samples.
    """
    try:
        with open_soundfile(sf_input, desc) as f:
            rate, channels = int(f.samplerate), int(f.channels)
            check_header(desc, rate, channels)
            with quiet_c_stderr():
                samples = _read_mono(f, desc, rate, target, limit)
    except QAudioError:
        raise
    except (RuntimeError, TypeError, ValueError, OSError, EOFError, MemoryError) as exc:
        raise decode_error(desc, exc) from exc
    return AudioClip(samples, target, desc, rate, channels)


def decode_error(desc: str, exc: BaseException) -> AudioDecodeError:
    """The error for a source libsndfile could not open or read (``exc`` says why).

    Its message names the source, libsndfile's reason, the formats this libsndfile reads
    and an ffmpeg command that converts the audio; :mod:`.stream` raises it too.
    """
    return AudioDecodeError(_decode_message(desc, _reason(exc)), source=desc)


def _reason(exc: BaseException) -> str:
    """libsndfile's (or Python's) words for why decoding failed."""
    reason = exc.error_string if isinstance(exc, sf.LibsndfileError) else str(exc)
    if "does not exist" in reason or "not a regular file" in reason:
        # libsndfile's wording when a file's content is not a format it knows
        reason = "not a valid audio file, or an unsupported format or codec"
    return reason


@contextlib.contextmanager
def open_soundfile(sf_input: Any, desc: str) -> Iterator[sf.SoundFile]:
    """Open what :func:`~.sources.open_source` gave with soundfile, recognised by its
    content alone, so that a file's path, its bytes and a file object of it decode the
    same way or are refused the same way (libsndfile would otherwise guess a damaged
    header's format from the file name's extension, for paths only). MPEG audio without an
    ID3 tag, which libsndfile knows by a ``.mp3`` name only, is opened under one.

    Raises:
        AudioDecodeError: libsndfile cannot open it.
    """
    if isinstance(sf_input, str | bytes):  # a regular file: read it as a file object
        try:
            fh = open(sf_input, "rb")  # noqa: SIM115 (closed below, after the yield)
        except OSError as exc:
            raise decode_error(desc, exc) from exc
        with fh, _opened(fh, desc, by_name=os.fsdecode(sf_input)) as f:
            yield f
        return
    with _opened(sf_input, desc) as f:
        yield f


@contextlib.contextmanager
def _opened(fobj: Any, desc: str, by_name: str | None = None) -> Iterator[sf.SoundFile]:
    """Open a file object; MPEG data goes through a ``.mp3`` name (a link to ``by_name``,
    the file it was opened from, else a temporary copy)."""
    start = _tell(fobj)
    try:
        with quiet_c_stderr():
            f = sf.SoundFile(fobj)
    except (RuntimeError, TypeError, ValueError, OSError, EOFError) as exc:
        named = None if start is None else mp3_name(fobj, start, desc, by_name)
        if named is None:
            raise decode_error(desc, exc) from exc
    else:
        with f:
            yield f
        return
    path, temporary = named
    try:
        try:
            with quiet_c_stderr():
                f = sf.SoundFile(path if os.name == "nt" else os.fsencode(path))
        except (RuntimeError, TypeError, ValueError, OSError, EOFError) as exc:
            raise decode_error(desc, exc) from exc
        with f:
            yield f
    finally:
        for name in temporary:  # the link, its folder, or the copy
            with contextlib.suppress(OSError):
                os.rmdir(name) if os.path.isdir(name) else os.unlink(name)


def _tell(fobj: Any) -> int | None:
    try:
        return int(fobj.tell())
    except (AttributeError, OSError, ValueError):
        return None


def _read_mono(f: sf.SoundFile, desc: str, rate: int, target: int, limit: Limit) -> np.ndarray:
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
        check_duration(n_read + block.shape[0], rate, target, limit, desc)
        check_samples(block, desc, rate, offset=n_read)
        mono = downmix(block).astype(np.float32, copy=False)
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
    check_resampled(samples, desc, n_read, rate, target)
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
