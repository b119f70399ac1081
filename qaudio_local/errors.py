"""The whole exception hierarchy of qaudio-local.

Every error derives from :class:`QAudioError` and also from the builtin that
matches its meaning, so callers can catch either. Each one carries the data
that describes the problem as attributes, and its message says what to do next.

Each class also decides its own outcome, as class attributes a subclass may override:
the ``qaudio`` command's exit code, the server's HTTP status and OpenAI's error
``type`` (and ``code``, where OpenAI has one). The command line and the server look
these up; neither keeps a table of its own. Every error pickles with its message and
attributes, so it can cross a process boundary.
This module imports nothing from the package.
"""

from __future__ import annotations

from typing import Any, ClassVar

# the attributes of an OSError that live in slots, not in the instance's __dict__
_OSERROR_SLOTS = ("errno", "strerror", "filename", "filename2")


class QAudioError(Exception):
    """Root of every error raised by qaudio-local.

    Attributes:
        exit_code: The ``qaudio`` command's exit status: 2 when what the user passed is
            wrong (a path, a name, an option: fix the command), 1 when something failed
            (the network, the disk, llama.cpp).
        http_status: The server's status when a request ends in this error: 400 for input
            the client can fix, 404 for a name that does not exist, 500 for what only the
            server's operator can fix (its model files, registry, disk or network; the
            client passed none of those, whatever the exit code says).
        openai_type: The ``type`` of OpenAI's error object: ``"invalid_request_error"``
            with a 4xx status, ``"server_error"`` with a 5xx.
        openai_code: The ``code`` of OpenAI's error object (``None`` for most errors).
    """

    exit_code: ClassVar[int] = 1
    http_status: ClassVar[int] = 500
    openai_type: ClassVar[str] = "server_error"
    openai_code: ClassVar[str | None] = None

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle as the class, ``args`` (the message) and the attributes.

        Unpickling does not call the subclass's ``__init__`` (whose arguments are not
        ``args``: most take keywords, some compose the message); :func:`_rebuild` makes the
        instance from ``args`` as the builtin base does, then the attributes are restored.
        """
        state = dict(self.__dict__)
        if isinstance(self, OSError):
            state.update(
                (name, getattr(self, name))
                for name in _OSERROR_SLOTS
                if getattr(self, name) is not None
            )
        return _rebuild, (type(self), self.args), state


def _rebuild(cls: type[QAudioError], args: tuple[Any, ...]) -> QAudioError:
    """An instance of ``cls`` with ``args``, made by the builtin base class (for unpickling)."""
    error = cls.__new__(cls, *args)
    super(QAudioError, error).__init__(*args)
    return error


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


# --- model downloads (hub) -------------------------------------------------------


def _size(n: int) -> str:
    """Bytes as a short human-readable string (decimal units, like disk tools)."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(value) < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"  # pragma: no cover


def _pull_command(name_hint: str | None) -> str:
    return f"qaudio pull {name_hint}" if name_hint else "qaudio pull NAME"


class RemoteFileNotFoundError(QAudioError, FileNotFoundError):
    """A file, revision or repository that the hub does not have.

    Attributes:
        repo: The hub repository.
        path_in_repo: The file asked for.
        revision: The revision asked for.
        missing: What is missing: ``"file"``, ``"revision"`` or ``"repo"``.
    """

    exit_code = 1
    http_status = 500
    openai_type = "server_error"

    def __init__(self, repo: str, filename: str, *, revision: str = "main", missing: str) -> None:
        what = {
            "repo": f"the hub has no repository {repo!r} (needed for {filename!r}); it may have "
            "been renamed, deleted, made private or gated (then run `hf auth login`)",
            "revision": f"the hub repository {repo!r} has no revision {revision!r} "
            f"(needed for {filename!r})",
        }.get(missing, f"the hub repository {repo!r} has no file {filename!r} at {revision!r}")
        super().__init__(
            f"{what}; the model registry lists it, so pick another quantization "
            "(`qaudio list`) or fix the entry in your models TOML"
        )
        self.repo = repo
        self.path_in_repo = filename
        self.revision = revision
        self.missing = missing


class HubUnreachableError(QAudioError, ConnectionError):
    """The hub could not be reached (no network, DNS, timeout, proxy, or a server error).

    Attributes:
        endpoint: The hub URL that was tried.
        reason: What went wrong, in a few words.
    """

    exit_code = 1
    http_status = 500
    openai_type = "server_error"

    def __init__(self, endpoint: str, reason: str) -> None:
        super().__init__(
            f"cannot reach the model hub at {endpoint} ({reason}); check your network "
            "connection (and HF_ENDPOINT / proxy settings), or use a model that is already "
            "pulled (`qaudio list`)"
        )
        self.endpoint = endpoint
        self.reason = reason


class OfflineModelMissingError(QAudioError, FileNotFoundError):
    """Offline mode is on and a needed file has not been downloaded.

    Attributes:
        repo: The hub repository of the missing file.
        path_in_repo: The missing file.
        name_hint: The model name to pull, when known.
        command: The exact command to run while online.
    """

    exit_code = 1
    http_status = 500
    openai_type = "server_error"

    def __init__(self, repo: str, filename: str, *, name_hint: str | None = None) -> None:
        self.command = _pull_command(name_hint)
        super().__init__(
            f"{filename} (from {repo}) is not downloaded and offline mode is on "
            "(QAUDIO_OFFLINE / HF_HUB_OFFLINE); "
            f"run `{self.command}` while online, then run this again"
        )
        self.repo = repo
        self.path_in_repo = filename
        self.name_hint = name_hint


class IntegrityError(QAudioError, ValueError):
    """A file whose sha256 is not the one the hub (or the registry) promised.

    (``filename`` is not used as an attribute name in this family: on an ``OSError`` it would
    change how the message prints.)

    Attributes:
        repo: The hub repository.
        path_in_repo: The file.
        expected: The digest it should have.
        actual: The digest it has (or the hub advertises, for a pin mismatch).
    """

    exit_code = 1
    http_status = 500
    openai_type = "server_error"

    def __init__(
        self,
        repo: str,
        filename: str,
        *,
        expected: str,
        actual: str,
        message: str | None = None,
        name_hint: str | None = None,
    ) -> None:
        super().__init__(
            message
            or f"{filename} from {repo} failed verification: expected sha256 {expected}, got "
            f"{actual}; the download was discarded; run `{_pull_command(name_hint)}` to fetch "
            "it again (a repeated failure means the hub copy differs from what it advertises)"
        )
        self.repo = repo
        self.path_in_repo = filename
        self.expected = expected
        self.actual = actual


class DiskFullError(QAudioError, OSError):
    """Not enough free disk space for a download.

    Attributes:
        path: The folder that is too full.
        needed: Bytes needed (downloads plus a safety margin); 0 when unknown.
        free: Bytes free when it was checked.
    """

    exit_code = 1
    http_status = 500
    openai_type = "server_error"

    def __init__(self, path: str, *, needed: int, free: int, detail: str | None = None) -> None:
        need = f"need {_size(needed)}, " if needed else ""
        super().__init__(
            f"not enough disk space in {path}: {need}{_size(free)} free"
            + (f" ({detail})" if detail else "")
            + "; free some space (`qaudio list`, then `qaudio rm NAME`), or point QAUDIO_HOME "
            "at a larger disk, then pull again"
        )
        import errno

        self.errno = errno.ENOSPC
        self.path = path
        self.needed = needed
        self.free = free


# --- model registry and planning ------------------------------------------------


class CatalogError(QAudioError, ValueError):
    """A models TOML file that breaks the registry's schema.

    Attributes:
        path: The TOML file (``"<packaged>"`` style labels are used for built-in data).
        table: The table the problem is in, e.g. ``"models.qwen2-audio-7b-instruct.quants[1]"``.
        key: The offending key, if one is to blame.
    """

    exit_code = 2
    http_status = 500
    openai_type = "server_error"

    def __init__(
        self, message: str, *, path: str, table: str | None = None, key: str | None = None
    ) -> None:
        where = path + (f": [{table}]" if table else "") + (f" {key}" if key else "")
        super().__init__(f"{where}: {message}")
        self.path = path
        self.table = table
        self.key = key


class UnknownModelError(QAudioError, LookupError):
    """A model, quantization or projector name that the registry does not know.

    Attributes:
        name: The name asked for.
        kind: ``"model"``, ``"quant"`` or ``"projector"``.
        valid: The accepted names.
        model: The model whose quants/projectors were searched (``None`` for models).
    """

    exit_code = 2
    http_status = 404
    openai_type = "invalid_request_error"
    openai_code = "model_not_found"

    def __init__(
        self, name: str, *, kind: str, valid: tuple[str, ...], model: str | None = None
    ) -> None:
        where = f" of {model}" if model else ""
        hint = "`qaudio list` shows them" if kind == "model" else f"pick one with --{kind}"
        super().__init__(
            f"unknown {kind} {name!r}{where}; valid: {', '.join(valid) or '(none)'} ({hint}, "
            "or add your own entry in $QAUDIO_HOME/models.toml)"
        )
        self.name = name
        self.kind = kind
        self.valid = valid
        self.model = model


class PlanError(QAudioError, ValueError):
    """No memory plan fits (or the one asked for does not).

    Attributes:
        needed: Bytes the plan needs (``None`` when not about memory).
        available: Bytes available to it.
        quant: The quantization that was tried.
        alternative: The best plan that does fit, as a short description, if any.
    """

    exit_code = 2
    http_status = 500
    openai_type = "server_error"

    def __init__(
        self,
        message: str,
        *,
        needed: int | None = None,
        available: int | None = None,
        quant: str | None = None,
        alternative: str | None = None,
    ) -> None:
        super().__init__(message)
        self.needed = needed
        self.available = available
        self.quant = quant
        self.alternative = alternative
