"""Chat messages of the API turned into the engine's messages, audio decoded.

Audio comes as ``input_audio`` parts (base64 of a whole file; the declared format is only
a hint: the bytes are decoded by what they are) or ``audio_url`` parts (``data:`` URIs;
remote URLs only when the server allows them). Answers this server gave are remembered
by their text with the exact token ids generated, so that when a client sends a
conversation back with them, the prompt starts with what the KV cache holds and the next
turn costs only what is new (:class:`AnswerMemory`).
"""

from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import threading
import urllib.parse
from typing import Any

import numpy as np

from ..engine.prompt import Message, TokenIds
from .schemas import AudioUrlPart, ChatMessage, InputAudioPart, TextPart

REMOTE_TIMEOUT_S = 20.0


class InputError(ValueError):
    """A request the client must fix; ``param`` names the field (OpenAI's error ``param``)."""

    def __init__(self, message: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.param, self.status = param, status


class AnswerMemory:
    """Recent answers: text -> the token ids they were generated as (bounded)."""

    def __init__(self, size: int = 512) -> None:
        self._items: collections.OrderedDict[str, tuple[int, ...]] = collections.OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    @staticmethod
    def _key(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()

    def remember(self, text: str, tokens: tuple[int, ...]) -> None:
        if not tokens:
            return
        with self._lock:
            self._items[self._key(text)] = tokens
            self._items.move_to_end(self._key(text))
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def recall(self, text: str) -> tuple[int, ...] | None:
        with self._lock:
            return self._items.get(self._key(text))


def _b64(data: str, param: str) -> bytes:
    try:
        return base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputError(f"{param} is not valid base64 ({exc})", param) from exc


def _data_uri(url: str, param: str) -> bytes:
    head, sep, payload = url.partition(",")
    if not sep:
        raise InputError(f"{param} is a data: URI without a comma", param)
    if head.endswith(";base64"):
        return _b64(payload, param)
    return urllib.parse.unquote_to_bytes(payload)


def _remote(url: str, param: str, max_bytes: int) -> bytes:
    import httpx2 as httpx  # what huggingface-hub and openai use here

    try:
        with httpx.stream("GET", url, timeout=REMOTE_TIMEOUT_S, follow_redirects=True) as r:
            r.raise_for_status()
            chunks, size = [], 0
            for chunk in r.iter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise InputError(f"{param}: the audio at {url} is over the size limit", param)
                chunks.append(chunk)
            return b"".join(chunks)
    except httpx.HTTPError as exc:
        raise InputError(f"{param}: could not fetch {url}: {exc}", param) from exc


def decode_audio(data: bytes, param: str) -> np.ndarray:
    """Decode a whole audio file's bytes (any format the front end reads).

    Raises:
        InputError: Empty, or not decodable (with the front end's message).
    """
    from ..audio import load_audio
    from ..errors import AudioError

    if not data:
        raise InputError(f"{param} holds no audio (0 bytes)", param)
    try:
        return load_audio(data)
    except AudioError as exc:
        raise InputError(f"{param}: {exc}", param) from exc


def to_messages(
    messages: list[ChatMessage],
    memory: AnswerMemory,
    *,
    allow_remote: bool,
    max_bytes: int,
) -> tuple[list[Message], int]:
    """The engine's messages for an API conversation, and how many audios it holds.

    Raises:
        InputError: Audio that cannot be fetched or decoded, or a message the chat format
            cannot hold.
    """
    out: list[Message] = []
    n_audio = 0
    for i, msg in enumerate(messages):
        role = "system" if msg.role == "developer" else msg.role
        parts: list[Any] = []
        content = msg.content
        if content is None:
            content = []
        if isinstance(content, str):
            content = [TextPart(type="text", text=content)]
        for j, part in enumerate(content):
            param = f"messages[{i}].content[{j}]"
            if isinstance(part, TextPart):
                parts.append(part.text)
                continue
            if role != "user":
                raise InputError(f"{param}: audio can only be sent in user messages", param)
            if isinstance(part, InputAudioPart):
                raw = _b64(part.input_audio.data, f"{param}.input_audio.data")
            elif isinstance(part, AudioUrlPart):
                url = part.audio_url.url
                if url.startswith("data:"):
                    raw = _data_uri(url, f"{param}.audio_url.url")
                elif url.startswith(("http://", "https://")):
                    if not allow_remote:
                        raise InputError(
                            f"{param}.audio_url.url: this server does not fetch remote audio "
                            "(start it with --allow-remote-audio), send the bytes as "
                            "input_audio or a data: URI",
                            f"{param}.audio_url.url",
                        )
                    raw = _remote(url, f"{param}.audio_url.url", max_bytes)
                else:
                    raise InputError(
                        f"{param}.audio_url.url must be a data: or http(s): URL",
                        f"{param}.audio_url.url",
                    )
            else:  # pragma: no cover - refused earlier by schemas.unsupported
                raise InputError(f"{param}: unsupported content part", param)
            parts.append(decode_audio(raw, param))
            n_audio += 1
        if role == "assistant":
            text = "".join(p for p in parts if isinstance(p, str))
            tokens = memory.recall(text)
            parts = [TokenIds(tokens, text)] if tokens else [text]
        if role == "system" and out and out[-1].role == "system":
            merged = "\n".join(str(p) for p in (*out[-1].parts, *parts))
            out[-1] = Message("system", (merged,))
            continue
        if role == "system" and out:
            raise InputError(
                f"messages[{i}]: a system message must come first", f"messages[{i}].role"
            )
        out.append(Message(role, tuple(parts)))
    if not any(m.role == "user" for m in out):
        raise InputError("the conversation needs at least one user message", "messages")
    return out, n_audio
