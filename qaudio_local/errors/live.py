"""What a live session refuses: an event the client can fix (the session goes on)."""

from __future__ import annotations

from .base import QAudioError


class LiveEventError(QAudioError, ValueError):
    """A client's event in a live session that cannot be done as sent.

    The server answers it with OpenAI's ``error`` event and the session goes on.

    Attributes:
        code: A short code for clients, e.g. ``"invalid_value"``, ``"invalid_json"``.
        param: The field at fault (``"session.audio.input.format.rate"``), if one.
    """

    exit_code = 2
    http_status = 400
    openai_type = "invalid_request_error"

    def __init__(self, message: str, *, code: str = "invalid_value", param: str | None = None):
        super().__init__(message)
        self.code = code
        self.param = param
