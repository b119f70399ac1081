"""The whole exception hierarchy of qaudio-local.

Every error derives from :class:`QAudioError` and also from the builtin that
matches its meaning, so callers can catch either. Each one carries the data
that describes the problem as attributes, and its message says what to do next.
This module imports nothing from the package.
"""

from __future__ import annotations


class QAudioError(Exception):
    """Root of every error raised by qaudio-local."""


# --- audio -------------------------------------------------------------------


class AudioError(QAudioError, ValueError):
    """Audio that cannot be used as model input.

    Attributes:
        source: A short description of where the audio came from (a path,
            ``"<bytes>"`` or ``"<array>"``).
    """

    def __init__(self, message: str, *, source: str = "<audio>") -> None:
        super().__init__(message)
        self.source = source


class AudioDecodeError(AudioError):
    """The audio could not be decoded (unreadable, corrupt or unsupported format)."""


class EmptyAudioError(AudioError):
    """The audio holds no samples."""


class InvalidAudioError(AudioError):
    """The audio decoded but its samples cannot be used (NaN, inf, wrong shape or dtype)."""


class AudioFileNotFoundError(QAudioError, FileNotFoundError):
    """An audio path that does not exist.

    Attributes:
        path: The path that was asked for.
    """

    def __init__(self, path: str) -> None:
        super().__init__(f"audio file not found: {path}; check the path and try again")
        self.path = path


# --- model files ---------------------------------------------------------------


class ModelFileError(QAudioError, ValueError):
    """A GGUF file that cannot be loaded (truncated, wrong kind, mismatched pair).

    Attributes:
        path: The offending file.
    """

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class ModelFileNotFoundError(QAudioError, FileNotFoundError):
    """A model file path that does not exist.

    Attributes:
        path: The path that was asked for.
    """

    def __init__(self, path: str, *, what: str = "model file") -> None:
        super().__init__(
            f"{what} not found: {path}; check the path, or convert a checkpoint "
            "with `qaudio convert HF_DIR OUT_DIR`"
        )
        self.path = path
        self.what = what


# --- conversion ----------------------------------------------------------------


class ConversionError(QAudioError, ValueError):
    """A checkpoint that cannot be converted to GGUF.

    Attributes:
        path: The checkpoint directory or file involved.
    """

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class CheckpointNotFoundError(QAudioError, FileNotFoundError):
    """A checkpoint directory or one of its required files is missing.

    Attributes:
        path: The missing path.
    """

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


# --- runtime -------------------------------------------------------------------


class RuntimeBackendError(QAudioError, RuntimeError):
    """llama.cpp reported a failure while loading or running the model."""


class ContextOverflowError(QAudioError, ValueError):
    """The prompt (text plus audio tokens) does not fit the context window.

    Attributes:
        n_prompt: Tokens the prompt needs.
        n_ctx: The context size in use.
    """

    def __init__(self, n_prompt: int, n_ctx: int) -> None:
        super().__init__(
            f"the prompt needs {n_prompt} tokens but the context holds {n_ctx}; "
            f"pass a larger --n-ctx (at least {n_prompt + 64}) or shorter audio"
        )
        self.n_prompt = n_prompt
        self.n_ctx = n_ctx


class DependencyMissingError(QAudioError, ImportError):
    """An optional dependency is not installed.

    Attributes:
        package: The missing distribution.
        extra: The qaudio-local extra that provides it.
    """

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(f"{package} is not installed; run `pip install 'qaudio-local[{extra}]'`")
        self.package = package
        self.extra = extra
