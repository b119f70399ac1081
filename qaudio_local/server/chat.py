"""``POST /v1/chat/completions``: messages with text and audio, streamed or whole."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, Union

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from ..engine.options import SamplingOptions
from ..engine.results import Chunk, Generation, Result
from .common import ServerState, Slot, check_model, finish_or_hang_up, in_thread, ready, sse
from .http import error_body
from .inputs import InputError, to_messages
from .schemas import ChatRequest, unsupported

FINISH = {"stop": "stop", "length": "length", "cancelled": "stop"}
Item = Union[Chunk, Result]  # noqa: UP007 (a run-time alias): chunks, then the result


def _sampling(body: ChatRequest, n_ctx: int) -> SamplingOptions:
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    if len(stop) > 4:
        raise InputError("stop: at most 4 stop strings", "stop")
    limit = body.max_completion_tokens or body.max_tokens or max(16, min(1024, n_ctx // 2))
    return SamplingOptions(
        temperature=0.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        seed=(body.seed or 0) % 2**32,
        max_tokens=limit,
        stop=stop,
        logprobs=bool(body.logprobs),
    )


def _usage(r: Result) -> dict[str, Any]:
    u = r.usage
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": {"audio_tokens": u.audio_tokens, "cached_tokens": u.cached_tokens},
    }


def _logprob(c: Chunk) -> dict[str, Any]:
    raw = c.text.encode("utf-8")
    # "id" (the token id, as llama-server sends it) lets a client keep the exact tokens
    return {
        "id": c.token,
        "token": c.text,
        "logprob": c.logprob,
        "bytes": list(raw),
        "top_logprobs": [],
    }


def chat_completions(state: ServerState) -> Callable[..., Coroutine[Any, Any, Response]]:
    """The route, bound to ``state``."""

    async def route(body: ChatRequest, request: Request) -> Response:
        ready(state)  # 503 before the server's first load
        check_model(state, body.model)
        bad = unsupported(body)
        if bad is not None:
            raise InputError(f"{bad[0]}: {bad[1]}", bad[0])
        slot = Slot(state)
        try:
            messages, _ = await to_thread.run_sync(
                lambda: to_messages(
                    body.messages,
                    state.memory,
                    allow_remote=state.allow_remote_audio,
                    max_bytes=state.max_body,
                )
            )
            model = await slot.model()
            gen = model.stream(
                messages=messages,
                sampling=_sampling(body, model.n_ctx),
                cold=state.deterministic,  # alone, from an empty cache: as transcribe's
            )
            items = in_thread(lambda: _items(gen))
            first = await items.__anext__()  # the prompt is checked before anything is sent
        except BaseException:
            slot.release()
            raise
        meta = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time())}
        if body.stream:
            include = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(
                _stream(state, first, items, gen, slot, meta, include),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        try:
            return await _whole(state, request, first, items, gen, meta)
        finally:
            slot.release()

    return route


def _items(gen: Generation) -> Iterator[Item]:
    """A generation's chunks then its result (run in the request's thread)."""
    yield from gen
    yield gen.wait()  # exhausted: the result is set


async def _whole(
    state: ServerState,
    request: Request,
    first: Item,
    items: AsyncIterator[Item],
    gen: Generation,
    meta: dict[str, Any],
) -> Response:
    chunks: list[Chunk] = []
    result: Result | None = None

    async def collect() -> None:
        nonlocal result
        item = first
        while True:
            if isinstance(item, Result):
                result = item
                return
            chunks.append(item)
            item = await items.__anext__()

    await finish_or_hang_up(asyncio.ensure_future(collect()), request, gen.cancel)
    assert result is not None
    state.memory.remember(result.text, result.tokens)
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": result.text, "refusal": None},
        "finish_reason": FINISH[result.finish_reason],
        "logprobs": None,
    }
    if gen_wants_logprobs(chunks):
        choice["logprobs"] = {"content": [_logprob(c) for c in chunks if c.token >= 0]}
    return JSONResponse(
        {
            **meta,
            "object": "chat.completion",
            "model": state.model_id,
            "choices": [choice],
            "usage": _usage(result),
        }
    )


def gen_wants_logprobs(chunks: list[Chunk]) -> bool:
    return any(c.logprob is not None for c in chunks)


async def _stream(
    state: ServerState,
    first: Item,
    items: AsyncIterator[Item],
    gen: Generation,
    slot: Slot,
    meta: dict[str, Any],
    include_usage: bool,
) -> AsyncIterator[bytes]:
    base = {**meta, "object": "chat.completion.chunk", "model": state.model_id}
    extra = {"usage": None} if include_usage else {}

    def chunk(
        delta: dict[str, Any], finish: str | None = None, lp: dict[str, Any] | None = None
    ) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": lp}
        return sse({**base, "choices": [choice], **extra})

    try:
        yield chunk({"role": "assistant", "content": ""})
        item = first
        while not isinstance(item, Result):
            if item.text or item.logprob is not None:
                lp = {"content": [_logprob(item)]} if item.logprob is not None else None
                yield chunk({"content": item.text}, lp=lp)
            item = await items.__anext__()
        state.memory.remember(item.text, item.tokens)
        yield chunk({}, FINISH[item.finish_reason])
        if include_usage:
            yield sse({**base, "choices": [], "usage": _usage(item)})
        yield b"data: [DONE]\n\n"
    except Exception as exc:  # after the headers: tell the client in the stream
        yield sse(error_body(f"the generation failed: {exc}", "server_error"))
    finally:  # the client went away (or the stream ended): stop the sequence
        gen.cancel()
        slot.release()
