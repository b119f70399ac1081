"""OpenAI's Realtime client events, read and handed to a :class:`LiveSession`.

:func:`handle` takes one WebSocket message and returns what is answered at once:
``session.updated``, or an ``error`` event for anything malformed (not JSON, not an
object, an unknown or unsupported type, a bad field, bad base64, too large). What needs
the session's state (a commit with nothing to commit, a cancel with nothing running, audio
beyond the session's buffer) is answered by the session itself, in order. Nothing a
client sends ends the session.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from ...errors import LiveEventError
from ...live import LiveSession
from .server_events import error_event, session_event
from .session_config import SessionView

HANDLED = (
    "session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "conversation.item.create",
    "response.create",
    "response.cancel",
)
NOT_HERE = {  # OpenAI's events this server does not do, and why
    "conversation.item.retrieve": "items are not kept for retrieval here",
    "conversation.item.truncate": "there is no audio output to truncate",
    "conversation.item.delete": "items cannot be deleted here",
    "output_audio_buffer.clear": "there is no audio output",
    "transcription_session.update": "the beta event: send session.update with "
    "session.type 'transcription'",
}


def handle(
    message: str | bytes, session: LiveSession, view: SessionView, max_bytes: int
) -> list[dict[str, Any]]:
    """Act on one client message; the server events to send at once."""
    client_id: str | None = None
    try:
        event = _parse(message, max_bytes)
        if isinstance(event.get("event_id"), str):
            client_id = event["event_id"]
        if not isinstance(event.get("type"), str):
            raise LiveEventError(
                "the event has no 'type' (a string such as 'input_audio_buffer.append')",
                code="invalid_event",
                param="type",
            )
        return _dispatch(event, session, view, client_id)
    except LiveEventError as exc:
        return [error_event(str(exc), exc.code, param=exc.param, client_event_id=client_id)]


def _parse(message: str | bytes, max_bytes: int) -> dict[str, Any]:
    if isinstance(message, bytes):
        raise LiveEventError(
            "binary messages are not read: send each event as JSON in a text message",
            code="invalid_event",
        )
    size = len(message) if len(message) * 4 <= max_bytes else len(message.encode())
    if size > max_bytes:
        raise LiveEventError(
            f"the event is {size} bytes; this server takes events of at most {max_bytes} "
            "bytes: send audio in smaller appends (100 ms is 6.4 kB of base64 at 24 kHz)",
            code="event_too_large",
        )
    try:
        event = json.loads(message)
    except (ValueError, RecursionError) as exc:
        raise LiveEventError(f"the message is not JSON: {exc}", code="invalid_json") from exc
    if not isinstance(event, dict):
        raise LiveEventError("an event must be a JSON object", code="invalid_event")
    return event


def _dispatch(
    event: dict[str, Any], session: LiveSession, view: SessionView, client_id: str | None
) -> list[dict[str, Any]]:
    kind = event["type"]
    if kind == "session.update":
        config = view.update(event.get("session", {}))
        session.update(config, client_id)
        return [session_event("session.updated", view.data)]
    if kind == "input_audio_buffer.append":
        session.append(_audio(event.get("audio")), client_id)
    elif kind == "input_audio_buffer.commit":
        session.commit(client_id)
    elif kind == "input_audio_buffer.clear":
        session.clear(client_id)
    elif kind == "conversation.item.create":
        session.add_text(_user_text(event.get("item")), client_id)
    elif kind == "response.create":
        session.create_response(client_id, _response_limit(event.get("response")))
    elif kind == "response.cancel":
        rid = event.get("response_id")
        if rid is not None and not isinstance(rid, str):
            raise LiveEventError("response_id must be a string", param="response_id")
        session.cancel_response(client_id, rid)
    elif kind in NOT_HERE:
        raise LiveEventError(f"{kind} is not available: {NOT_HERE[kind]}", code="unsupported_event")
    else:
        raise LiveEventError(
            f"unknown event type {kind[:80]!r}; this server takes {', '.join(HANDLED)}",
            param="type",
        )
    return []


def _audio(value: Any) -> bytes:
    if not isinstance(value, str):
        raise LiveEventError(
            "audio must be base64 text (PCM16 little-endian)", code="invalid_audio", param="audio"
        )
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise LiveEventError(
            f"audio is not valid base64: {exc}", code="invalid_audio", param="audio"
        ) from exc


def _user_text(item: Any) -> str:
    """The text of a user message item (``input_text`` parts)."""
    if not isinstance(item, dict):
        raise LiveEventError("item must be an object", code="invalid_type", param="item")
    if item.get("type", "message") != "message" or item.get("role") != "user":
        raise LiveEventError(
            "only user messages can be added here (type 'message', role 'user')",
            code="unsupported",
            param="item.role",
        )
    content = item.get("content")
    if not isinstance(content, list) or not content:
        raise LiveEventError("item.content must be a list of parts", param="item.content")
    texts = []
    for i, part in enumerate(content):
        ok = isinstance(part, dict) and part.get("type") == "input_text"
        if not ok or not isinstance(part.get("text"), str):
            raise LiveEventError(
                "only input_text parts can be added (speak audio through "
                "input_audio_buffer.append)",
                code="unsupported",
                param=f"item.content[{i}]",
            )
        texts.append(part["text"])
    return "\n".join(texts)


def _response_limit(response: Any) -> int | None:
    """A ``response.create``'s ``max_output_tokens``, after refusing what is not done."""
    if response is None:
        return None
    if not isinstance(response, dict):
        raise LiveEventError("response must be an object", code="invalid_type", param="response")
    for key, value in response.items():
        param = f"response.{key}"
        if key == "output_modalities" and value not in (["text"], None):
            raise LiveEventError(
                f'{param}: the model answers in text only: use ["text"] (no audio output)',
                param=param,
            )
        if key in ("tools", "input", "prompt") and value not in (None, []):
            raise LiveEventError(f"{param} is not available here", code="unsupported", param=param)
        if key == "conversation" and value not in ("auto", None):
            raise LiveEventError(
                f"{param}: out-of-band responses are not available", code="unsupported", param=param
            )
        if key == "instructions" and value is not None:
            raise LiveEventError(
                f"{param}: set instructions with session.update", code="unsupported", param=param
            )
    limit = response.get("max_output_tokens")
    if limit is None or limit == "inf":
        return None
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1 << 24:
        raise LiveEventError(
            'response.max_output_tokens must be a whole number from 1, or "inf"',
            param="response.max_output_tokens",
        )
    return limit
