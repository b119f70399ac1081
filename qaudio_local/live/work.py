"""What a live session asks of the model: a turn's words, or an answer to it.

Both run in the session's worker thread, one thing at a time, and stream their text as
it decodes. :class:`Transcriber` gives each piece of a turn (at most 30 s) the
instruction and sampling of ``qaudio transcribe`` (:class:`TranscribeOptions`), detects
the language on the first turn when none is given, as the long-form path does, and joins
the pieces of a turn as its text files do. :class:`Responder` is a
:class:`~qaudio_local.chat.Conversation`: each user turn is audio (and text), each answer
is kept as the tokens generated, so the next turn's prompt starts with cells the engine
already holds and costs only its own audio and text.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from ..chat import Conversation
from ..config import SAMPLE_RATE
from ..engine.results import Generation
from ..transcription import detect_language
from ..transcription.writers import clean
from .events import (
    LiveEvent,
    ResponseCreated,
    ResponseDelta,
    ResponseDone,
    SessionError,
    TranscriptCompleted,
    TranscriptDelta,
    TranscriptFailed,
    TurnUsage,
)

if TYPE_CHECKING:
    from ..audio.vad import SpeechSegment
    from ..engine.model import AudioModel
    from ..transcription import TranscribeOptions
    from .options import LiveConfig

Emit = Callable[[LiveEvent], None]


class Running:
    """The generation running now, so that another thread can stop it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._gen: Generation | None = None
        self._stopped = False

    def set(self, gen: Generation | None) -> None:
        with self._lock:
            self._gen = gen
            stop = self._stopped and gen is not None
        if stop:
            gen.cancel()  # type: ignore[union-attr]

    def cancel(self) -> None:
        """Stop it (within one decoding step); one started later is stopped at once."""
        with self._lock:
            self._stopped = True
            gen = self._gen
        if gen is not None:
            gen.cancel()

    @property
    def stopped(self) -> bool:
        return self._stopped


@dataclass(eq=False)
class Turn:
    """A user turn: its item id, bounds, and (transcription) the text of its pieces."""

    item_id: str
    start: int
    end: int = 0
    clips: list[np.ndarray] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    usage: TurnUsage = field(default_factory=TurnUsage)
    failure: TranscriptFailed | None = None
    shown: bool = False  # a delta of it was sent
    running: Running = field(default_factory=Running)  # cancelled: the turn was cleared


@dataclass(eq=False)
class Response:
    """An answer: its ids, its limit, and who stopped it (``reason``)."""

    response_id: str
    item_id: str
    max_tokens: int | None = None
    reason: str | None = None
    running: Running = field(default_factory=Running)

    def cancel(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self.running.cancel()


class Edges:
    """A piece's text as deltas without the spaces at its two ends (``str.strip``'s);
    ``sep`` goes before its first text (a space between the pieces of a turn)."""

    def __init__(self, sep: str) -> None:
        self.sep, self.started, self.held = sep, False, ""

    def feed(self, text: str) -> str:
        if not self.started:
            text = text.lstrip()
        body = self.held + text
        shown = body.rstrip()
        self.held = body[len(shown) :]
        if not shown:
            return ""
        out = shown if self.started else self.sep + shown
        self.started = True
        return out


class Transcriber:
    """Each turn's words (see the module docstring).

    Args:
        model: The loaded model.
        emit: Where events go.
        deterministic: Each request starts alone from an empty cache (``cold``), as
            ``qaudio transcribe --deterministic`` runs each segment.
    """

    def __init__(self, model: AudioModel, emit: Emit, deterministic: bool) -> None:
        self.model, self.emit, self.deterministic = model, emit, deterministic
        self.detected: str | None = None

    def piece(self, turn: Turn, piece: SpeechSegment, options: TranscribeOptions) -> None:
        """Transcribe one piece of ``turn``, streaming its text."""
        if turn.running.stopped or turn.failure is not None:
            return
        language = options.language
        if language is None:
            if self.detected is None:
                self.detected = detect_language(
                    self.model, piece.audio, keep_cache=False, cold=self.deterministic
                )
            language = self.detected
        gen = self.model.stream(
            options.instruction(language),
            [piece.audio],
            sampling=options.sampling_for(len(piece.audio) / SAMPLE_RATE),
            keep_cache=False,
            cold=self.deterministic,
        )
        turn.running.set(gen)
        edges = Edges(" " if turn.shown else "")
        try:
            for chunk in gen:
                delta = edges.feed(chunk.text)
                if delta:
                    turn.shown = True
                    self.emit(TranscriptDelta(turn.item_id, delta))
        except Exception as exc:
            turn.failure = TranscriptFailed(turn.item_id, "transcription_failed", str(exc))
            return
        finally:
            turn.running.set(None)
        if gen.result is not None:
            turn.texts.append(clean(options.segment_text(gen.result)))
            turn.usage = turn.usage.plus(gen.result.usage)

    def finish(self, turn: Turn) -> None:
        """The turn's whole text (once its pieces are done), or why it failed."""
        if turn.running.stopped:
            return  # cleared: the client dropped it
        if turn.failure is not None:
            self.emit(turn.failure)
            return
        text = " ".join(t for t in turn.texts if t)
        self.emit(TranscriptCompleted(turn.item_id, text, turn.usage))


class Responder:
    """The model's answers to the user's turns, in one conversation (see the module
    docstring)."""

    def __init__(self, model: AudioModel, emit: Emit, config: LiveConfig) -> None:
        self.model, self.emit = model, emit
        self.conv = Conversation(model, system=config.instructions)
        self.configure(config)
        self.clips: list[np.ndarray] = []  # user audio not yet answered
        self.texts: list[str] = []  # user text not yet answered

    def configure(self, config: LiveConfig) -> None:
        self.conv.system = config.instructions
        self.max_tokens = config.max_output_tokens

    @property
    def held(self) -> int:
        """Samples of user audio not yet answered."""
        return sum(len(c) for c in self.clips)

    def add(self, clips: Sequence[np.ndarray] = (), text: str = "") -> None:
        self.clips += clips
        if text:
            self.texts.append(text)

    def _question(self) -> bool:
        """Put what the user said since the last answer into the conversation; whether
        there is a user turn to answer."""
        conv = self.conv
        if self.clips or self.texts:
            clips, text = list(self.clips), "\n".join(self.texts)
            self.clips, self.texts = [], []
            if conv.turns and conv.turns[-1].role == "user":  # not answered: one turn
                last = conv.turns.pop()
                clips = [*(c.samples for c in last.clips), *clips]
                text = "\n".join(t for t in (last.text, text) if t)
            conv.add(text, clips)
        return bool(conv.turns) and conv.turns[-1].role == "user"

    def respond(self, resp: Response) -> ResponseDone | None:
        """Answer the user's turn(s), streaming the text; the closing event (for the
        caller to send once it has marked the response done), or ``None`` when there was
        nothing to answer (an error was sent)."""
        if not self._question():
            self.emit(
                SessionError(
                    "response_create_empty",
                    "there is nothing to answer: commit a user turn (or add a text item) first",
                )
            )
            return None
        self.emit(ResponseCreated(resp.response_id, resp.item_id))
        limit = resp.max_tokens or self.max_tokens or self.model.n_ctx
        self.conv.sampling = replace(self.conv.sampling, max_tokens=limit)
        texts: list[str] = []
        try:
            gen = self.conv.reply()
            resp.running.set(gen)
            for chunk in gen:
                if chunk.text:
                    texts.append(chunk.text)
                    self.emit(ResponseDelta(resp.response_id, resp.item_id, chunk.text))
        except Exception as exc:
            text = "".join(texts)
            return ResponseDone(resp.response_id, resp.item_id, text, "failed", error=str(exc))
        finally:
            resp.running.set(None)
        return self._done(resp, gen, "".join(texts))

    def _done(self, resp: Response, gen: Generation, text: str) -> ResponseDone:
        r = gen.result
        if r is None or r.finish_reason == "cancelled":
            status, reason = "cancelled", resp.reason or "client_cancelled"
        elif r.finish_reason == "length":
            status, reason = "incomplete", "max_output_tokens"
        else:
            status, reason = "completed", None
        usage = r.usage if r is not None else None
        return ResponseDone(resp.response_id, resp.item_id, text, status, reason, usage)
