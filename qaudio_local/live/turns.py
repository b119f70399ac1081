"""The session's audio as it arrives: PCM16 in, 16 kHz samples and turn boundaries out.

:class:`PcmInput` turns little-endian PCM16 at the client's rate into the model's 16 kHz
float32 with a streaming soxr resampler: the output does not depend on how the input was
chunked, and equals what ``qaudio transcribe`` reads from a PCM16 file at that rate, so
that every sample has an exact index in the session.

:class:`Turns` finds the turns in those samples. With server VAD it is the long-form path's
:class:`~qaudio_local.audio.vad.Segmenter` run incrementally (the same detector, the same
cuts of at most 30 s in pauses), its positions shifted to the session's; without, the
client's commit ends a turn, and a committed turn over 30 s is cut by the same code (every
frame counts as speech, so the cut lands in the quietest pause by level).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from ..audio.vad import (
    FRAME,
    Segmenter,
    SegmentEvent,
    SpeechDropped,
    SpeechSegment,
    SpeechStart,
    VadOptions,
    make_vad,
)
from ..config import SAMPLE_RATE

if TYPE_CHECKING:
    from .options import TurnDetection


class PcmInput:
    """PCM16 little-endian mono at ``rate`` -> 16 kHz float32, streamed.

    Attributes:
        rate: The client's sample rate.
        produced: 16 kHz samples handed out so far.
    """

    def __init__(self, rate: int) -> None:
        import soxr

        from ..audio.limits import RESAMPLE_QUALITY

        self.rate = rate
        self.produced = 0
        self._stream = None
        if rate != SAMPLE_RATE:
            q = RESAMPLE_QUALITY
            self._stream = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality=q)

    def push(self, pcm: bytes) -> np.ndarray:
        """The 16 kHz samples ``pcm`` completes (the resampler holds back a few ms).

        Raises:
            ValueError: An odd number of bytes (PCM16 has two per sample).
        """
        if len(pcm) % 2:
            raise ValueError(f"{len(pcm)} bytes is not a whole number of 16-bit samples")
        x = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0  # as libsndfile reads
        out = x if self._stream is None else self._stream.resample_chunk(x, last=False)
        self.produced += len(out)
        return np.ascontiguousarray(out, dtype=np.float32)

    def flush(self) -> np.ndarray:
        """What the resampler still holds (before the rate changes)."""
        if self._stream is None:
            return np.zeros(0, np.float32)
        out = self._stream.resample_chunk(np.zeros(0, np.float32), last=True)
        self.produced += len(out)
        return np.ascontiguousarray(out, dtype=np.float32)


class AlwaysSpeech:
    """A detector that hears speech in every frame: a committed turn is kept whole."""

    name = "all"

    def probs(self, frames: np.ndarray) -> np.ndarray:
        return np.ones(len(frames), np.float32)


def _shift(event: SegmentEvent, by: int) -> SegmentEvent:
    if isinstance(event, SpeechSegment):
        return dataclasses.replace(event, start=event.start + by, end=event.end + by)
    if isinstance(event, SpeechDropped):
        return SpeechDropped(event.start + by, event.end + by)
    return SpeechStart(event.start + by)


class Turns:
    """Turn boundaries over the session's 16 kHz audio (positions in the session's samples).

    Args:
        detection: Server VAD settings, or ``None`` for turns the client commits.
        vad: The detector for server VAD (``make_vad``'s kinds).
    """

    def __init__(self, detection: TurnDetection | None, vad: str = "auto") -> None:
        self.detection = detection
        self.vad = vad
        self.position = 0  # samples seen
        self._origin = 0  # the session sample of the segmenter's (or the buffer's) sample 0
        self._segmenter = self._new_segmenter()
        self._buffer: list[np.ndarray] = []  # manual: the uncommitted audio
        self.held = 0  # manual: its samples

    def _new_segmenter(self) -> Segmenter | None:
        self._origin = self.position
        if self.detection is None:
            return None
        return Segmenter(make_vad(self.vad), self.detection.vad_options())

    @property
    def open(self) -> bool:
        """Speech is open (server VAD) or audio is waiting for a commit (manual)."""
        if self._segmenter is not None:
            return self._segmenter.speaking
        return self.held > 0

    def feed(self, x: np.ndarray) -> list[SegmentEvent]:
        """The next samples; the turn events they complete, in order."""
        self.position += len(x)
        if self._segmenter is None:
            if len(x):
                self._buffer.append(x)
                self.held += len(x)
            return []
        return [_shift(e, self._origin) for e in self._segmenter.feed_events(x)]

    def commit(self) -> list[SegmentEvent]:
        """End the turn now: the open stretch's segment (server VAD), or the buffer cut in
        pieces of at most 30 s (manual); nothing when nothing is open."""
        if self._segmenter is not None:
            return [_shift(e, self._origin) for e in self._segmenter.finish_events()]
        if not self.held:
            return []
        audio = np.concatenate(self._buffer)
        start = self.position - self.held
        self._buffer, self.held = [], 0
        # every frame is speech: one stretch from the first sample, cut in the quietest
        # pauses; padding of a frame reaches past the last whole frame to the very end
        cutter = Segmenter(AlwaysSpeech(), VadOptions(min_speech_s=0, pad_s=FRAME / SAMPLE_RATE))
        pieces = cutter.feed(audio) + cutter.finish()
        return [_shift(p, start) for p in pieces]

    def clear(self) -> None:
        """Drop the open turn (its audio is gone; detection goes on from here)."""
        if self._segmenter is not None:
            self._segmenter.finish_events()
        self._buffer, self.held = [], 0

    def close(self) -> None:
        """Let go of the detector and the audio (the session has ended)."""
        self._segmenter, self.detection = None, None
        self._buffer, self.held = [], 0

    def reconfigure(self, detection: TurnDetection | None) -> list[SegmentEvent]:
        """Use other settings from now on. The open turn ends first, as by :meth:`commit`
        (server VAD); audio waiting for a commit goes to the new detector (manual)."""
        events = self.commit() if self._segmenter is not None else []
        buffered = np.concatenate(self._buffer) if self._buffer else np.zeros(0, np.float32)
        self._buffer, self.held = [], 0
        self.detection = detection
        self.position -= len(buffered)
        self._segmenter = self._new_segmenter()
        return events + self.feed(buffered)
