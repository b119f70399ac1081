"""What the routes share: the server's state, the in-flight count, and the thread bridge
that runs a generation off the event loop."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from ..live.options import LiveLimits
from .inputs import AnswerMemory, InputError

if TYPE_CHECKING:
    from starlette.requests import Request

    from ..engine.model import AudioModel
    from ..models.resident import ResidentModel

_DONE = object()
T = TypeVar("T")


@dataclass
class ServerState:
    """What the routes share.

    Attributes:
        model_id: The name clients use (``model`` field); ``aliases`` are accepted too
            (``qaudio serve`` passes its ``--alias`` names and the registry's names of the
            model's family). Names are compared without regard to case.
        resident: The model, loaded while used and unloaded after ``--keep-alive`` idle
            (:class:`~qaudio_local.models.resident.ResidentModel`); ``None`` until its
            first load has worked (the server is ready).
        parallel: Sequences decoded at once.
        max_queue: Requests that may wait beyond those.
        max_body: Bytes a request body may have.
        allow_remote_audio: Fetch ``audio_url`` parts from http(s).
        load_error: Why loading failed, if it did.
        max_sessions: Live (WebSocket) sessions at once; more upgrades are refused.
        live: What one live session may hold and how long it may last.
        deterministic: Live transcription runs each turn alone from an empty cache (the
            model is loaded with one sequence and flash attention off).
        sessions: Live sessions open now.
        planned: Returns the plan the model was loaded by (``None`` for model files given
            by path); ``GET /v1/status`` shows its arithmetic.
    """

    model_id: str
    aliases: tuple[str, ...] = ()
    resident: ResidentModel | None = None
    parallel: int = 1
    max_queue: int = 16
    max_body: int = 100 * 2**20
    allow_remote_audio: bool = False
    load_error: str | None = None
    max_sessions: int = 8
    live: LiveLimits = field(default_factory=LiveLimits)
    deterministic: bool = False
    sessions: int = 0
    memory: AnswerMemory = field(default_factory=AnswerMemory)
    in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    created: int = field(default_factory=lambda: int(time.time()))
    planned: Callable[[], Any] | None = None


class Busy(Exception):
    pass


class Slot:
    """Holds one of the in-flight places for the life of a request (or a stream), and
    with :meth:`model` the model in use (never unloaded under it)."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        with state.lock:
            if state.in_flight >= state.parallel + state.max_queue:
                raise Busy
            state.in_flight += 1
        self._released = False
        self._holds: ResidentModel | None = None

    async def model(self) -> AudioModel:
        """The model, loaded again first if it was unloaded while idle (the request waits;
        requests arriving meanwhile wait for the same load)."""
        resident = ready(self.state)
        model = await hold(resident)
        self._holds = resident
        return model

    def release(self) -> None:
        if not self._released:
            self._released = True
            with self.state.lock:
                self.state.in_flight -= 1
            if self._holds is not None:
                self._holds.release()
                self._holds = None


async def hold(resident: ResidentModel) -> AudioModel:
    """``resident.acquire()`` off the event loop; a caller cancelled while the model loads
    gives its use back when the load ends (a load is never left held)."""
    job = asyncio.ensure_future(asyncio.to_thread(resident.acquire))
    try:
        return await asyncio.shield(job)
    except asyncio.CancelledError:
        job.add_done_callback(lambda f: _give_back(f, resident))
        raise


def _give_back(job: asyncio.Future[Any], resident: ResidentModel) -> None:
    if not job.cancelled() and job.exception() is None:
        resident.release()


# --- running generations off the event loop ---------------------------------------------------


async def in_thread(work: Callable[[], Iterator[T]]) -> AsyncIterator[T]:
    """Iterate ``work()`` in its own thread; items arrive here as they come."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()  # items, _DONE or the exception
    stop = threading.Event()

    def run() -> None:
        try:
            for item in work():
                loop.call_soon_threadsafe(queue.put_nowait, item)
                if stop.is_set():
                    break
            loop.call_soon_threadsafe(queue.put_nowait, _DONE)
        except BaseException as exc:  # handed to the request, never lost
            loop.call_soon_threadsafe(queue.put_nowait, exc)

    threading.Thread(target=run, name="qaudio-request", daemon=True).start()
    try:
        while True:
            item = await queue.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def sse(obj: Any) -> bytes:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n".encode()


def ready(state: ServerState) -> ResidentModel:
    """The model (loaded or not), or a 503 while the server's first load is under way or
    after it failed."""
    if state.resident is None:
        msg = state.load_error or "the model is still loading; retry in a moment"
        raise InputError(msg, None, 503)
    return state.resident


def check_model(state: ServerState, name: str | None, param: str = "model") -> None:
    """404 unless ``name`` (if given) is the model's id or one of its aliases (any case)."""
    if name and name.casefold() not in {n.casefold() for n in (state.model_id, *state.aliases)}:
        raise InputError(
            f"the model {name!r} does not exist here; this server runs {state.model_id!r} "
            "(GET /v1/models)",
            param,
            404,
        )


async def finish_or_hang_up(
    task: asyncio.Future[Any], request: Request, on_hang_up: Callable[[], object]
) -> None:
    """Wait for ``task``; if the client disconnects first, call ``on_hang_up`` (which
    should make the task end soon) and keep waiting."""
    while not task.done():
        await asyncio.wait({task}, timeout=0.25)
        if not task.done() and await request.is_disconnected():
            on_hang_up()
    await task


def residency(resident: ResidentModel) -> dict[str, Any]:
    """Whether the model is in memory now, and for how long it stays when idle."""
    from ..models.resident import format_keep_alive

    expires = resident.expires_in
    return {
        "model_state": resident.state,  # loaded, loading, unloading, unloaded
        "keep_alive": format_keep_alive(resident.keep_alive),
        "expires_in": None if expires is None else round(expires, 1),
        "in_use": resident.users,
        "loads": resident.loads,
    }
