"""The Qwen2-Audio chat format.

    <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n
    <|im_start|>user\\nAudio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\\n{text}<|im_end|>\\n
    <|im_start|>assistant\\n

A system turn is added when the conversation has none; audios are numbered
across the whole conversation; a user turn with only audio is a voice chat turn.
The audio placeholder is written as a media marker that the runtime replaces
with ``<|audio_bos|>`` + audio embeddings + ``<|audio_eos|>``. An assistant turn may hold
the exact token ids the model generated (:class:`TokenIds`): they are fed as they were,
not re-tokenized from the text, so that the next turn's prompt starts with exactly what
the KV cache already holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..config import DEFAULT_SYSTEM_PROMPT
from ..errors import InvalidAudioError, OptionError

ROLES = ("system", "user", "assistant")
TOKENS_MARKER = "<|qaudio:token-ids|>"  # where a TokenIds run goes in the rendered text


@dataclass(frozen=True)
class TokenIds:
    """An assistant answer as the model generated it: its token ids, and their text.

    Attributes:
        ids: The token ids, fed verbatim.
        text: Their text (for display, saving, and the mtmd path, which re-tokenizes).
    """

    ids: tuple[int, ...]
    text: str = ""


@dataclass(frozen=True)
class Message:
    """One chat turn.

    Attributes:
        role: ``"system"``, ``"user"`` or ``"assistant"``.
        parts: Text strings and audio (mono float32 arrays at 16 kHz), in order.
    """

    role: str
    parts: tuple[str | np.ndarray | TokenIds, ...]

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r}; use one of {', '.join(ROLES)}")
        for part in self.parts:
            if not isinstance(part, str | np.ndarray | TokenIds):
                raise InvalidAudioError(
                    f"a message part must be text (str) or audio (a 1-D float32 numpy array "
                    f"of 16 kHz samples), not {type(part).__name__}; "
                    "qaudio_local.load_audio() reads files, bytes and lists of samples",
                    source="<message>",
                )
        if self.role != "user" and any(isinstance(p, np.ndarray) for p in self.parts):
            raise ValueError(f"audio can only appear in user turns, not in a {self.role} turn")
        if self.role != "assistant" and any(isinstance(p, TokenIds) for p in self.parts):
            raise ValueError("token ids can only appear in assistant turns")


def user(*parts: str | np.ndarray) -> Message:
    """A user turn from text and audio parts."""
    return Message("user", tuple(parts))


@dataclass(frozen=True)
class RenderedPrompt:
    """A prompt ready for tokenization.

    Attributes:
        text: The prompt, with one media marker per audio and one :data:`TOKENS_MARKER`
            per token-id run.
        audios: The audio arrays, in marker order.
        token_runs: The token-id runs, in marker order.
    """

    text: str
    audios: tuple[np.ndarray, ...]
    token_runs: tuple[TokenIds, ...] = ()


def render_base(messages: Sequence[Message], marker: str) -> RenderedPrompt:
    """Render one user turn in the base model's format: each audio, then the text.

    Qwen2-Audio-7B (the base model) takes no chat template: its prompt is
    ``<|audio_bos|><|AUDIO|><|audio_eos|>`` and a task prompt such as "Detect the language
    and recognize the speech: <|en|>", as its model card and the official processor use.

    Raises:
        OptionError: More than one turn, a system or assistant turn (it is not a chat model).
        ValueError: A text part contains the media marker.
    """
    if len(messages) != 1 or messages[0].role != "user":
        raise OptionError(
            "the base model (Qwen2-Audio-7B) is not a chat model: it takes one turn of audio "
            "and a task prompt, without system or earlier turns; use "
            "qwen2-audio-7b-instruct to chat",
            option="--model",
        )
    out: list[str] = []
    audios: list[np.ndarray] = []
    for part in messages[0].parts:
        if isinstance(part, np.ndarray):
            audios.append(part)
            out.append(marker)
        elif isinstance(part, str):
            if marker in part or TOKENS_MARKER in part:
                raise ValueError(f"text may not contain the marker {marker!r}")
            out.append(part)
    return RenderedPrompt("".join(out), tuple(audios), ())


def render(
    messages: Sequence[Message], marker: str, system_prompt: str = DEFAULT_SYSTEM_PROMPT
) -> RenderedPrompt:
    """Render a conversation in the Qwen2-Audio chat format, ending with the assistant cue.

    Args:
        messages: The conversation; must hold at least one user turn.
        marker: The media marker that stands for one audio.
        system_prompt: Used when the first message is not a system turn.

    Raises:
        ValueError: No user turn, or a text part contains the media marker.
    """
    if not any(m.role == "user" for m in messages):
        raise ValueError("the conversation needs at least one user turn")
    out: list[str] = []
    audios: list[np.ndarray] = []
    runs: list[TokenIds] = []
    if not messages or messages[0].role != "system":
        out.append(f"<|im_start|>system\n{system_prompt}<|im_end|>\n")
    for msg in messages:
        out.append(f"<|im_start|>{msg.role}\n")
        for part in msg.parts:
            if isinstance(part, np.ndarray):
                audios.append(part)
                out.append(f"Audio {len(audios)}: {marker}\n")
            elif isinstance(part, TokenIds):
                runs.append(part)
                out.append(TOKENS_MARKER)
            else:
                for reserved in (marker, TOKENS_MARKER):
                    if reserved in part:
                        raise ValueError(f"text may not contain the marker {reserved!r}")
                out.append(part)
        out.append("<|im_end|>\n")
    out.append("<|im_start|>assistant\n")
    return RenderedPrompt("".join(out), tuple(audios), tuple(runs))
