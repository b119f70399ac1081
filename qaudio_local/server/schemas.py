"""Request bodies of the OpenAI-compatible API, as pydantic models (validated, not parsed
by hand). Fields OpenAI documents but that change what would be generated, and that this
server does not do, are refused by name (:func:`unsupported`); other unknown fields are
ignored, as OpenAI does."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow")


class TextPart(_Loose):
    type: Literal["text"]
    text: str


class InputAudio(_Loose):
    data: str = Field(description="The audio file, base64")
    format: str | None = Field(default=None, description="A hint: the bytes are what counts")


class InputAudioPart(_Loose):
    type: Literal["input_audio"]
    input_audio: InputAudio


class AudioUrl(_Loose):
    url: str


class AudioUrlPart(_Loose):
    type: Literal["audio_url"]
    audio_url: AudioUrl


class OtherPart(_Loose):
    """Any other part type (``image_url``, ``file``, ...): refused with its name."""

    type: str


Part = Annotated[
    TextPart | InputAudioPart | AudioUrlPart | OtherPart, Field(union_mode="left_to_right")
]


class ChatMessage(_Loose):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[Part] | None = None
    name: str | None = None


class StreamOptions(_Loose):
    include_usage: bool = False


class ChatRequest(_Loose):
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1, le=1 << 20)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=1 << 20)
    seed: int | None = Field(default=None, ge=-(2**63), le=2**64 - 1)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(default=None, ge=1, le=128)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    response_format: dict[str, Any] | None = None
    audio: dict[str, Any] | None = None
    modalities: list[str] | None = None
    user: str | None = None


def unsupported(req: ChatRequest) -> tuple[str, str] | None:
    """``(field, why)`` for the first field that would change the answer and is not done."""
    if req.n is not None and req.n > 1:
        return "n", "only one choice per request is generated (n=1)"
    if req.tools:
        return "tools", "tool calls are not supported by this server"
    if req.functions:
        return "functions", "function calls are not supported by this server"
    if req.response_format and req.response_format.get("type") not in (None, "text"):
        return "response_format", "only text responses are supported (no json_object/json_schema)"
    if req.top_logprobs:
        return "top_logprobs", "only the chosen token's logprob is returned (top_logprobs=0)"
    if req.audio or (req.modalities and any(m != "text" for m in req.modalities)):
        return "modalities", "the model answers in text only; audio output is not supported"
    for msg in req.messages:
        if isinstance(msg.content, list):
            for part in msg.content:
                if isinstance(part, OtherPart):
                    if part.type in ("text", "input_audio", "audio_url"):
                        return "messages", f"a {part.type!r} content part lacks its fields"
                    return "messages", f"content parts of type {part.type!r} are not supported"
        if msg.role in ("tool", "function"):
            return "messages", f"{msg.role!r} messages are not supported (no tool calls)"
    return None


RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
