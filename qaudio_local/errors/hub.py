"""Errors of model downloads, the registry and the plan."""

from __future__ import annotations

from .base import QAudioError

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
