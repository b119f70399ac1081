"""What a live session tells its client, as plain dataclasses (no protocol in them).

Positions are sample indices at 16 kHz into all the audio the session has accepted
(``sample / 16`` is the millisecond); a server turns these into OpenAI's Realtime events.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from ..engine.results import Usage


@dataclass(frozen=True)
class SpeechStarted:
    """Speech began; the turn ``item_id`` starts at ``start`` (padding included)."""

    item_id: str
    start: int


@dataclass(frozen=True)
class SpeechStopped:
    """Speech ended; the turn ends at ``end`` (padding included)."""

    item_id: str
    end: int


@dataclass(frozen=True)
class Committed:
    """The turn ``item_id`` is complete and goes to the model.

    Attributes:
        item_id: The turn.
        previous_item_id: The turn before it, if any.
        start: Its first sample.
        end: One past its last.
    """

    item_id: str
    previous_item_id: str | None
    start: int
    end: int


@dataclass(frozen=True)
class UserText:
    """Conversation: a user message of text joined the conversation as ``item_id``."""

    item_id: str
    previous_item_id: str | None
    text: str


@dataclass(frozen=True)
class Cleared:
    """The uncommitted audio was dropped (the client asked)."""


@dataclass(frozen=True)
class TranscriptDelta:
    """More of a turn's text, as it decodes (pieces of a long turn joined by a space)."""

    item_id: str
    delta: str


@dataclass(frozen=True)
class TurnUsage:
    """What a turn's transcription cost (summed over its pieces)."""

    input_tokens: int = 0
    audio_tokens: int = 0
    output_tokens: int = 0

    def plus(self, u: Usage) -> TurnUsage:
        return TurnUsage(
            self.input_tokens + u.prompt_tokens,
            self.audio_tokens + u.audio_tokens,
            self.output_tokens + u.completion_tokens,
        )


@dataclass(frozen=True)
class TranscriptCompleted:
    """A turn's whole text (cleaned as ``qaudio transcribe`` writes it) and its usage."""

    item_id: str
    transcript: str
    usage: TurnUsage


@dataclass(frozen=True)
class TranscriptFailed:
    """A turn could not be transcribed."""

    item_id: str
    code: str
    message: str


@dataclass(frozen=True)
class ResponseCreated:
    """The model starts answering: ``item_id`` will hold its message."""

    response_id: str
    item_id: str


@dataclass(frozen=True)
class ResponseDelta:
    """More of the answer, as it decodes."""

    response_id: str
    item_id: str
    delta: str


@dataclass(frozen=True)
class ResponseDone:
    """The answer ended.

    Attributes:
        response_id: The response.
        item_id: Its message.
        text: The whole answer (what the client saw, when it was stopped).
        status: ``"completed"``, ``"cancelled"``, ``"incomplete"`` (``max_output_tokens``
            or the context ran out) or ``"failed"``.
        reason: Why it was cancelled or incomplete: ``"turn_detected"`` (the user spoke),
            ``"client_cancelled"``, ``"max_output_tokens"``; ``None`` otherwise.
        usage: Tokens in and out (``cached_tokens``: the earlier turns' reused cells);
            ``None`` when it never started.
        error: What failed, for ``"failed"``.
    """

    response_id: str
    item_id: str
    text: str
    status: str
    reason: str | None = None
    usage: Usage | None = None
    error: str | None = None


@dataclass(frozen=True)
class SessionError:
    """Something the client sent could not be done; the session goes on.

    Attributes:
        code: A short code (``"input_audio_buffer_commit_empty"``, ...).
        message: What happened and what to do.
        event_id: The client's event it answers, if it gave one.
        param: The field at fault, if one.
        type: OpenAI's error type: ``"invalid_request_error"`` or ``"server_error"``.
    """

    code: str
    message: str
    event_id: str | None = None
    param: str | None = None
    type: str = "invalid_request_error"


LiveEvent = Union[  # noqa: UP007 (a run-time alias)
    SpeechStarted,
    SpeechStopped,
    Committed,
    UserText,
    Cleared,
    TranscriptDelta,
    TranscriptCompleted,
    TranscriptFailed,
    ResponseCreated,
    ResponseDelta,
    ResponseDone,
    SessionError,
]
