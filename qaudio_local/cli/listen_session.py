"""One live session: audio from an :class:`~.listen_audio.InputSource` out to the server on
one thread, the server's events in on the caller's, until the input ends and every turn
is finished.

The session is configured first (``session.update``, then the server's
``session.updated``; an ``error`` instead ends it). The sending thread appends each chunk
as the source yields it and commits the buffer when asked (Enter, in manual mode) and
once at the end of the input, so that a turn still open is transcribed and the server's
answer to that commit says it has read all the audio. Ctrl+C once ends the input the same
way and waits for the turns under way; Ctrl+C again stops at once (an answer being
written is cancelled). What finished is in the transcript either way. While the session
runs, Ctrl+C only sets a flag that the loop reads between events (no event is lost to a
KeyboardInterrupt half way through handling it).
"""

from __future__ import annotations

import contextlib
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import RealtimeSessionError
from .captions import LiveTranscript
from .listen_audio import InputSource
from .realtime_client import RealtimeConnection, SessionConfig

EventHook = Callable[[float, dict[str, Any]], None]
SETUP_TIMEOUT = 60.0  # seconds for session.updated
DRAIN_IDLE = 180.0  # after the input ended: give up on a server silent this long


@dataclass(frozen=True)
class SessionResult:
    """How a session ended.

    Attributes:
        sent_ms: Milliseconds of audio sent.
        interrupted: Ctrl+C ended the input early.
        aborted: Ctrl+C a second time: turns under way were left.
        unfinished: Turns (or answers) not finished when the session ended.
    """

    sent_ms: int
    interrupted: bool
    aborted: bool
    unfinished: int


class LiveSession:
    """Streams ``source`` into ``conn`` and follows the events into ``transcript``.

    Args:
        conn: An open connection.
        source: Where the audio comes from.
        config: The session's settings (sent as ``session.update``).
        transcript: Follows the events (and shows them through its view).
        on_event: Called with ``time.monotonic()`` and each event as it arrives.
        commits: Requests to commit now (Enter in manual mode), read between chunks.
        drain_idle: Seconds of silence from the server, after the input ended, before
            the session gives up on the turns left.
        setup_timeout: Seconds to wait for ``session.updated``.
    """

    def __init__(
        self,
        conn: RealtimeConnection,
        source: InputSource,
        config: SessionConfig,
        transcript: LiveTranscript,
        *,
        on_event: EventHook | None = None,
        commits: queue.Queue[object] | None = None,
        drain_idle: float = DRAIN_IDLE,
        setup_timeout: float = SETUP_TIMEOUT,
    ) -> None:
        self.conn, self.source, self.config = conn, source, config
        self.transcript = transcript
        self.on_event = on_event
        self.commits = commits
        self.drain_idle, self.setup_timeout = drain_idle, setup_timeout
        self._stop = threading.Event()  # end the input
        self._input_done = threading.Event()  # the last chunk and the final commit are sent
        self._failure: list[BaseException] = []
        self._sent = 0  # samples sent
        self._interrupted = self._aborted = False  # Ctrl+C once, twice

    @property
    def sent_ms(self) -> int:
        return self._sent * 1000 // self.config.rate

    def run(self) -> SessionResult:
        """Configure, stream, follow; return how it ended.

        Raises:
            RealtimeSessionError: The server refused the settings or closed the session.
            AudioError, AudioDeviceError: The input failed.
        """
        self._setup()
        sender = threading.Thread(target=self._send_audio, name="qaudio-listen-send", daemon=True)
        sender.start()
        try:
            with _ctrl_c(self._interrupt):
                self._follow()
        finally:
            self._stop.set()
            sender.join(timeout=5)
        return SessionResult(
            self.sent_ms, self._interrupted, self._aborted, self.transcript.pending()
        )

    def _interrupt(self, signum: int, frame: Any) -> None:
        """Ctrl+C (SIGINT, on the main thread): only flags, read by :meth:`_follow` between
        events, so that no event is half handled."""
        if self._interrupted:
            self._aborted = True
        self._interrupted = True
        self._stop.set()

    def _handle(self, event: dict[str, Any]) -> None:
        if self.on_event is not None:
            self.on_event(time.monotonic(), event)
        if self.transcript.handle(event) == "create_response":
            self.conn.create_response()

    def _setup(self) -> None:
        self.transcript.update_id = self.conn.update_session(self.config)
        deadline = time.monotonic() + self.setup_timeout
        while not self.transcript.ready:
            event = self.conn.receive(timeout=0.2)
            if event is not None:
                self._handle(event)
            elif time.monotonic() > deadline:
                raise RealtimeSessionError(
                    f"the server at {self.conn.url} did not confirm the session's settings "
                    f"within {self.setup_timeout:.0f} s (no session.updated event)"
                )

    def _follow(self) -> None:
        """Take events until the input has ended and nothing is under way (or Ctrl+C twice)."""
        last = time.monotonic()
        noted = False
        while True:
            if self._failure:
                raise self._failure[0]
            if self._aborted:
                self._cancel_answers()
                return
            if self._interrupted and not noted:
                noted = True
                waiting = self.transcript.pending()
                self.transcript.view.note(
                    f"stopping: finishing {waiting} turn(s) under way (Ctrl+C again to quit now)"
                )
            if self._input_done.is_set() and self.transcript.pending() == 0:
                return
            event = self.conn.receive(timeout=0.1)
            now = time.monotonic()
            if event is not None:
                last = now
                self._handle(event)
            elif self._input_done.is_set() and now - last > self.drain_idle:
                self.transcript.view.note(
                    f"the server sent nothing for {self.drain_idle:.0f} s; "
                    f"{self.transcript.pending()} turn(s) were left unfinished"
                )
                return

    def _send_audio(self) -> None:
        """The sending thread: every chunk, commits when asked, one commit at the end."""
        try:
            for chunk in self.source.chunks(self._stop):
                self.conn.append(chunk)
                self._sent += len(chunk) // 2
                if self.commits is not None and _drain(self.commits):
                    self._commit()
            self._commit()
        except BaseException as exc:
            self._failure.append(exc)
        finally:
            self._input_done.set()

    def _commit(self) -> None:
        if self._sent == 0:
            return
        event_id = self.conn.new_id("input_audio_buffer.commit")
        self.transcript.commit_sent(event_id, self.sent_ms)  # before its answer can come
        self.conn.commit(event_id)

    def _cancel_answers(self) -> None:
        if any(t.answering for t in self.transcript.turns.values()):
            with contextlib.suppress(RealtimeSessionError):
                self.conn.cancel_response()


@contextlib.contextmanager
def _ctrl_c(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """``handler`` for SIGINT while the block runs (on the main thread; elsewhere there is
    no Ctrl+C to take)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def _drain(requests: queue.Queue[object]) -> bool:
    """Whether any request is waiting (all of them are taken)."""
    found = False
    while True:
        try:
            requests.get_nowait()
        except queue.Empty:
            return found
        found = True
