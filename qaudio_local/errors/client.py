"""Errors a client meets: a server it cannot reach, a live session that ends, a microphone
that cannot be used (``qaudio listen``)."""

from __future__ import annotations

from .base import QAudioError


class ServerConnectionError(QAudioError, ConnectionError):
    """A server that could not be reached, or that refused the connection.

    Attributes:
        url: The address that was tried (never with a key in it).
        status: The HTTP status of a refused WebSocket upgrade (401, 404, 503, ...);
            ``None`` when no HTTP answer came (refused, unreachable, timed out).
    """

    exit_code = 1
    http_status = 500
    openai_type = "server_error"

    def __init__(self, message: str, *, url: str, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


class RealtimeSessionError(QAudioError, RuntimeError):
    """The server refused a live session's settings, or ended the session.

    Attributes:
        code: The ``code`` of the server's ``error`` event (OpenAI's), if it sent one.
    """

    exit_code = 1
    http_status = 500
    openai_type = "server_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class AudioDeviceError(QAudioError, OSError):
    """The microphone cannot be used: sounddevice or the PortAudio library is missing, or
    the device fails to open or stops.

    Attributes:
        device: The device asked for (its number or name), ``None`` for the default.
    """

    exit_code = 1
    http_status = 500
    openai_type = "server_error"

    def __init__(self, message: str, *, device: str | None = None) -> None:
        super().__init__(message)
        self.device = device
