"""``RemoteModel``: what the long-form pipeline, ``qaudio run`` and the conversation use of
an :class:`~qaudio_local.engine.model.AudioModel`, answered by a pool of servers.

Requests are independent: each server runs its own, so the long-form pipeline keeps the
pool full even with ``deterministic`` (each server should then be a
``qaudio serve --deterministic``, which runs every request alone from an empty cache).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import DEFAULT_PROMPT, DEFAULT_SYSTEM_PROMPT, SAMPLE_RATE
from ..engine.options import SamplingOptions
from ..engine.prompt import Message, TokenIds
from ..engine.results import Chunk, Generation, Result
from .pool import Job, ServerPool
from .servers import ServerSpec
from .wire import api_messages, request_body

DEFAULT_N_CTX = 8192  # a server that does not say its context (the model's own)


@dataclass(frozen=True)
class RemoteOptions:
    """The part of ``ModelOptions`` the pipeline reads.

    Attributes:
        n_parallel: Requests the pipeline keeps under way: what the servers take at once
            and up to three times as many queued (at most 32 more), so that a server that
            finishes finds the next one queued while the pipeline waits for an earlier
            segment on a slower server.
        resolved_flash_attn: ``"off"``: determinism is each server's (see the module).
        audio_path: ``"remote"`` (journals of local runs are not reused, nor the reverse).
    """

    n_parallel: int
    resolved_flash_attn: str = "off"
    audio_path: str = "remote"


@dataclass(frozen=True)
class _FileInfo:
    path: Path


class RemoteModel:
    """Generations answered by servers; closes the pool when closed.

    Args:
        pool: The servers.
    """

    independent_requests = True  # see the module: requests do not share a cache here
    prompt_format = "chat"  # the server renders its model's own format

    def __init__(self, pool: ServerPool) -> None:
        self.pool = pool
        self.model_id = pool.card.model
        self.options = RemoteOptions(n_parallel=pool.capacity + min(3 * pool.capacity, 32))
        self.model_info = _FileInfo(Path(self.model_id.replace("/", "_")))
        self.projector_info = _FileInfo(Path("remote"))
        self.n_ctx = pool.card.context_length or DEFAULT_N_CTX
        self._last: tuple[int, int] | None = None  # (messages sent, prompt tokens) last time

    def stream(
        self,
        prompt: str | None = None,
        audio: Sequence[np.ndarray] = (),
        *,
        messages: Sequence[Message] | None = None,
        sampling: SamplingOptions | None = None,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        keep_cache: bool = True,
        cold: bool = False,
    ) -> Generation:
        """As :meth:`AudioModel.stream`. ``start()`` queues the request without waiting.
        The answer is streamed as it comes, except with ``keep_cache=False`` (one-off
        prompts: long-form segments), which asks for it whole (a failed request is then
        simply sent again elsewhere). ``cold`` is the servers' business and ignored."""
        sampling = sampling or SamplingOptions()
        system = None if system_prompt == DEFAULT_SYSTEM_PROMPT else system_prompt
        msgs = api_messages(prompt, audio, messages, system, DEFAULT_PROMPT)
        seconds = _audio_seconds(audio, messages)
        body = request_body(self.model_id, msgs, sampling, stream=keep_cache)
        return _remote_generation(self, body, seconds, len(messages or ()))

    def generate(
        self, prompt: str | None = None, audio: Sequence[np.ndarray] = (), **kwargs: Any
    ) -> Result:
        return self.stream(prompt, audio, **kwargs).wait()

    def prompt_tokens(
        self,
        prompt: str | None = None,
        audio: Sequence[np.ndarray] = (),
        *,
        messages: Sequence[Message] | None = None,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
    ) -> int:
        """An estimate (no tokenizer here): the last answer's count for what was sent
        then, plus ~25 tokens per second of new audio and ~1 per 3 characters of text."""
        parts = [p for m in messages or [] for p in m.parts] or [*audio, prompt or ""]
        start_count, known = (0, 0) if self._last is None else self._last
        new = [p for m in (messages or [])[start_count:] for p in m.parts] if messages else parts
        est = known + 20 * (len(messages or [None]) - start_count)
        for p in new:
            if isinstance(p, np.ndarray):
                est += int(p.size / SAMPLE_RATE * 25) + 4
            elif isinstance(p, TokenIds):
                est += len(p.ids)
            else:
                est += len(str(p)) // 3 + 1
        return est

    def clear_cache(self) -> None:
        """Nothing to do: each server keeps its own cache."""

    def close(self) -> None:
        self.pool.close()

    def __enter__(self) -> RemoteModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _audio_seconds(audio: Sequence[np.ndarray], messages: Sequence[Message] | None) -> float:
    arrays = list(audio)
    for m in messages or []:
        arrays += [p for p in m.parts if isinstance(p, np.ndarray)]
    return round(sum(a.size for a in arrays) / SAMPLE_RATE, 3)


def _remote_generation(model: RemoteModel, body: dict[str, Any], seconds: float, n: int) -> Any:
    job: list[Job] = []

    def start() -> None:
        if not job:
            job.append(model.pool.submit(body, seconds, stream=bool(body["stream"])))

    def cancel() -> None:
        if job:
            model.pool.cancel(job[0])

    def items() -> Iterator[Chunk | Result]:
        start()
        for item in job[0].items():
            if isinstance(item, Result) and body["stream"]:
                model._last = (n, item.usage.prompt_tokens + item.usage.completion_tokens)
            yield item

    return Generation(items(), cancel=cancel, start=start)


def open_remote(
    servers: Sequence[str | ServerSpec],
    api_key: str | None = None,
    *,
    timeout: float = 600.0,
    on_change: Callable[[], None] | None = None,
) -> RemoteModel:
    """A :class:`RemoteModel` over ``servers`` (addresses as :func:`parse_server` reads
    them, or specs).

    Raises:
        ValueError: An address that cannot be read.
        ServerConnectionError: No server answered.
    """
    from .servers import parse_server

    specs = [s if isinstance(s, ServerSpec) else parse_server(s) for s in servers]
    return RemoteModel(ServerPool(specs, api_key, timeout=timeout, on_change=on_change))
