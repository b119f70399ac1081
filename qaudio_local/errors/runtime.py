"""Errors of model files, conversion, the runtime, options and missing packages."""

from __future__ import annotations

from .base import QAudioError

# --- model files ---------------------------------------------------------------


class ModelFileError(QAudioError, ValueError):
    """A GGUF file that cannot be loaded (truncated, wrong kind, mismatched pair).

    Attributes:
        path: The offending file.
    """

    exit_code = 2
    http_status = 500
    openai_type = "server_error"

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class ModelFileNotFoundError(QAudioError, FileNotFoundError):
    """A model file path that does not exist.

    Attributes:
        path: The path that was asked for.
    """

    exit_code = 2
    http_status = 500
    openai_type = "server_error"

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

    exit_code = 2
    http_status = 500
    openai_type = "server_error"

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class CheckpointNotFoundError(QAudioError, FileNotFoundError):
    """A checkpoint directory or one of its required files is missing.

    Attributes:
        path: The missing path.
    """

    exit_code = 2
    http_status = 500
    openai_type = "server_error"

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


# --- runtime -------------------------------------------------------------------


class RuntimeBackendError(QAudioError, RuntimeError):
    """llama.cpp reported a failure while loading or running the model."""

    exit_code = 1
    http_status = 500
    openai_type = "server_error"


class CpuKernelError(RuntimeBackendError):
    """llama.cpp's fast CPU kernels for quantized weights crash on this CPU.

    Not the model file's fault: the same file runs with the portable kernels.

    Attributes:
        cpu: The CPU's model name.
        how: How the process that ran them ended (``"SIGSEGV"``, ``"SIGILL"``, ...).
        path: The model file that was being loaded.
    """

    def __init__(self, message: str, cpu: str = "", how: str = "", path: str = "") -> None:
        super().__init__(message)
        self.cpu = cpu
        self.how = how
        self.path = path


class ContextOverflowError(QAudioError, ValueError):
    """The prompt (text plus audio tokens) does not fit the context window.

    Attributes:
        n_prompt: Tokens the prompt needs.
        n_ctx: The context size in use.
        max_ctx: The model's trained context (0 if unknown).
    """

    exit_code = 2
    http_status = 400
    openai_type = "invalid_request_error"
    openai_code = "context_length_exceeded"

    def __init__(self, n_prompt: int, n_ctx: int, max_ctx: int = 0) -> None:
        if max_ctx and n_prompt + 64 > max_ctx:
            advice = (
                f"that is more than the model's maximum context of {max_ctx} tokens "
                f"(about {max_ctx // 25 // 60} min of audio at 25 tokens/s); for a long "
                "recording use `qaudio transcribe`, which cuts it at pauses into 30 s segments "
                "(or split the audio into shorter parts)"
            )
        else:
            advice = f"pass a larger --n-ctx (at least {n_prompt + 64}) or shorter audio"
        super().__init__(
            f"the prompt needs {n_prompt} tokens but the context holds {n_ctx}; {advice}"
        )
        self.n_prompt = n_prompt
        self.n_ctx = n_ctx
        self.max_ctx = max_ctx


class ContextFullError(QAudioError, ValueError):
    """A conversation's next turn does not fit the context (and dropping turns is off).

    Attributes:
        used: Context positions the conversation takes.
        n_ctx: The context's size.
        reserved: Positions kept free for the answer.
    """

    exit_code = 2
    http_status = 400
    openai_type = "invalid_request_error"
    openai_code = "context_length_exceeded"

    def __init__(self, used: int, n_ctx: int, reserved: int) -> None:
        super().__init__(
            f"the conversation takes {used} of the context's {n_ctx} tokens, and the answer "
            f"needs room too ({reserved}); /clear to start over, or drop older turns"
        )
        self.used, self.n_ctx, self.reserved = used, n_ctx, reserved


class ConversationFileError(QAudioError, ValueError):
    """A saved conversation that cannot be written or loaded (or whose audio changed).

    Attributes:
        path: The file in question (the conversation, or one of its clips).
    """

    exit_code = 2
    http_status = 400
    openai_type = "invalid_request_error"

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class OptionError(QAudioError, ValueError):
    """An option value that cannot work with this model or machine.

    Attributes:
        option: The option's name as the user types it, e.g. ``"--n-ctx"``.
    """

    exit_code = 2
    http_status = 400
    openai_type = "invalid_request_error"

    def __init__(self, message: str, *, option: str) -> None:
        super().__init__(message)
        self.option = option


class DependencyMissingError(QAudioError, ImportError):
    """An optional dependency is not installed.

    Attributes:
        package: The missing distribution.
        extra: The qaudio-local extra that provides it.
    """

    exit_code = 1
    http_status = 500
    openai_type = "server_error"

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(f"{package} is not installed; run `pip install 'qaudio-local[{extra}]'`")
        self.package = package
        self.extra = extra
