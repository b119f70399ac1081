"""The wire format: the engine's prompt as an OpenAI chat-completions body (audio as
``input_audio`` parts holding a 16 kHz mono 32-bit float WAV of exactly the samples, so
that a server decoding it hears what the local path would), and an answer read back as
the engine's :class:`~qaudio_local.engine.results.Result`.

Token ids come from the ``id`` of each ``logprobs.content`` entry (llama-server sends it,
and so does ``qaudio serve``), or from tokens named ``token_id:N`` (vLLM with
``--return-tokens-as-token-ids``); other servers leave the ids out, and segments then
carry none."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..config import SAMPLE_RATE
from ..engine.options import SamplingOptions
from ..engine.prompt import Message, TokenIds
from ..engine.results import Chunk, Result, Timings, Usage


class AnswerError(ValueError):
    """A server's answer that is not a chat completion (retried on another server)."""


def wav_base64(samples: np.ndarray) -> str:
    """16 kHz mono IEEE-float WAV of ``samples``, base64: lossless for float32."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.asarray(samples, dtype=np.float32), SAMPLE_RATE, "FLOAT", format="WAV")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def api_messages(
    prompt: str | None,
    audio: Sequence[np.ndarray],
    messages: Sequence[Message] | None,
    system_prompt: str | None,
    default_prompt: str,
) -> list[dict[str, Any]]:
    """The API's messages for a prompt as :meth:`AudioModel.stream` takes it: either one
    user turn (each audio, then the prompt) or a whole conversation."""
    if messages is None:
        text = default_prompt if prompt is None and audio else (prompt or "")
        parts: list[Any] = list(audio)
        if text:
            parts.append(text)
        messages = [Message("user", tuple(parts))]
    out: list[dict[str, Any]] = []
    if system_prompt is not None and not any(m.role == "system" for m in messages):
        out.append({"role": "system", "content": system_prompt})
    for m in messages:
        content: list[dict[str, Any]] = []
        for p in m.parts:
            if isinstance(p, np.ndarray):
                data = {"data": wav_base64(p), "format": "wav"}
                content.append({"type": "input_audio", "input_audio": data})
            elif isinstance(p, TokenIds):
                content.append({"type": "text", "text": p.text})
            else:
                content.append({"type": "text", "text": p})
        if m.role != "user" and all(c["type"] == "text" for c in content):
            out.append({"role": m.role, "content": "".join(c["text"] for c in content)})
        else:
            out.append({"role": m.role, "content": content})
    return out


def request_body(
    model: str, messages: list[dict[str, Any]], sampling: SamplingOptions, stream: bool
) -> dict[str, Any]:
    """The body of ``POST /v1/chat/completions``. Fields beyond OpenAI's (``top_k``,
    ``repetition_penalty``) are sent only when they differ from "off"."""
    s = sampling
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": s.max_tokens,
        "temperature": s.temperature,
        "top_p": s.top_p,
        "seed": s.seed,
        "stream": stream,
    }
    if s.logprobs:
        body["logprobs"] = True
    if s.stop:
        body["stop"] = list(s.stop)
    if s.top_k:
        body["top_k"] = s.top_k
    if s.repetition_penalty != 1.0:
        body["repetition_penalty"] = s.repetition_penalty
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


def _usage(u: Any, audio_seconds: float) -> Usage:
    if not isinstance(u, dict):
        return Usage(audio_seconds, 0, 0, 0)
    details = u.get("prompt_tokens_details") or {}
    return Usage(
        audio_seconds=audio_seconds,
        audio_tokens=int(details.get("audio_tokens") or 0),
        prompt_tokens=int(u.get("prompt_tokens") or 0),
        completion_tokens=int(u.get("completion_tokens") or 0),
        cached_tokens=int(details.get("cached_tokens") or 0),
    )


FINISH = {"stop": "stop", "length": "length", "eos": "stop"}


def _entries(logprobs: Any) -> list[dict[str, Any]]:
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if content is None:
        return []
    if not isinstance(content, list) or not all(isinstance(e, dict) for e in content):
        raise AnswerError("its logprobs are not a list of entries")
    return content


def _chunks(entries: list[dict[str, Any]]) -> list[Chunk]:
    out = []
    for e in entries:
        lp, tid = e.get("logprob"), e.get("id")
        name = str(e.get("token", ""))
        if tid is None and name.startswith("token_id:") and name[9:].isdigit():
            tid = int(name[9:])  # vLLM's --return-tokens-as-token-ids
        out.append(
            Chunk(
                str(e.get("token", "")),
                int(tid) if isinstance(tid, int) else -1,
                float(lp) if isinstance(lp, int | float) else None,
            )
        )
    return out


def _result(text: str, finish: Any, chunks: list[Chunk], usage: Usage, ms: float) -> Result:
    tokens = tuple(c.token for c in chunks)
    lps = tuple(c.logprob for c in chunks if c.logprob is not None)
    n = usage.completion_tokens or len(chunks)
    return Result(
        text=text,
        finish_reason=FINISH.get(str(finish), "stop"),
        usage=usage,
        timings=Timings(0.0, 0.0, ms, n / (ms / 1000) if ms > 0 else 0.0),
        tokens=tokens if tokens and all(t >= 0 for t in tokens) else (),
        logprobs=lps if len(lps) == len(chunks) else (),
    )


def read_answer(raw: bytes, audio_seconds: float, ms: float) -> tuple[list[Chunk], Result]:
    """A whole (``stream: false``) answer as chunks and the result.

    Raises:
        AnswerError: Not JSON, or not a chat completion with one choice.
    """
    try:
        body = json.loads(raw)
        choice = body["choices"][0]
        text = choice["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise AnswerError(f"not a chat completion ({_snippet(raw)})") from exc
    if not isinstance(text, str):
        raise AnswerError("its answer has no text content")
    chunks = _chunks(_entries(choice.get("logprobs")))
    usage = _usage(body.get("usage"), audio_seconds)
    return chunks, _result(text, choice.get("finish_reason"), chunks, usage, ms)


class StreamReader:
    """A streamed answer's server-sent events, one ``data:`` line at a time."""

    def __init__(self, audio_seconds: float) -> None:
        self.audio_seconds = audio_seconds
        self.text: list[str] = []
        self.chunks: list[Chunk] = []
        self.finish: Any = None
        self.usage: Usage | None = None
        self.done = False

    def feed(self, line: str) -> list[Chunk]:
        """The chunks one line adds (none for other lines).

        Raises:
            AnswerError: A data line that is not an answer chunk, or an error event.
        """
        if not line.startswith("data:"):
            return []
        data = line[5:].strip()
        if data == "[DONE]":
            self.done = True
            return []
        try:
            event = json.loads(data)
        except ValueError as exc:
            raise AnswerError(f"a stream event is not JSON ({data[:80]!r})") from exc
        if not isinstance(event, dict):
            raise AnswerError(f"a stream event is not an object ({data[:80]!r})")
        if "error" in event:
            raise AnswerError(f"the server stopped: {_message(event)}")
        if event.get("usage"):
            self.usage = _usage(event["usage"], self.audio_seconds)
        new: list[Chunk] = []
        for choice in event.get("choices") or []:
            delta = choice.get("delta") or {}
            piece = delta.get("content") or ""
            entries = _chunks(_entries(choice.get("logprobs")))
            if entries:
                new += entries
            elif piece:
                new.append(Chunk(piece, -1))
            self.text.append(piece)
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        self.chunks += [c for c in new if c.token >= 0 or c.logprob is not None]
        return new

    def result(self, ms: float) -> Result:
        if not self.done and self.finish is None:
            raise AnswerError("the answer's stream ended before its end")
        usage = self.usage or Usage(self.audio_seconds, 0, 0, len(self.chunks))
        return _result("".join(self.text), self.finish, self.chunks, usage, ms)


def _snippet(raw: bytes) -> str:
    text = raw[:120].decode("utf-8", "replace").strip()
    return repr(text) if text else "an empty body"


def _message(body: Any) -> str:
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict) and err.get("message"):
        return str(err["message"])
    if isinstance(err, str):
        return err
    return str(body)[:200]


def error_message(raw: bytes) -> str:
    """The message of an error answer (OpenAI's ``{"error": {"message"}}``), or its start."""
    try:
        return _message(json.loads(raw))
    except ValueError:
        return _snippet(raw)
