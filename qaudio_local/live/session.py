"""A live session: audio in as it is spoken, turns and their words (or answers) out.

:class:`LiveSession` takes commands from any thread (append audio, commit, clear, update,
respond, cancel) and never blocks on the model. Two threads of its own do the work, in the
order the commands came: the *audio* thread resamples, finds turns (:mod:`.turns`) and says
where speech starts and stops; the *worker* thread runs the model for each turn (:mod:`.work`)
and streams its text. Everything the client should hear goes to one ``emit`` callback as
the dataclasses of :mod:`.events`, in order for each turn.

Bounded: audio held for the session (queued, uncommitted, or waiting for the model) is at
most :attr:`LiveLimits.max_buffer_seconds`; an append beyond it is refused with an error
and dropped, so a client that sends faster than the model keeps up costs no more memory.
:meth:`close` stops the generation running (within one decoding step) and the threads.
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..audio.vad import SegmentEvent, SpeechDropped, SpeechSegment, SpeechStart
from ..config import SAMPLE_RATE
from ..errors import OptionError
from .events import (
    Cleared,
    Committed,
    LiveEvent,
    SessionError,
    SpeechStarted,
    SpeechStopped,
    UserText,
)
from .options import MIN_COMMIT_MS, LiveConfig, LiveLimits
from .turns import PcmInput, Turns
from .work import Responder, Response, Running, Transcriber, Turn

if TYPE_CHECKING:
    from ..engine.model import AudioModel

logger = logging.getLogger("qaudio_local.live")
logger.addHandler(logging.NullHandler())


def new_id(prefix: str) -> str:
    """An id like OpenAI's (``item_...``, ``resp_...``)."""
    return f"{prefix}_{secrets.token_hex(10)}"


class Outbox:
    """Where the session's events go, until it is closed. The session's parts hold this,
    not the session, so that nothing refers back to it: a closed session is freed at
    once (its detector and audio with it), not at the next full garbage collection."""

    def __init__(self, emit: Callable[[LiveEvent], None]) -> None:
        self._emit, self.closed = emit, False
        self._lock = threading.Lock()

    def __call__(self, event: LiveEvent) -> None:
        with self._lock:  # an event being emitted while the session closes comes first
            if not self.closed:
                self._emit(event)

    def close(self) -> None:
        """No event after this returns."""
        with self._lock:
            self.closed = True


class LiveSession:
    """One live session over ``model`` (see the module docstring).

    Args:
        model: The loaded model (shared with other sessions and requests).
        config: The session's configuration; its ``mode`` cannot change later.
        emit: Called with each event, from the session's threads (or the caller's, for an
            error in what it passed); must not block.
        limits: What the session may hold.
        deterministic: Transcribe each turn alone from an empty cache, so that its text is
            exactly ``qaudio transcribe --deterministic``'s (needs a model loaded with
            flash attention off, and one sequence for the guarantee to hold under load).

    Raises:
        OptionError: ``deterministic`` with a model whose flash attention is on.
    """

    def __init__(
        self,
        model: AudioModel,
        config: LiveConfig,
        emit: Callable[[LiveEvent], None],
        *,
        limits: LiveLimits | None = None,
        deterministic: bool = False,
    ) -> None:
        if deterministic and model.options.resolved_flash_attn != "off":
            raise OptionError(
                "deterministic live transcription needs a model loaded with flash attention "
                "off: load_model(..., deterministic=True)",
                option="deterministic",
            )
        self.model, self.config, self.limits = model, config, limits or LiveLimits()
        self._emit = Outbox(emit)
        self._lock = threading.Lock()
        self._closed = False
        self._queued = 0  # 16 kHz samples in the inbox
        self._waiting = 0  # samples of turns waiting for the model
        self._pending = 0  # commands in the inbox
        self._inbox: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._jobs: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self.turns = 0  # committed so far
        self.responses = 0
        self.stopped = 0  # responses cancelled
        # the audio thread's own
        self._applied = config
        self._options = config.transcribe_options()
        self._pcm = PcmInput(config.rate)
        self._turns = Turns(config.turn_detection, self._options.detector)
        self._turn: Turn | None = None
        self._previous: str | None = None
        self._response: Response | None = None  # the latest asked for, until it is done
        # the worker's own
        self._running: Running | None = None
        self._transcriber = Transcriber(model, self._emit, deterministic)
        self._responder = (
            Responder(model, self._emit, config) if config.mode == "conversation" else None
        )
        self._threads = [
            threading.Thread(target=self._audio_loop, name="qaudio-live-audio", daemon=True),
            threading.Thread(target=self._work_loop, name="qaudio-live-work", daemon=True),
        ]
        for t in self._threads:
            t.start()

    # -- commands (any thread) ----------------------------------------------------------------

    def append(self, pcm: bytes, event_id: str | None = None) -> None:
        """Add PCM16 little-endian audio at the session's rate."""
        if len(pcm) % 2:
            self._error(
                "invalid_audio",
                f"the audio is {len(pcm)} bytes, not a whole number of 16-bit samples: send "
                "PCM16 little-endian, two bytes per sample",
                event_id,
                "audio",
            )
            return
        n = len(pcm) // 2 * SAMPLE_RATE // self.config.rate
        limit = self.limits.max_buffer_samples
        with self._lock:
            held = self._queued + self._waiting + self._turns.held
            full = held + n > limit
            if not full:
                self._queued += n
        if full:
            self._error(
                "input_audio_buffer_full",
                f"the session already holds {held / SAMPLE_RATE:.1f} s of audio, the most it "
                f"may hold is {limit / SAMPLE_RATE:.0f} s: this audio was dropped; send it no "
                "faster than real time (or commit turns)",
                event_id,
                "audio",
            )
            return
        if not self._put(("append", pcm, n, event_id), event_id):
            with self._lock:
                self._queued -= n

    def commit(self, event_id: str | None = None) -> None:
        """End the turn now (the client's commit)."""
        self._put(("commit", event_id), event_id)

    def clear(self, event_id: str | None = None) -> None:
        """Drop the audio not yet committed."""
        self._put(("clear", event_id), event_id)

    def update(self, config: LiveConfig, event_id: str | None = None) -> None:
        """Use ``config`` for what comes after (the mode cannot change)."""
        if config.mode != self.config.mode:
            self._error(
                "invalid_value",
                f"this is a {self.config.mode} session; its type cannot change (open another)",
                event_id,
                "session.type",
            )
            return
        self.config = config
        self._put(("update", config), event_id)

    def add_text(self, text: str, event_id: str | None = None) -> None:
        """Conversation: a user message of text (answered with the audio turns)."""
        self._put(("text", text, event_id), event_id)

    def create_response(self, event_id: str | None = None, max_tokens: int | None = None) -> None:
        """Conversation: answer the user's turns now."""
        self._put(("respond", event_id, max_tokens), event_id)

    def cancel_response(self, event_id: str | None = None, response_id: str | None = None) -> None:
        """Conversation: stop the answer being given."""
        self._put(("cancel", event_id, response_id), event_id)

    def close(self) -> None:
        """Stop what runs (the generation within one step) and end the threads; no more
        events are emitted. Does not wait: :meth:`join` does."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            running, turn, resp = self._running, self._turn, self._response
        self._emit.close()
        for r in (running, turn.running if turn else None, resp.running if resp else None):
            if r is not None:
                r.cancel()
        self._inbox.put(("stop",))
        self._jobs.put(("stop",))

    def join(self, timeout: float = 10.0) -> bool:
        """Wait for the threads after :meth:`close`; whether they ended."""
        for t in self._threads:
            t.join(timeout)
        return not any(t.is_alive() for t in self._threads)

    @property
    def held_seconds(self) -> float:
        """Audio the session holds now (queued, uncommitted, waiting for the model)."""
        return (self._queued + self._waiting + self._turns.held) / SAMPLE_RATE

    # -- plumbing ----------------------------------------------------------------------------

    def _error(
        self, code: str, message: str, event_id: str | None, param: str | None = None
    ) -> None:
        self._emit(SessionError(code, message, event_id, param))

    def _fail(self, what: str, exc: Exception) -> None:
        self._emit(SessionError("server_error", f"{what} failed: {exc}", type="server_error"))

    def _put(self, cmd: tuple[Any, ...], event_id: str | None) -> bool:
        with self._lock:
            closed = self._closed
            full = self._pending >= self.limits.max_queued_events
            if not (closed or full):
                self._pending += 1
                self._inbox.put(cmd)
        if full and not closed:
            self._error(
                "session_overloaded",
                f"{self._pending} events are waiting to be handled; this one was dropped: "
                "send events no faster than the server takes them",
                event_id,
            )
        return not (closed or full)

    def _release(self, n: int) -> None:
        with self._lock:
            self._waiting -= n

    def _audio_loop(self) -> None:
        while True:
            cmd = self._inbox.get()
            if cmd[0] == "stop":
                self._turns.close()  # the detector and the audio held, now
                return
            with self._lock:
                self._pending -= 1
                if cmd[0] == "append":
                    self._queued -= cmd[2]
            if self._closed:
                continue
            try:
                getattr(self, f"_do_{cmd[0]}")(*cmd[1:])
            except Exception as exc:  # a bug, never a hung session
                logger.exception("live session: %s failed", cmd[0])
                self._fail(cmd[0], exc)

    def _work_loop(self) -> None:
        while True:
            job = self._jobs.get()
            kind = job[0]
            if kind == "stop":
                if self._responder is not None:
                    self._responder.conv.clear()  # the conversation's audio, now
                return
            try:
                self._work(kind, *job[1:])
            except Exception as exc:
                logger.exception("live session: %s failed", kind)
                self._fail(kind, exc)

    # -- the audio thread ----------------------------------------------------------------------

    def _do_append(self, pcm: bytes, n: int, event_id: str | None) -> None:
        self._on_turns(self._turns.feed(self._pcm.push(pcm)))

    def _on_turns(self, events: list[SegmentEvent]) -> None:
        detection = self._applied.turn_detection
        for e in events:
            if isinstance(e, SpeechStart):
                self._turn = Turn(new_id("item"), e.start)
                self._emit(SpeechStarted(self._turn.item_id, e.start))
                if detection and detection.interrupt_response and self._responder:
                    self._interrupt("turn_detected")
            elif isinstance(e, SpeechSegment):
                turn = self._turn or Turn(new_id("item"), e.start)
                self._turn = turn
                self._take(turn, e)
                if e.final:
                    self._emit(SpeechStopped(turn.item_id, e.end))
                    self._commit_turn(turn, e.end)
            elif isinstance(e, SpeechDropped) and self._turn is not None:
                self._emit(SpeechStopped(self._turn.item_id, e.end))
                self._turn = None

    def _take(self, turn: Turn, piece: SpeechSegment) -> None:
        with self._lock:
            self._waiting += len(piece.audio)
        if self._responder is None:
            self._jobs.put(("piece", turn, piece, self._options))
        else:
            turn.clips.append(piece.audio)

    def _commit_turn(self, turn: Turn, end: int) -> None:
        turn.end = end
        self._emit(Committed(turn.item_id, self._previous, turn.start, end))
        self._previous, self._turn = turn.item_id, None
        self.turns += 1
        if self._responder is None:
            self._jobs.put(("finish", turn))
            return
        self._jobs.put(("user", turn.clips, ""))
        detection = self._applied.turn_detection
        if detection is not None and detection.create_response:
            self._respond(None, None, auto=True)

    def _do_commit(self, event_id: str | None) -> None:
        if self._applied.turn_detection is not None:
            events = self._turns.commit() if self._turns.open else []
            self._on_turns(events)
            if not any(isinstance(e, SpeechSegment) for e in events):
                self._error(
                    "input_audio_buffer_commit_empty",
                    "there is no speech to commit: server VAD commits each turn when its "
                    "speech ends (set turn_detection to null to commit turns yourself)",
                    event_id,
                )
            return
        held_ms = self._turns.held * 1000 // SAMPLE_RATE
        if held_ms < MIN_COMMIT_MS:
            self._error(
                "input_audio_buffer_commit_empty",
                f"buffer too small: a commit needs at least {MIN_COMMIT_MS} ms of audio, "
                f"{held_ms} ms were appended since the last commit or clear",
                event_id,
            )
            return
        pieces = [e for e in self._turns.commit() if isinstance(e, SpeechSegment)]
        turn = Turn(new_id("item"), pieces[0].start)
        for piece in pieces:
            self._take(turn, piece)
        self._commit_turn(turn, pieces[-1].end)

    def _do_clear(self, event_id: str | None) -> None:
        turn, self._turn = self._turn, None
        if turn is not None:
            turn.running.cancel()  # its pieces are dropped
            self._release(sum(len(c) for c in turn.clips))
        self._turns.clear()
        self._emit(Cleared())

    def _do_update(self, config: LiveConfig) -> None:
        old = self._applied
        if config.rate != old.rate:
            self._on_turns(self._turns.feed(self._pcm.flush()))
            self._pcm = PcmInput(config.rate)
        if config.turn_detection != old.turn_detection:
            self._on_turns(self._turns.reconfigure(config.turn_detection))
        self._applied, self._options = config, config.transcribe_options()
        if self._responder is not None:
            self._jobs.put(("configure", config))

    def _do_text(self, text: str, event_id: str | None) -> None:
        if self._responder is None:
            self._error(
                "unsupported_event",
                "a transcription session takes audio only (conversation.item.create is for "
                "conversation sessions)",
                event_id,
            )
            return
        item = new_id("item")
        self._emit(UserText(item, self._previous, text))
        self._previous = item
        self._jobs.put(("user", [], text))

    def _do_respond(self, event_id: str | None, max_tokens: int | None) -> None:
        if self._responder is None:
            self._error(
                "unsupported_event",
                "this session transcribes (intent=transcription): it gives no responses; "
                "open a conversation session (without intent) for answers",
                event_id,
            )
            return
        self._respond(event_id, max_tokens, auto=False)

    def _respond(self, event_id: str | None, max_tokens: int | None, *, auto: bool) -> None:
        resp = Response(new_id("resp"), new_id("item"), max_tokens)
        with self._lock:
            busy = self._response is not None
            if not busy or auto:  # a turn's own answer waits for the one it interrupted
                self._response = resp
        if busy and not auto:
            self._error(
                "conversation_already_has_active_response",
                "the model is answering already: wait for response.done, or send "
                "response.cancel first",
                event_id,
            )
            return
        self.responses += 1
        self._jobs.put(("respond", resp))

    def _interrupt(self, reason: str) -> None:
        with self._lock:
            resp = self._response
        if resp is not None:
            resp.cancel(reason)

    def _do_cancel(self, event_id: str | None, response_id: str | None) -> None:
        with self._lock:
            resp = self._response
        if resp is None or (response_id and response_id != resp.response_id):
            self._error(
                "response_cancel_not_active",
                "there is no response to cancel"
                + (f" with id {response_id!r}" if response_id and resp else ""),
                event_id,
                "response_id" if response_id else None,
            )
            return
        resp.cancel("client_cancelled")

    # -- the worker thread ------------------------------------------------------------------

    def _work(self, kind: str, *args: Any) -> None:
        if kind == "piece":
            turn, piece, options = args
            self._running = turn.running
            try:
                if not self._closed:
                    self._transcriber.piece(turn, piece, options)
            finally:
                self._running = None
                self._release(len(piece.audio))
        elif kind == "finish" and not self._closed:
            self._transcriber.finish(args[0])
        elif kind == "user":
            assert self._responder is not None
            self._responder.add(args[0], args[1])
        elif kind == "respond":
            self._answer(args[0])
        elif kind == "configure":
            assert self._responder is not None
            self._responder.configure(args[0])

    def _answer(self, resp: Response) -> None:
        responder = self._responder
        assert responder is not None
        before = responder.held
        self._running = resp.running
        done = None
        try:
            if not self._closed:
                done = responder.respond(resp)
            if resp.running.stopped:
                self.stopped += 1
        finally:
            self._running = None
            self._release(before - responder.held)
            with self._lock:  # no longer active once the client hears it is done
                if self._response is resp:
                    self._response = None
        if done is not None:
            self._emit(done)
