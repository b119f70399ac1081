"""Errors of audio that cannot be used as model input."""

from __future__ import annotations

from .base import QAudioError

# --- audio -------------------------------------------------------------------


class AudioError(QAudioError, ValueError):
    """Audio that cannot be used as model input.

    Attributes:
        source: A short description of where the audio came from (a path,
            ``"<bytes>"`` or ``"<array>"``).
    """

    exit_code = 2
    http_status = 400
    openai_type = "invalid_request_error"

    def __init__(self, message: str, *, source: str = "<audio>") -> None:
        super().__init__(message)
        self.source = source


class AudioDecodeError(AudioError):
    """The audio could not be decoded (unreadable, corrupt or unsupported format)."""


class EmptyAudioError(AudioError):
    """The audio holds no samples."""


class InvalidAudioError(AudioError):
    """The audio decoded but its samples cannot be used (NaN, inf, wrong shape or dtype)."""


class AudioTooLongError(AudioError):
    """Audio longer than the caller's limit, found before it is resampled or kept.

    Attributes:
        seconds: How long the audio is at least (the part read so far, or all of it).
        limit: The limit in seconds.
        rate: The sample rate the audio declares.
    """

    def __init__(
        self, message: str, *, source: str, seconds: float, limit: float, rate: int
    ) -> None:
        super().__init__(message, source=source)
        self.seconds = seconds
        self.limit = limit
        self.rate = rate


class AudioTooLargeError(AudioError):
    """An audio stream (standard input, a pipe) with more bytes than the limit.

    Attributes:
        limit_bytes: The most bytes that are read.
    """

    def __init__(self, message: str, *, source: str, limit_bytes: int) -> None:
        super().__init__(message, source=source)
        self.limit_bytes = limit_bytes


class AudioFileNotFoundError(QAudioError, FileNotFoundError):
    """An audio path that does not exist.

    Attributes:
        path: The path that was asked for.
    """

    exit_code = 2
    http_status = 400
    openai_type = "invalid_request_error"

    def __init__(self, path: str) -> None:
        super().__init__(f"audio file not found: {path}; check the path and try again")
        self.path = path
