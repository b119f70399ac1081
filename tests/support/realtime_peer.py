"""A fake Realtime peer: a WebSocket server on 127.0.0.1 that answers a client the way
OpenAI's Realtime API does (the events' shapes are the SDK's ``types/realtime``), from a
script of turns instead of a model.

For ``qaudio listen``'s own tests only: what is tested there is the client (pacing,
chunks, events followed, captions, files), to which llama.cpp would add nothing. The
peer's "VAD" is the script: a turn starts when the audio received passes its
``start_ms`` and stops ``silence_ms`` after its ``end_ms``, as a server VAD with that
hangover would; a commit of the client's closes the turn open then (or, with no turn
open, is transcribed as ``manual_texts`` says, or refused as empty).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response


@dataclass
class ScriptTurn:
    """One turn the peer "hears": where (ms of session audio), what it says, the answer."""

    start_ms: int
    end_ms: int
    text: str
    answer: str = "an answer"
    item_id: str = ""
    started: bool = False
    stopped: bool = False


@dataclass
class Peer:
    """What the peer saw, for the test to check."""

    turns: list[ScriptTurn]
    key: str | None = "peer-key"
    silence_ms: int = 500
    refuse_status: int | None = None  # answer the upgrade with this HTTP status
    refuse_session: bool = False  # answer session.update with an error event
    close_after: int | None = None  # close the connection after this many appends
    manual_texts: list[str] = field(default_factory=list)  # transcripts of client commits
    event_delay: float = 0.0  # seconds before each transcription event (a slow model)
    path: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    received: list[dict[str, Any]] = field(default_factory=list)
    audio: bytearray = field(default_factory=bytearray)
    rate: int = 24000
    chat: bool = False
    vad: bool = True
    url: str = ""

    def types(self) -> list[str]:
        return [e["type"] for e in self.received]


class _Session:
    """One connection's state and answers."""

    def __init__(self, peer: Peer, ws: ServerConnection) -> None:
        self.peer, self.ws = peer, ws
        self.items = 0
        self.responses = 0
        self.buffer_start = 0  # bytes: where the uncommitted audio begins
        self.last_item = ""
        self.answers: dict[str, str] = {}

    async def send(self, type_: str, **fields: Any) -> None:
        n = len(self.peer.received)
        await self.ws.send(json.dumps({"type": type_, "event_id": f"event_{n}", **fields}))

    def new_item(self) -> str:
        self.items += 1
        self.last_item = f"item_{self.items:03d}"
        return self.last_item

    def pos_ms(self) -> int:
        return len(self.peer.audio) // 2 * 1000 // self.peer.rate

    async def run(self) -> None:
        await self.send("session.created", session={"type": "realtime", "id": "sess_1"})
        appends = 0
        async for message in self.ws:
            event = json.loads(message)
            self.peer.received.append(event)
            kind = event["type"]
            if kind == "session.update":
                await self.update(event)
            elif kind == "input_audio_buffer.append":
                self.peer.audio += base64.b64decode(event["audio"])
                appends += 1
                if self.peer.close_after is not None and appends >= self.peer.close_after:
                    await self.ws.close(1011, "the fake peer gives up")
                    return
                if self.peer.vad:
                    await self.vad()
            elif kind == "input_audio_buffer.commit":
                await self.commit(event)
            elif kind == "response.create":
                await self.respond(self.last_item)

    async def update(self, event: dict[str, Any]) -> None:
        session = event["session"]
        if self.peer.refuse_session:
            error = {
                "type": "invalid_request_error",
                "code": "invalid_value",
                "message": "rate 8000 is not supported",
                "param": "session.audio.input.format.rate",
                "event_id": event.get("event_id"),
            }
            await self.send("error", error=error)
            return
        audio_in = session["audio"]["input"]
        self.peer.rate = audio_in["format"]["rate"]
        self.peer.chat = session["type"] == "realtime"
        self.peer.vad = audio_in.get("turn_detection") is not None
        await self.send("session.updated", session=session)

    async def vad(self) -> None:
        pos = self.pos_ms()
        for turn in self.peer.turns:
            if not turn.started and pos >= turn.start_ms:
                turn.started, turn.item_id = True, self.new_item()
                await self.send(
                    "input_audio_buffer.speech_started",
                    audio_start_ms=turn.start_ms,
                    item_id=turn.item_id,
                )
            if turn.started and not turn.stopped and pos >= turn.end_ms + self.peer.silence_ms:
                turn.stopped = True
                await self.send(
                    "input_audio_buffer.speech_stopped",
                    audio_end_ms=turn.end_ms,
                    item_id=turn.item_id,
                )
                self.buffer_start = len(self.peer.audio)
                await self.finish(turn.item_id, turn.text, turn.answer)

    async def commit(self, event: dict[str, Any]) -> None:
        if len(self.peer.audio) == self.buffer_start:
            error = {
                "type": "invalid_request_error",
                "code": "input_audio_buffer_commit_empty",
                "message": "Error committing input audio buffer: the buffer is empty.",
                "event_id": event.get("event_id"),
            }
            await self.send("error", error=error)
            return
        self.buffer_start = len(self.peer.audio)
        open_turns = [t for t in self.peer.turns if t.started and not t.stopped]
        if open_turns:
            turn = open_turns[0]
            turn.stopped = True
            await self.finish(turn.item_id, turn.text, turn.answer, auto_answer=False)
            return
        text = self.peer.manual_texts.pop(0) if self.peer.manual_texts else ""
        await self.finish(self.new_item(), text, "a manual answer", auto_answer=False)

    async def finish(self, item: str, text: str, answer: str, auto_answer: bool = True) -> None:
        self.last_item, self.answers[item] = item, answer
        await self.send("input_audio_buffer.committed", item_id=item, previous_item_id=None)
        if self.peer.chat:
            if auto_answer:
                await self.respond(item, answer)
            return
        for word in text.split(" ") if text else []:
            await asyncio.sleep(self.peer.event_delay)
            await self.send(
                "conversation.item.input_audio_transcription.delta",
                item_id=item,
                content_index=0,
                delta=word + " ",
            )
        await asyncio.sleep(self.peer.event_delay)
        usage = {"type": "tokens", "input_tokens": 25, "output_tokens": 3, "total_tokens": 28}
        await self.send(
            "conversation.item.input_audio_transcription.completed",
            item_id=item,
            content_index=0,
            transcript=text,
            usage=usage,
        )

    async def respond(self, item: str, answer: str | None = None) -> None:
        answer = answer or self.answers.get(item, "a manual answer")
        self.responses += 1
        rid = f"resp_{self.responses:03d}"
        response = {"id": rid, "object": "realtime.response", "status": "in_progress"}
        await self.send("response.created", response=response)
        where = {"response_id": rid, "item_id": f"out_{rid}", "output_index": 0, "content_index": 0}
        for word in answer.split(" "):
            await self.send("response.output_text.delta", delta=word + " ", **where)
        await self.send("response.output_text.done", text=answer, **where)
        await self.send("response.done", response={**response, "status": "completed"})


@dataclass
class _Running:
    loop: asyncio.AbstractEventLoop
    stop: asyncio.Event


def _refusal(peer: Peer, request: Request) -> Response | None:
    status = peer.refuse_status
    if status is None and peer.key and request.headers.get("Authorization") != f"Bearer {peer.key}":
        status = 401
    if status is None and not request.path.startswith("/v1/realtime"):
        status = 404
    if status is None:
        return None
    body = {"error": {"message": f"refused ({status})", "type": "invalid_request_error"}}
    return Response(
        status,
        HTTPStatus(status).phrase,
        _headers({"Content-Type": "application/json"}),
        json.dumps(body).encode(),
    )


def _headers(values: dict[str, str]) -> Any:
    from websockets.datastructures import Headers

    return Headers(values)


@contextlib.contextmanager
def running(peer: Peer) -> Iterator[Peer]:
    """Serve ``peer`` on a free loopback port for the ``with``/fixture's duration."""
    started = threading.Event()
    state: list[_Running] = []

    async def handler(ws: ServerConnection) -> None:
        peer.path = ws.request.path if ws.request else ""
        peer.headers = dict(ws.request.headers.raw_items()) if ws.request else {}
        with contextlib.suppress(ConnectionClosed):  # the client left: nothing to answer
            await _Session(peer, ws).run()

    async def main() -> None:
        stop = asyncio.Event()
        process = lambda conn, request: _refusal(peer, request)  # noqa: E731
        async with serve(handler, "127.0.0.1", 0, process_request=process) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            peer.url = f"http://127.0.0.1:{port}"
            state.append(_Running(asyncio.get_running_loop(), stop))
            started.set()
            await stop.wait()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    if not started.wait(10):
        raise RuntimeError("the fake Realtime peer did not start")
    try:
        yield peer
    finally:
        state[0].loop.call_soon_threadsafe(state[0].stop.set)
        thread.join(timeout=10)
