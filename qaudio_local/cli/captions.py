"""A live session's turns, from the server's Realtime events, and how they are shown.

:class:`LiveTranscript` follows the events (``input_audio_buffer.speech_started`` /
``speech_stopped`` / ``committed``, ``conversation.item.input_audio_transcription.delta`` /
``completed`` / ``failed``, ``response.created`` / ``response.output_text.delta`` /
``.done`` / ``response.done``, ``error``) into :class:`Turn` records keyed by the item's
id, and tells a :class:`View` what changed. Its finished turns become the
:class:`~..transcription.longform.Segment` records the transcript writers take, so the
files match ``qaudio transcribe``'s. :class:`CaptionView` draws on a terminal: the turn
being spoken is redrawn as its text arrives, then its final text is printed with
``[mm:ss.s -> mm:ss.s]``; when stdout is not a terminal only final lines are printed.
"""

from __future__ import annotations

import shutil
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

from ..errors import RealtimeSessionError
from ..transcription.longform import Segment

COMMIT_EMPTY = "input_audio_buffer_commit_empty"  # OpenAI's code for a commit of nothing


@dataclass
class Turn:
    """One user turn: where it is in the session's audio (ms), its text, the answer.

    ``start_ms``/``end_ms`` come from the server (``audio_start_ms``, ``audio_end_ms``),
    or for a turn the client committed, from the audio it had sent by then.
    """

    item_id: str
    start_ms: int | None = None
    end_ms: int | None = None
    heard: bool = False  # speech_started seen (the VAD found speech in it)
    stopped: bool = False  # speech_stopped seen (the VAD ended it)
    committed: bool = False
    partial: str = ""  # transcription deltas so far
    text: str | None = None  # the completed transcript
    error: str | None = None  # why its transcription failed
    response_id: str | None = None
    answer: str = ""
    answer_status: str | None = None  # response.done's status: completed, cancelled, ...

    @property
    def transcribed(self) -> bool:
        return self.text is not None or self.error is not None

    @property
    def settled(self) -> bool:
        """Nothing more to show on the redrawn line: transcribed, or being answered."""
        return self.transcribed or self.response_id is not None

    @property
    def answering(self) -> bool:
        return self.response_id is not None and self.answer_status is None


class View(Protocol):
    """What :class:`LiveTranscript` reports (every method is called on the main thread)."""

    def speaking(self, turn: Turn) -> None: ...
    def partial(self, turn: Turn) -> None: ...
    def final(self, turn: Turn) -> None: ...
    def answer_start(self, turn: Turn) -> None: ...
    def answer_delta(self, turn: Turn, delta: str) -> None: ...
    def answer_end(self, turn: Turn) -> None: ...
    def note(self, message: str) -> None: ...


class NullView:
    """Shows nothing (the benchmark records the events itself)."""

    def speaking(self, turn: Turn) -> None: ...
    def partial(self, turn: Turn) -> None: ...
    def final(self, turn: Turn) -> None: ...
    def answer_start(self, turn: Turn) -> None: ...
    def answer_delta(self, turn: Turn, delta: str) -> None: ...
    def answer_end(self, turn: Turn) -> None: ...
    def note(self, message: str) -> None: ...


class LiveTranscript:
    """The session's turns, updated event by event.

    Args:
        chat: A conversation (answers matter) rather than transcription.
        manual: The client commits every turn (no server VAD): each commit is a turn the
            user meant, answered in a conversation. With the VAD on, a commit of the
            client's (at the end of the input) is answered only if the VAD heard speech
            in it.
        view: Told about every change (``None``: nothing is shown).
    """

    def __init__(self, chat: bool = False, manual: bool = False, view: View | None = None) -> None:
        self.chat, self.manual = chat, manual
        self.view: View = view if view is not None else NullView()
        self.turns: dict[str, Turn] = {}
        self.ready = False  # session.updated seen
        self.update_id: str | None = None  # our session.update's event_id
        self._commits: deque[tuple[str, int]] = deque()  # (event_id, ms sent) not yet answered
        self._lock = threading.Lock()  # commit_sent runs on the sending thread
        self._responses: dict[str, Turn] = {}
        self._last_end = 0

    def commit_sent(self, event_id: str, sent_ms: int) -> None:
        """The client committed the buffer after ``sent_ms`` ms of audio."""
        with self._lock:
            self._commits.append((event_id, sent_ms))

    @property
    def commits_waiting(self) -> int:
        with self._lock:
            return len(self._commits)

    def pending(self) -> int:
        """Commits not yet answered, turns not yet transcribed, answers not yet done."""
        count = self.commits_waiting
        for t in self.turns.values():
            if self.chat:
                unanswered = t.committed and t.response_id is None and self._answerable(t)
                count += t.answering or unanswered or (bool(t.partial) and not t.transcribed)
            else:
                count += (t.stopped or t.committed) and not t.transcribed
        return count

    def _answerable(self, turn: Turn) -> bool:
        return self.manual or turn.heard

    def handle(self, event: dict[str, Any]) -> str | None:
        """Take one server event; return ``"create_response"`` when the client should ask
        for an answer (a conversation turn it committed itself), else ``None``.

        Raises:
            RealtimeSessionError: The server refused the session's settings.
        """
        kind = event.get("type", "")
        if kind == "session.updated":
            self.ready = True
        elif kind == "error":
            self._error(event.get("error") or {})
        elif kind.startswith("input_audio_buffer."):
            return self._buffer(kind, event)
        elif kind.startswith("conversation.item.input_audio_transcription."):
            self._transcription(kind, event)
        elif kind.startswith("response."):
            self._response(kind, event)
        return None

    def _turn(self, item_id: Any) -> Turn:
        key = str(item_id)
        if key not in self.turns:
            self.turns[key] = Turn(key)
        return self.turns[key]

    def _buffer(self, kind: str, event: dict[str, Any]) -> str | None:
        if kind == "input_audio_buffer.speech_started":
            turn = self._turn(event.get("item_id"))
            turn.start_ms, turn.heard = _ms(event.get("audio_start_ms")), True
            self.view.speaking(turn)
        elif kind == "input_audio_buffer.speech_stopped":
            turn = self._turn(event.get("item_id"))
            turn.end_ms, turn.stopped = _ms(event.get("audio_end_ms")), True
            self._last_end = turn.end_ms or self._last_end
            self.view.partial(turn)
        elif kind == "input_audio_buffer.committed":
            return self._committed(str(event.get("item_id")))
        return None

    def _committed(self, item_id: str) -> str | None:
        turn = self.turns.get(item_id)
        ours = (turn is None or not turn.stopped) and self.commits_waiting > 0
        if turn is None:
            turn = self._adopt(item_id)
        turn.committed = True
        if ours:
            with self._lock:
                _, sent_ms = self._commits.popleft()
            if turn.start_ms is None:
                turn.start_ms = self._last_end
            turn.end_ms = sent_ms
            self._last_end = sent_ms
            self.view.partial(turn)
        return "create_response" if ours and self.chat and self._answerable(turn) else None

    def _adopt(self, item_id: str) -> Turn:
        """The turn the VAD opened under another id, now committed by the client."""
        open_turns = [t for t in self.turns.values() if not (t.stopped or t.committed)]
        if open_turns:
            old = open_turns[-1]
            del self.turns[old.item_id]
            old.item_id = item_id
        self.turns[item_id] = open_turns[-1] if open_turns else Turn(item_id)
        return self.turns[item_id]

    def _transcription(self, kind: str, event: dict[str, Any]) -> None:
        turn = self._turn(event.get("item_id"))
        if kind.endswith(".delta"):
            turn.partial += str(event.get("delta") or "")
            if not self.chat:
                self.view.partial(turn)
        elif kind.endswith(".completed"):
            text = str(event.get("transcript") or "")
            turn.text = f"{turn.text} {text}".strip() if turn.text else text  # a turn in pieces
            if not self.chat:
                self.view.final(turn)
        elif kind.endswith(".failed"):
            error = event.get("error") or {}
            turn.error = str(error.get("message") or "the transcription failed")
            self.view.note(f"turn {span(turn)} was not transcribed: {turn.error}")

    def _response(self, kind: str, event: dict[str, Any]) -> None:
        if kind == "response.created":
            rid = str((event.get("response") or {}).get("id"))
            waiting = [
                t
                for t in self.turns.values()
                if t.committed and t.response_id is None and self._answerable(t)
            ]
            turn = waiting[0] if waiting else self._turn(rid)
            turn.response_id, turn.answer, turn.answer_status = rid, "", None
            self._responses[rid] = turn
            self.view.answer_start(turn)
            return
        rid = str(event.get("response_id") or (event.get("response") or {}).get("id"))
        answered = self._responses.get(rid)
        if answered is None:
            return
        turn = answered
        if kind == "response.output_text.delta":
            delta = str(event.get("delta") or "")
            turn.answer += delta
            self.view.answer_delta(turn, delta)
        elif kind == "response.output_text.done":
            turn.answer = str(event.get("text") or turn.answer)
        elif kind == "response.done":
            turn.answer_status = str((event.get("response") or {}).get("status") or "completed")
            self.view.answer_end(turn)

    def _error(self, error: dict[str, Any]) -> None:
        message = str(error.get("message") or "an unnamed error")
        code, cause = error.get("code"), error.get("event_id")
        with self._lock:
            ids = [e for e, _ in self._commits]
            if cause in ids or (code == COMMIT_EMPTY and ids):
                del self._commits[ids.index(cause) if cause in ids else 0]
                return  # nothing was left to commit: not a problem
        if not self.ready or (cause is not None and cause == self.update_id):
            raise RealtimeSessionError(
                f"the server refused the session's settings: {message}", code=code
            )
        self.view.note(f"the server says: {message}")

    def segments(self) -> list[Segment]:
        """Finished turns with text, in the order spoken (answers in a conversation)."""
        done = [t for t in self.turns.values() if (t.answer if self.chat else t.text)]
        done.sort(key=lambda t: t.start_ms if t.start_ms is not None else 1 << 62)
        out = []
        for i, t in enumerate(done):
            start = t.start_ms or 0
            end = max(start, t.end_ms if t.end_ms is not None else start)
            text = t.answer if self.chat else t.text
            out.append(Segment(i, start / 1000, end / 1000, start * 16, end * 16, str(text)))
        return out


def _ms(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def clock(ms: int | None) -> str:
    """``mm:ss.s`` (minutes go past 59: ``75:03.2``); ``...`` when unknown."""
    if ms is None:
        return "..."
    tenths = round(ms / 100)
    minutes, tenths = divmod(tenths, 600)
    return f"{minutes:02d}:{tenths // 10:02d}.{tenths % 10}"


def span(turn: Turn) -> str:
    return f"[{clock(turn.start_ms)} -> {clock(turn.end_ms)}]"


class CaptionView:
    """Captions on ``out``, notes on ``err``.

    On a terminal (``tty``), the newest turn still being transcribed is one line redrawn
    in place as its text arrives; finished turns are printed above it. Otherwise each
    turn is one plain line when it is finished. A conversation's answers stream after a
    ``[mm:ss.s -> mm:ss.s] you`` line (whole, when not on a terminal).
    """

    def __init__(self, out: TextIO, err: TextIO, tty: bool) -> None:
        self.out, self.err, self.tty = out, err, tty
        self._live: Turn | None = None  # the turn on the redrawn line
        self._drawn = False  # a redrawn line is on the screen
        self._answering = False  # an answer is being written on the current line

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def _clear(self) -> None:
        if self._drawn:
            self._write("\r\x1b[K")
            self._drawn = False

    def _draw(self) -> None:
        turn = self._live
        if not self.tty or self._answering or turn is None or turn.settled:
            return
        width = max(20, shutil.get_terminal_size((80, 24)).columns - 1)
        head = f"{span(turn)} "
        text = turn.partial.strip() or "..."
        room = width - len(head)
        if len(text) > room:
            text = "..." + text[-(room - 3) :]
        self._clear()
        self._write(head + text)
        self._drawn = True

    def speaking(self, turn: Turn) -> None:
        self._live = turn
        self._draw()

    def partial(self, turn: Turn) -> None:
        if self._live is None or self._live is turn or self._live.settled:
            self._live = turn
        self._draw()

    def final(self, turn: Turn) -> None:
        self._clear()
        if turn.text and turn.text.strip():
            self._write(f"{span(turn)} {turn.text.strip()}\n")
        if self._live is turn:
            self._live = None
        self._draw()

    def answer_start(self, turn: Turn) -> None:
        self._clear()
        heard = f": {turn.text.strip()}" if turn.text else ""
        self._write(f"{span(turn)} you{heard}\n")
        if self.tty:
            self._write("> ")
            self._answering = True

    def answer_delta(self, turn: Turn, delta: str) -> None:
        if self.tty and self._answering:
            self._write(delta)

    def answer_end(self, turn: Turn) -> None:
        cut = "" if turn.answer_status == "completed" else f" [{turn.answer_status}]"
        if self.tty and self._answering:
            self._write(f"{cut}\n")
        else:
            self._write(f"> {turn.answer.strip()}{cut}\n")
        self._answering = False
        self._draw()

    def note(self, message: str) -> None:
        self._clear()
        if self._answering:
            self._write("\n")
            self._answering = False
        self.err.write(f"{message}\n")
        self.err.flush()
        self._draw()

    def close(self) -> None:
        """Leave the terminal on a fresh line."""
        self._clear()
        if self._answering:
            self._write("\n")
            self._answering = False
