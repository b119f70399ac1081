"""Audio of any length, read from disk in blocks: mono float32 at 16 kHz, in flat memory.

:func:`load_audio` holds a whole clip in memory, which is right for one question about a
few minutes of audio. Long-form work (hours) reads an :class:`AudioStream` instead: the file
is decoded block by block and resampled as a stream (soxr keeps the timing exact across
blocks), so peak memory does not grow with the duration, and every output sample has an
exact index: sample ``i`` is at ``i / 16000`` seconds of the original.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import soxr

from ..config import SAMPLE_RATE
from ..errors import AudioDecodeError, EmptyAudioError, InvalidAudioError, QAudioError
from .limits import MAX_FILE_CHANNELS, MAX_RATE, RESAMPLE_QUALITY
from .load import open_soundfile
from .native_stderr import quiet_c_stderr
from .sources import describe_source, open_source

BLOCK_SECONDS = 10.0  # decoded per read; memory is a few blocks whatever the duration


@dataclass(frozen=True)
class StreamInfo:
    """What the header says.

    Attributes:
        source: How the audio is named in messages (a path, ``<bytes>``).
        rate: The file's sample rate.
        channels: Its channels (downmixed to mono).
        frames: Frames the header declares (0 if unknown); a damaged file may hold fewer.
        format: libsndfile's name for the container, e.g. ``"WAV"``.
    """

    source: str
    rate: int
    channels: int
    frames: int
    format: str

    @property
    def duration(self) -> float:
        """Seconds the header declares."""
        return self.frames / self.rate if self.rate else 0.0


class AudioStream:
    """An open audio source, read as 16 kHz mono blocks (a context manager).

    Args:
        source: A path, or a whole file's bytes (for stdin).

    Raises:
        AudioFileNotFoundError: No such path.
        AudioDecodeError: Not audio libsndfile reads, or an absurd header.
        EmptyAudioError: No bytes, or no frames.
    """

    def __init__(self, source: Any) -> None:
        self.desc = describe_source(source)
        opened = open_source(source, self.desc)
        self._stack = contextlib.ExitStack()  # opened as load_audio opens (by content)
        self._file = self._stack.enter_context(open_soundfile(opened, self.desc))
        f = self._file
        self.info = StreamInfo(
            self.desc, int(f.samplerate), int(f.channels), max(0, f.frames), f.format
        )
        if not 1 <= self.info.rate <= MAX_RATE or not 1 <= self.info.channels <= MAX_FILE_CHANNELS:
            self.close()
            raise AudioDecodeError(
                f"{self.desc} declares {self.info.rate} Hz and {self.info.channels} channels, "
                "which no recording has; the file is damaged",
                source=self.desc,
            )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._stack.close()

    def __enter__(self) -> AudioStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def blocks(self, seconds: float = BLOCK_SECONDS) -> Iterator[np.ndarray]:
        """16 kHz mono float32 blocks, in order, to the end of the audio.

        Raises:
            AudioDecodeError: The file turns out to be unreadable part way.
            InvalidAudioError: NaN or infinite samples.
            EmptyAudioError: No frames at all.
        """
        f, rate = self._file, self.info.rate
        stream = None
        if rate != SAMPLE_RATE:
            stream = soxr.ResampleStream(
                rate, SAMPLE_RATE, 1, dtype="float32", quality=RESAMPLE_QUALITY
            )
        frames = max(1, int(seconds * rate))
        n_read = 0
        while True:
            try:
                with quiet_c_stderr():
                    block = f.read(frames, dtype="float32", always_2d=True)
            except QAudioError:
                raise
            except (RuntimeError, ValueError, OSError, EOFError) as exc:
                raise AudioDecodeError(
                    f"{self.desc} could not be read past {n_read / rate:.1f} s: {exc}",
                    source=self.desc,
                ) from exc
            if not block.shape[0]:
                break
            mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
            if not np.isfinite(mono).all():
                raise InvalidAudioError(
                    f"{self.desc} has NaN or infinite samples near "
                    f"{(n_read + int(np.argmin(np.isfinite(mono)))) / rate:.2f} s",
                    source=self.desc,
                )
            n_read += mono.shape[0]
            out = mono if stream is None else stream.resample_chunk(mono, last=False)
            if out.size:
                yield np.ascontiguousarray(out, dtype=np.float32)
        if n_read == 0:
            raise EmptyAudioError(f"{self.desc} contains no audio frames", source=self.desc)
        if stream is not None:
            tail = stream.resample_chunk(np.zeros(0, np.float32), last=True)
            if tail.size:
                yield np.ascontiguousarray(tail, dtype=np.float32)


def read_range(source: Any, start: int, end: int) -> np.ndarray:
    """Samples ``start:end`` (16 kHz indices) of ``source``, streamed, for tests and tools."""
    out = []
    pos = 0
    with AudioStream(source) as s:
        for block in s.blocks():
            lo, hi = max(start - pos, 0), min(end - pos, block.size)
            if hi > lo:
                out.append(block[lo:hi])
            pos += block.size
            if pos >= end:
                break
    return np.concatenate(out) if out else np.zeros(0, np.float32)
