"""``GET /v1/realtime``: a live session over a WebSocket, in OpenAI's Realtime protocol.

Before the upgrade is accepted (the API key has been checked by ``RequireKey``): the
server's first load must have worked (503), ``model`` must name it (404, as on the HTTP
routes), ``intent`` may only be ``transcription`` (400), and at most ``--max-sessions``
sessions run at once (429); then the model is loaded again if it was unloaded while idle
(the session holds it until it ends; a load that fails is refused with its error's
status). Each refusal is an HTTP response with OpenAI's error body. A browser's
subprotocols are answered with ``realtime`` when offered (never with the one that carries the key).

Then: ``session.created``, and the session's events as they come. The receiving side
hands each message to :func:`~.client_events.handle`; a sending task turns the session's
events (from its threads, through the event loop) into JSON. A session idle for
``idle_seconds``, or open for ``max_session_seconds``, gets an ``error`` event and is
closed; a client that stops reading its events is closed once they pile up. However the
session ends, its generation is cancelled (within one decoding step) and its threads end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from ...errors import QAudioError
from ...live import LiveSession
from ...live.events import LiveEvent
from ..common import ServerState, check_model, hold
from ..http import KEY_SUBPROTOCOL, deny_websocket, error_body
from ..inputs import InputError
from .client_events import handle
from .server_events import error_event, render, session_event
from .session_config import SessionView

if TYPE_CHECKING:
    from ...engine.model import AudioModel

logger = logging.getLogger("qaudio_local.server")
sessions_log = logging.getLogger("qaudio_local.server.access")  # one line a session, as requests
CREDENTIALS = (KEY_SUBPROTOCOL, "openai-organization.", "openai-project.")
_END = object()


def subprotocol(offered: list[str]) -> str | None:
    """The subprotocol to accept: ``realtime`` if offered, else the first that carries no
    credential, else none."""
    if "realtime" in offered:
        return "realtime"
    return next((p for p in offered if not p.startswith(CREDENTIALS)), None)


async def _refusal(ws: WebSocket, state: ServerState) -> tuple[int, dict[str, Any]] | None:
    """Why the upgrade is refused (status, body), or ``None``."""
    q = ws.query_params
    intent = q.get("intent")
    if intent not in (None, "", "transcription"):
        msg = (
            f"intent {intent!r} is not served: use intent=transcription, or none for a conversation"
        )
        return 400, error_body(msg, "invalid_request_error", "intent", "invalid_value")
    if q.get("call_id"):
        msg = "joining calls (WebRTC, SIP) is not served here: open a session of your own"
        return 400, error_body(msg, "invalid_request_error", "call_id", "unsupported")
    try:
        check_model(state, q.get("model"))
    except InputError as exc:
        return exc.status, error_body(str(exc), "invalid_request_error", "model", "model_not_found")
    if state.resident is None:
        msg = state.load_error or "the model is still loading; retry in a moment"
        return 503, error_body(msg, "server_error", None, "model_not_ready")
    with state.lock:
        if state.sessions >= state.max_sessions:
            msg = (
                f"the server already runs {state.sessions} live sessions, the most it takes "
                "(qaudio serve --max-sessions); retry when one has ended"
            )
            return 429, error_body(msg, "rate_limit_error", None, "session_limit")
        state.sessions += 1
    return None


async def realtime(ws: WebSocket) -> None:
    """The endpoint (see the module docstring)."""
    state: ServerState = ws.app.state.qaudio
    refused = await _refusal(ws, state)
    if refused is not None:
        headers = [(b"retry-after", b"5")] if refused[0] == 429 else []
        await deny_websocket(ws.scope, ws.send, refused[0], refused[1], headers)
        return
    resident = state.resident
    assert resident is not None
    try:
        try:
            model = await hold(resident)  # loaded again if it was unloaded while idle
        except QAudioError as exc:
            body = error_body(str(exc), exc.openai_type, None, exc.openai_code or "model_not_ready")
            await deny_websocket(ws.scope, ws.send, exc.http_status, body, [])
            return
        try:
            await ws.accept(subprotocol=subprotocol(list(ws.scope.get("subprotocols", []))))
            await _serve(ws, state, model)
        finally:
            resident.release()  # the session's use: the idle time starts when it ends
    finally:
        with state.lock:
            state.sessions -= 1


async def _serve(ws: WebSocket, state: ServerState, model: AudioModel) -> None:
    from ...live.session import new_id

    mode = "transcription" if ws.query_params.get("intent") == "transcription" else "conversation"
    view = SessionView(mode, state, new_id("sess"))
    limits = state.live
    loop = asyncio.get_running_loop()
    out: asyncio.Queue[Any] = asyncio.Queue()
    most = 10 * limits.max_queued_events
    jammed = asyncio.Event()

    def put(item: Any) -> None:
        if out.qsize() >= most:
            jammed.set()  # the client does not read: close rather than hold more
        else:
            out.put_nowait(item)

    def emit(event: LiveEvent) -> None:  # from the session's threads
        with contextlib.suppress(RuntimeError):  # the loop has closed
            loop.call_soon_threadsafe(put, event)

    session = LiveSession(
        model, view.config(), emit, limits=limits, deterministic=state.deterministic
    )
    t0 = time.monotonic()
    put(session_event("session.created", view.data))
    sender = asyncio.ensure_future(_send(ws, out))
    why = "client left"
    try:
        why = await _receive(ws, session, view, put, jammed, t0)
    finally:
        session.close()  # cancels its generation now
        put(_END)
        if why != "client left":
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sender, timeout=2)  # the last error event reaches it
                await ws.close(1000 if why != "jammed" else 1008, why[:120])
        sender.cancel()
        with contextlib.suppress(BaseException):
            await sender
        await asyncio.to_thread(session.join, 10)
        sessions_log.info(
            "realtime %s %s ended (%s) after %.1f s: %d turns, %d responses (%d stopped)",
            mode,
            view.data["id"],
            why,
            time.monotonic() - t0,
            session.turns,
            session.responses,
            session.stopped,
        )


async def _receive(
    ws: WebSocket,
    session: LiveSession,
    view: SessionView,
    put: Any,
    jammed: asyncio.Event,
    t0: float,
) -> str:
    """Read client messages until the session ends; why it ended."""
    limits = session.limits
    jam = asyncio.ensure_future(jammed.wait())
    try:
        while True:
            left = t0 + limits.max_session_seconds - time.monotonic()
            wait = min(limits.idle_seconds, max(left, 0.0))
            got = asyncio.ensure_future(ws.receive())
            done, _ = await asyncio.wait({got, jam}, timeout=wait, return_when="FIRST_COMPLETED")
            if got not in done:
                got.cancel()
                with contextlib.suppress(BaseException):
                    await got
                if jam in done:
                    return "jammed"
                expired = time.monotonic() - t0 >= limits.max_session_seconds
                code = "session_expired" if expired else "session_idle_timeout"
                msg = (
                    f"the session reached its limit of {limits.max_session_seconds:.0f} s"
                    if expired
                    else f"nothing was received for {limits.idle_seconds:.0f} s"
                )
                put(error_event(f"{msg}; it is closed (open a new one)", code))
                return code
            try:
                received = got.result()
            except (WebSocketDisconnect, RuntimeError):
                return "client left"
            if received["type"] == "websocket.disconnect":
                return "client left"
            data = received.get("text")
            if data is None:
                data = received.get("bytes") or b""
            try:
                answers = handle(data, session, view, limits.max_event_bytes)
            except Exception as exc:  # a bug: said, logged, and the session goes on
                logger.exception("realtime: an event could not be handled")
                answers = [
                    error_event(
                        f"internal error ({type(exc).__name__})", None, type_="server_error"
                    )
                ]
            for answer in answers:
                put(answer)
    finally:
        jam.cancel()


async def _send(ws: WebSocket, out: asyncio.Queue[Any]) -> None:
    while True:
        item = await out.get()
        if item is _END:
            return
        messages = [item] if isinstance(item, dict) else render(item)
        for m in messages:
            await ws.send_text(json.dumps(m, ensure_ascii=False))
