"""A live session's events as OpenAI's Realtime server events (JSON objects).

Each event of :mod:`qaudio_local.live.events` becomes the events OpenAI sends for it, in
OpenAI's order and shapes (what the official SDK parses): a committed turn is
``input_audio_buffer.committed`` then the user item (``conversation.item.added`` and
``.done``); an answer is ``response.created``, its output item and content part, the text
deltas, then the ``.done`` events from the inside out and ``response.done`` with usage.
Sample positions become milliseconds (``sample // 16``: 16 samples a millisecond at
16 kHz, whatever the client's rate).
"""

from __future__ import annotations

import secrets
from typing import Any

from ...live import events as ev
from ...live.events import LiveEvent


def event_id() -> str:
    return f"event_{secrets.token_hex(10)}"


def ms(sample: int) -> int:
    """Milliseconds of the session's audio at a 16 kHz sample position."""
    return sample // 16


def _e(type_: str, **fields: Any) -> dict[str, Any]:
    return {"type": type_, "event_id": event_id(), **fields}


def error_event(
    message: str,
    code: str | None,
    *,
    param: str | None = None,
    client_event_id: str | None = None,
    type_: str = "invalid_request_error",
) -> dict[str, Any]:
    """OpenAI's ``error`` event (``error.event_id``: the client's event it answers)."""
    error = {
        "type": type_,
        "code": code,
        "message": message,
        "param": param,
        "event_id": client_event_id,
    }
    return _e("error", error=error)


def _user_item(item_id: str, content: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "role": "user",
        "status": "completed",
        "content": [content],
    }


def _assistant_item(item_id: str, status: str, text: str | None) -> dict[str, Any]:
    content = [] if text is None else [{"type": "output_text", "text": text}]
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": content,
    }


def _item_added(item: dict[str, Any], previous: str | None) -> list[dict[str, Any]]:
    return [
        _e("conversation.item.added", item=item, previous_item_id=previous),
        _e("conversation.item.done", item=item, previous_item_id=previous),
    ]


def _response(
    e: ev.ResponseCreated | ev.ResponseDone, status: str, output: list[dict[str, Any]]
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": e.response_id,
        "object": "realtime.response",
        "status": status,
        "status_details": None,
        "output": output,
        "output_modalities": ["text"],
        "conversation_id": None,
        "metadata": None,
        "usage": None,
    }
    if isinstance(e, ev.ResponseDone):
        if status != "completed":
            error = {"type": "server_error", "code": None, "message": e.error} if e.error else None
            body["status_details"] = {"type": status, "reason": e.reason, "error": error}
        if e.usage is not None:
            u = e.usage
            text_in = u.prompt_tokens - u.audio_tokens
            cached_audio = min(u.cached_tokens, u.audio_tokens)  # a bound: not counted apart
            body["usage"] = {
                "total_tokens": u.prompt_tokens + u.completion_tokens,
                "input_tokens": u.prompt_tokens,
                "output_tokens": u.completion_tokens,
                "input_token_details": {
                    "text_tokens": text_in,
                    "audio_tokens": u.audio_tokens,
                    "cached_tokens": u.cached_tokens,
                    "cached_tokens_details": {
                        "text_tokens": u.cached_tokens - cached_audio,
                        "audio_tokens": cached_audio,
                    },
                },
                "output_token_details": {"text_tokens": u.completion_tokens, "audio_tokens": 0},
            }
    return body


def render(e: LiveEvent) -> list[dict[str, Any]]:
    """The server events for one session event, in order."""
    if isinstance(e, ev.SpeechStarted):
        return [
            _e("input_audio_buffer.speech_started", audio_start_ms=ms(e.start), item_id=e.item_id)
        ]
    if isinstance(e, ev.SpeechStopped):
        return [_e("input_audio_buffer.speech_stopped", audio_end_ms=ms(e.end), item_id=e.item_id)]
    if isinstance(e, ev.Committed):
        item = _user_item(e.item_id, {"type": "input_audio", "transcript": None})
        committed = _e(
            "input_audio_buffer.committed", item_id=e.item_id, previous_item_id=e.previous_item_id
        )
        return [committed, *_item_added(item, e.previous_item_id)]
    if isinstance(e, ev.UserText):
        item = _user_item(e.item_id, {"type": "input_text", "text": e.text})
        return _item_added(item, e.previous_item_id)
    if isinstance(e, ev.Cleared):
        return [_e("input_audio_buffer.cleared")]
    if isinstance(e, ev.TranscriptDelta):
        return [
            _e(
                "conversation.item.input_audio_transcription.delta",
                item_id=e.item_id,
                content_index=0,
                delta=e.delta,
            )
        ]
    if isinstance(e, ev.TranscriptCompleted):
        u = e.usage
        usage = {
            "type": "tokens",
            "input_tokens": u.input_tokens,
            "output_tokens": u.output_tokens,
            "total_tokens": u.input_tokens + u.output_tokens,
            "input_token_details": {
                "audio_tokens": u.audio_tokens,
                "text_tokens": u.input_tokens - u.audio_tokens,
            },
        }
        return [
            _e(
                "conversation.item.input_audio_transcription.completed",
                item_id=e.item_id,
                content_index=0,
                transcript=e.transcript,
                usage=usage,
            )
        ]
    if isinstance(e, ev.TranscriptFailed):
        error = {"type": "server_error", "code": e.code, "message": e.message, "param": None}
        return [
            _e(
                "conversation.item.input_audio_transcription.failed",
                item_id=e.item_id,
                content_index=0,
                error=error,
            )
        ]
    if isinstance(e, ev.ResponseCreated | ev.ResponseDelta | ev.ResponseDone):
        return _answer(e)
    assert isinstance(e, ev.SessionError)
    return [error_event(e.message, e.code, param=e.param, client_event_id=e.event_id, type_=e.type)]


def _answer(e: ev.ResponseCreated | ev.ResponseDelta | ev.ResponseDone) -> list[dict[str, Any]]:
    where = {"response_id": e.response_id, "item_id": e.item_id, "output_index": 0}
    if isinstance(e, ev.ResponseDelta):
        return [_e("response.output_text.delta", **where, content_index=0, delta=e.delta)]
    if isinstance(e, ev.ResponseCreated):
        item = _assistant_item(e.item_id, "in_progress", None)
        return [
            _e("response.created", response=_response(e, "in_progress", [])),
            _e("response.output_item.added", response_id=e.response_id, output_index=0, item=item),
            _e("conversation.item.added", item=item, previous_item_id=None),
            _e(
                "response.content_part.added",
                **where,
                content_index=0,
                part={"type": "text", "text": ""},
            ),
        ]
    status = "completed" if e.status == "completed" else "incomplete"
    item = _assistant_item(e.item_id, status, e.text)
    return [
        _e("response.output_text.done", **where, content_index=0, text=e.text),
        _e(
            "response.content_part.done",
            **where,
            content_index=0,
            part={"type": "text", "text": e.text},
        ),
        _e("response.output_item.done", response_id=e.response_id, output_index=0, item=item),
        _e("conversation.item.done", item=item, previous_item_id=None),
        _e("response.done", response=_response(e, e.status, [item])),
    ]


def session_event(kind: str, session: dict[str, Any]) -> dict[str, Any]:
    """``session.created`` or ``session.updated`` with the whole session object."""
    return _e(kind, session=session)
