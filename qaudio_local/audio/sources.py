"""Where encoded audio comes from: paths, bytes, binary file objects and standard input.

:func:`open_source` checks a source and turns it into something ``soundfile.SoundFile``
can open: a regular file by name, anything without a size to trust (a pipe, a device, an
unseekable file object, standard input) read once into memory up to
:data:`~qaudio_local.audio.limits.MAX_STREAM_BYTES`. :func:`describe_source` names a source
in messages. Arrays of samples are :mod:`.arrays`' business.
"""

from __future__ import annotations

import io
import os
import stat
import sys
from typing import IO, Any, TypeAlias

import numpy as np

from ..errors import (
    AudioDecodeError,
    AudioFileNotFoundError,
    AudioTooLargeError,
    EmptyAudioError,
    InvalidAudioError,
    QAudioError,
)
from .arrays import is_samples
from .limits import MAX_STREAM_BYTES

__all__ = ["AudioSource", "describe_source", "open_source", "read_capped", "read_stdin_audio"]

AudioSource: TypeAlias = (
    str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes] | np.ndarray
)
"""What :func:`~qaudio_local.audio.load_audio` accepts: a path, an encoded file's bytes, a
binary file object, or a numpy array of samples (which then needs ``source_rate``)."""


def read_stdin_audio(max_bytes: int = MAX_STREAM_BYTES) -> io.BytesIO:
    """Read one whole audio file from standard input (``qaudio run -``), at most ``max_bytes``.

    Returns:
        The bytes as a file object named ``"<stdin>"``, for ``load_clip``.

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
    data = read_capped(stream, desc, max_bytes)
    if not data.getbuffer().nbytes:
        raise EmptyAudioError(
            "standard input holds no audio (0 bytes); pipe a whole file in", source=desc
        )
    data.name = desc  # how describe_source names it
    return data


def describe_source(source: object) -> str:
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


def open_source(source: object, desc: str, max_bytes: int = MAX_STREAM_BYTES) -> Any:
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
    hint = " without source_rate" if is_samples(source) else ""
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
            data = read_capped(fh, desc, max_bytes)
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
    return read_capped(fobj, desc, max_bytes)


def read_capped(fobj: Any, desc: str, max_bytes: int) -> io.BytesIO:
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
