"""Many servers, one queue: each request goes to whichever server has room.

Every server gets as many worker threads as requests it takes at once (its capacity), and
they all take from one queue, so a fast server simply takes more (work stealing). A
request that fails (refused, reset, a 5xx, a timeout, an answer that is not a chat
completion) goes back to the front of the queue and is sent to another server after a
short backoff; a request finishes once, whatever happens to its other attempts, so
nothing is counted twice. A server that fails twice in a row is set aside and tried
again later (after 2 s, then longer); when every server is set aside the pool fails
with one :class:`~qaudio_local.errors.ServerConnectionError` naming each one's last
error. Answers that the server refuses on their merits (4xx other than 408/429) are not
retried: they would be refused everywhere.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from ..engine.results import Chunk, Result
from ..errors import ServerConnectionError
from .schedule import Slot, pick, slot_free_at
from .servers import ServerCard, ServerSpec, read_card
from .wire import AnswerError, StreamReader, error_message, read_answer

SET_ASIDE_AFTER = 2  # failures in a row
FIRST_PROBE_S = 2.0  # a set-aside server is tried again after this, doubling up to ...
LAST_PROBE_S = 30.0
T = TypeVar("T")
BACKOFF_S = 0.2  # before a failed request is sent again, doubling per attempt up to 2 s


class RequestRefused(ServerConnectionError):
    """A server refused a request on its merits (400, 401, 404, 413, ...)."""


@dataclass
class ServerStats:
    """One server's share of the work so far.

    Attributes:
        name: ``host:port``.
        capacity: Requests it is given at once.
        done: Requests it answered (that were used).
        audio_seconds: Audio in those requests.
        busy_seconds: Wall time its requests took (summed over its slots).
        failures: Requests that failed there (sent again elsewhere).
        set_aside: Whether it is set aside now.
        last_error: Its last failure, if any.
    """

    name: str
    capacity: int
    done: int = 0
    audio_seconds: float = 0.0
    busy_seconds: float = 0.0
    failures: int = 0
    set_aside: bool = False
    last_error: str = ""


class Job:
    """One request: its body, then its chunks and result, or the error that ended it."""

    def __init__(self, body: dict[str, Any], audio_seconds: float, stream: bool) -> None:
        self.body, self.audio_seconds, self.stream = body, audio_seconds, stream
        self.attempts = 0
        self.not_before = 0.0
        self.avoid: str | None = None  # the server it last failed on
        self.cancelled = False
        self.delivered = 0  # chunks already handed over from a stream
        self.server = ""
        self._items: collections.deque[Chunk | Result | BaseException] = collections.deque()
        self._cond = threading.Condition()
        self._ended = False

    def put(self, item: Chunk | Result | BaseException) -> bool:
        """Hand over an item; False once the job has ended (a late or second answer)."""
        with self._cond:
            if self._ended:
                return False
            if isinstance(item, Result | BaseException):
                self._ended = True
            self._items.append(item)
            self._cond.notify_all()
            return True

    @property
    def ended(self) -> bool:
        return self._ended

    def items(self) -> Iterator[Chunk | Result]:
        while True:
            with self._cond:
                while not self._items:
                    self._cond.wait()
                item = self._items.popleft()
            if isinstance(item, BaseException):
                raise item
            yield item
            if isinstance(item, Result):
                return


class _Server:
    def __init__(self, spec: ServerSpec, client: Any, card: ServerCard | None, why: str) -> None:
        self.spec, self.client, self.card = spec, client, card
        cap = spec.capacity or (card.parallel if card else None) or 1
        self.stats = ServerStats(spec.name, cap, last_error=why)
        self.in_a_row = 0
        self.retry_at = 0.0 if card else time.monotonic() + FIRST_PROBE_S
        self.probe_s = FIRST_PROBE_S
        self.stats.set_aside = card is None
        self.rate: float | None = None  # seconds of audio per second, per slot (learnt)
        self.running: dict[int, tuple[float, float]] = {}  # job -> (start, audio seconds)

    def learn(self, audio_seconds: float, elapsed: float) -> None:
        if audio_seconds > 0 and elapsed > 0:
            r = audio_seconds / elapsed
            self.rate = r if self.rate is None else 0.7 * self.rate + 0.3 * r


class ServerPool:
    """Servers sharing one queue of chat-completion requests.

    Args:
        specs: The servers.
        api_key: Sent as ``Authorization: Bearer`` to every server.
        timeout: Seconds a request's answer may take in all, and may stay silent (a
            stalled or dripping server is given up after this, and the request is sent
            elsewhere).
        connect_timeout: Seconds to open a connection.
        on_change: Called (from a worker thread) when a request ends or a server is set
            aside (for progress).

    Raises:
        ServerConnectionError: No server answered ``GET /v1/models``.
    """

    def __init__(
        self,
        specs: list[ServerSpec],
        api_key: str | None = None,
        *,
        timeout: float = 600.0,
        connect_timeout: float = 5.0,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        import httpx2 as httpx  # what the openai SDK and huggingface-hub use

        if not specs:
            raise ValueError("give at least one server")
        self._httpx = httpx
        self.timeout = timeout
        self.on_change = on_change
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        limit = httpx.Timeout(timeout, connect=min(connect_timeout, timeout))
        self._cond = threading.Condition()
        self._queue: collections.deque[Job] = collections.deque()
        self._closed = False
        self.error: ServerConnectionError | None = None
        clients = [httpx.Client(headers=headers, timeout=limit) for _ in specs]
        probes = [self._probe(c, s) for c, s in zip(clients, specs, strict=True)]
        self.servers = [_Server(s, c, *p) for s, c, p in zip(specs, clients, probes, strict=True)]
        cards = [s.card for s in self.servers if s.card]
        if not cards:
            self.close()
            raise self._all_down("no server answered")
        self.card = cards[0]
        self.max_attempts = max(4, 3 * len(self.servers))
        for srv in self.servers:
            for i in range(srv.stats.capacity):
                name = f"qaudio-remote-{srv.spec.name}-{i}"
                threading.Thread(target=self._work, args=(srv,), name=name, daemon=True).start()

    # -- servers -----------------------------------------------------------------------------

    def _probe(self, client: Any, spec: ServerSpec) -> tuple[ServerCard | None, str]:
        """(its card, "") or (None, why not): ``GET /v1/models``, waiting a while for a
        server that is still loading its model (503)."""
        deadline = time.monotonic() + min(self.timeout, 60.0)
        while True:
            try:
                r = client.get(f"{spec.base}/models", timeout=min(10.0, self.timeout))
            except self._httpx.HTTPError as exc:
                return None, _why(exc)
            if r.status_code == 503 and time.monotonic() < deadline:
                time.sleep(0.5)
                continue
            if r.status_code == 401:
                return None, "HTTP 401: it wants an API key: pass --api-key or --api-key-file"
            if r.status_code != 200:
                return None, f"HTTP {r.status_code} on /v1/models: {error_message(r.content)}"
            try:
                return read_card(r.json()), ""
            except ValueError as exc:
                return None, str(exc)

    @property
    def capacity(self) -> int:
        """Requests in flight at once over all servers."""
        return sum(s.stats.capacity for s in self.servers)

    def stats(self) -> list[ServerStats]:
        with self._cond:
            return [ServerStats(**vars(s.stats)) for s in self.servers]

    def _all_down(self, head: str) -> ServerConnectionError:
        lines = "; ".join(f"{s.spec.name}: {s.stats.last_error}" for s in self.servers)
        first = self.servers[0].spec.base
        return ServerConnectionError(
            f"{head} ({lines}); check that the servers run and that --server names their "
            "addresses (e.g. http://HOST:8000), then run the same command again (a "
            "transcription goes on from its journal)",
            url=first,
        )

    # -- requests ----------------------------------------------------------------------------

    def submit(self, body: dict[str, Any], audio_seconds: float, stream: bool = False) -> Job:
        job = Job(body, audio_seconds, stream)
        with self._cond:
            if self.error is not None:
                job.put(self.error)
            elif self._closed:
                job.put(ServerConnectionError("the server pool is closed", url=""))
            else:
                self._queue.append(job)
                self._cond.notify_all()
        return job

    def cancel(self, job: Job) -> None:
        with self._cond:
            job.cancelled = True
            if job in self._queue:
                self._queue.remove(job)
        job.put(ServerConnectionError("cancelled", url=""))

    def _slots(self, srv: _Server, now: float) -> list[Slot]:
        """Every slot of the servers that are up (and ``srv``), for :func:`pick`."""
        known = [s.rate for s in self.servers if s.rate]
        default = sum(known) / len(known) if known else 1.0
        out = []
        for s in self.servers:
            if s.stats.set_aside and s is not srv:
                continue
            rate = s.rate or default
            busy = [slot_free_at(a, b, rate, now) for a, b in s.running.values()]
            free = [now] * max(0, s.stats.capacity - len(busy))
            out += [Slot(s.spec.name, t, rate) for t in [*free, *busy]]
        return out

    def _take(self, srv: _Server) -> Job | None:
        """The next job this server may run (None when the pool closes)."""
        with self._cond:
            while True:
                if self._closed:
                    return None
                now = time.monotonic()
                wait = 1.0
                if srv.stats.set_aside and now < srv.retry_at:
                    wait = srv.retry_at - now
                else:
                    ready = [j for j in self._queue if j.not_before <= now][:64]
                    later = [j.not_before - now for j in self._queue if j.not_before > now]
                    wait = min([wait, *later])
                    jobs = [(j.audio_seconds, j.avoid) for j in ready]
                    i = pick(srv.spec.name, self._slots(srv, now), jobs, now) if ready else None
                    if i is not None:
                        job = ready[i]
                        self._queue.remove(job)
                        srv.running[id(job)] = (now, job.audio_seconds)
                        return job
                    if ready:
                        wait = min(wait, 0.05)  # faster servers will take them; look again
                self._cond.wait(timeout=max(0.01, wait))

    def _work(self, srv: _Server) -> None:
        while True:
            job = self._take(srv)
            if job is None:
                return
            t0 = time.monotonic()
            job.server = srv.spec.name
            try:
                self._send(srv, job)
            except RequestRefused as exc:
                job.put(exc)
                self._ok(srv, job, t0, used=False)
            except Exception as exc:  # anything a server can do wrong: try elsewhere
                self._failed(srv, job, exc)
            else:
                self._ok(srv, job, t0, used=True)
            if self.on_change is not None:
                self.on_change()

    def _send(self, srv: _Server, job: Job) -> None:
        if srv.card is None:  # down when the pool started: ask it what it serves first
            card, why = self._probe(srv.client, srv.spec)
            if card is None:
                raise ConnectionError(why)
            srv.card = card
        url = f"{srv.spec.base}/chat/completions"
        body = {**job.body, "model": srv.card.model}  # each server's own name for it
        t0 = time.monotonic()
        with srv.client.stream("POST", url, json=body) as r:
            if r.status_code != 200:
                raw = r.read()
                status = r.status_code
                why = f"HTTP {status}: {error_message(raw)}"
                if 400 <= status < 500 and status not in (408, 409, 425, 429):
                    hint = " (pass --api-key or --api-key-file)" if status == 401 else ""
                    raise RequestRefused(
                        f"{srv.spec.name} refused the request: {why}{hint}",
                        url=srv.spec.base,
                        status=status,
                    )
                raise ConnectionError(why)
            if not job.stream:
                raw = b"".join(self._within(r.iter_bytes(), t0))
                ms = (time.monotonic() - t0) * 1000
                chunks, result = read_answer(raw, job.audio_seconds, ms)
                if job.cancelled:
                    return
                for c in chunks:
                    job.put(c)
                job.put(result)
                return
            reader = StreamReader(job.audio_seconds)
            sent = 0
            for line in self._within(r.iter_lines(), t0):
                new = reader.feed(line)
                if new and job.attempts == 0 and not job.cancelled:
                    for c in new:  # streamed as they come (a retried stream is sent whole)
                        job.put(c)
                    sent += len(new)
                    job.delivered = sent
                if reader.done or job.cancelled:
                    break
            result = reader.result((time.monotonic() - t0) * 1000)
            if sent == 0:
                for c in reader.chunks:
                    job.put(c)
            job.put(result)

    def _within(self, parts: Iterator[T], t0: float) -> Iterator[T]:
        """``parts`` of an answer, as long as the whole answer takes under the timeout (a
        server that sends a byte now and then never trips the timeout between reads)."""
        for part in parts:
            if time.monotonic() - t0 > self.timeout:
                raise TimeoutError(f"the answer took over {self.timeout:g} s")
            yield part

    def _ok(self, srv: _Server, job: Job, t0: float, *, used: bool) -> None:
        with self._cond:
            srv.running.pop(id(job), None)
            if used:
                srv.learn(job.audio_seconds, time.monotonic() - t0)
            srv.in_a_row = 0
            srv.probe_s = FIRST_PROBE_S
            srv.stats.set_aside = False
            if used and not job.cancelled:
                srv.stats.done += 1
                srv.stats.audio_seconds += job.audio_seconds
            srv.stats.busy_seconds += time.monotonic() - t0
            self._cond.notify_all()

    def _failed(self, srv: _Server, job: Job, exc: BaseException) -> None:
        why = _why(exc)
        with self._cond:
            srv.running.pop(id(job), None)
            srv.stats.failures += 1
            srv.stats.last_error = why
            srv.in_a_row += 1
            if srv.in_a_row >= SET_ASIDE_AFTER:
                srv.stats.set_aside = True
                srv.retry_at = time.monotonic() + srv.probe_s
                srv.probe_s = min(LAST_PROBE_S, srv.probe_s * 2)
            job.attempts += 1
            if job.cancelled or job.ended:
                pass
            elif job.delivered:  # part of the answer was shown: a retry would repeat it
                job.put(
                    ServerConnectionError(f"{srv.spec.name}: the answer broke off: {why}", url="")
                )
            elif all(s.stats.set_aside for s in self.servers):
                self.error = self._all_down("every server failed")
                for waiting in [job, *self._queue]:
                    waiting.put(self.error)
                self._queue.clear()
            elif job.attempts >= self.max_attempts:
                job.put(self._all_down(f"a request failed {job.attempts} times"))
            else:
                job.avoid = srv.spec.name
                job.not_before = time.monotonic() + min(2.0, BACKOFF_S * 2 ** (job.attempts - 1))
                self._queue.appendleft(job)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            for job in self._queue:
                job.put(ServerConnectionError("the server pool is closed", url=""))
            self._queue.clear()
            self._cond.notify_all()
        for srv in getattr(self, "servers", []):
            srv.client.close()

    def __enter__(self) -> ServerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _why(exc: BaseException) -> str:
    """One line for a failed request."""
    import httpx2 as httpx

    if isinstance(exc, httpx.TimeoutException):
        return f"no answer in time ({type(exc).__name__})"
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect ({exc})"
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"the answer broke off ({exc})"
    if isinstance(exc, AnswerError):
        return f"a malformed answer: {exc}"
    return str(exc) or type(exc).__name__
