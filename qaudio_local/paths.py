"""Where qaudio-local keeps its state, and whether it may use the network. Standard library only
(plus platformdirs).

Layout under the home folder (``QAUDIO_HOME``, else the platform's user data folder, e.g.
``~/.local/share/qaudio-local`` on Linux, ``~/Library/Application Support/qaudio-local`` on
macOS, ``%LOCALAPPDATA%\\qaudio-local`` on Windows)::

    <home>/manifest.json                       what was downloaded and verified (see hub.py)
    <home>/manifest.lock                       serialises manifest updates between processes
    <home>/models/<owner>--<repo>/<filename>   complete, verified files only
    <home>/models/<owner>--<repo>/.incomplete/<filename with / as -->.<digest>.part
                                               resumable partial downloads (and their .lock)

Every value is read from the environment at call time, so tests and long-lived processes see
changes.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from pathlib import Path

APP_NAME = "qaudio-local"
_TRUE = {"1", "true", "yes", "on"}


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def qaudio_home() -> Path:
    """The folder holding all qaudio-local state: ``QAUDIO_HOME`` or the user data folder."""
    override = os.environ.get("QAUDIO_HOME", "").strip()
    if override:
        return Path(override).expanduser()
    import platformdirs

    return platformdirs.user_data_path(APP_NAME, appauthor=False)


def cache_dir() -> Path:
    """Where re-creatable facts are cached (``QAUDIO_CACHE_DIR``, else the user cache folder).

    Holds, for example, the CPU-kernel probe's verdict; deleting it only costs a re-probe.
    """
    override = os.environ.get("QAUDIO_CACHE_DIR", "").strip()
    if override:
        return Path(override).expanduser()
    import platformdirs

    return platformdirs.user_cache_path(APP_NAME, appauthor=False)


def models_dir() -> Path:
    """The folder downloaded model files live in (``<home>/models``)."""
    return qaudio_home() / "models"


def manifest_path() -> Path:
    """The JSON manifest recording every downloaded file (``<home>/manifest.json``)."""
    return qaudio_home() / "manifest.json"


def repo_dir(repo: str) -> Path:
    """The folder for one hub repository: ``owner/name`` becomes ``<models>/owner--name``."""
    return models_dir() / repo.replace("/", "--")


def file_path(repo: str, filename: str) -> Path:
    """Where a complete, verified file of ``repo`` lives (sub-folders of ``filename`` kept)."""
    return repo_dir(repo).joinpath(*filename.split("/"))


def partial_path(repo: str, filename: str, digest: str) -> Path:
    """Where an unfinished download of ``filename`` with the given upstream digest is kept.

    The digest is part of the name so that a partial file is only ever resumed into the same
    upstream version.
    """
    return repo_dir(repo) / ".incomplete" / f"{filename.replace('/', '--')}.{digest}.part"


def partial_files(repo: str, filename: str) -> list[Path]:
    """Every partial download of ``filename`` (any upstream version) and its lock file."""
    folder = repo_dir(repo) / ".incomplete"
    if not folder.is_dir():
        return []
    stem = re.escape(filename.replace("/", "--"))
    pattern = re.compile(stem + r"\.[0-9a-f]{40,64}\.(part|lock)")
    return sorted(p for p in folder.iterdir() if pattern.fullmatch(p.name))


def offline_enabled() -> bool:
    """True when ``QAUDIO_OFFLINE`` or ``HF_HUB_OFFLINE`` is set to 1/true/yes/on."""
    return _env_true("QAUDIO_OFFLINE") or _env_true("HF_HUB_OFFLINE")


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else
    ``~/.cache/huggingface/hub``), where llama.cpp's ``-hf`` and ``huggingface-cli`` put
    model files; read now, not when huggingface_hub was imported."""
    override = os.environ.get("HF_HUB_CACHE", "").strip()
    if override:
        return Path(override).expanduser()
    home = os.environ.get("HF_HOME", "").strip()
    if home:
        return Path(home).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "huggingface" / "hub"


def hub_endpoint() -> str:
    """The hub's base URL: ``HF_ENDPOINT`` or ``https://huggingface.co``."""
    return (os.environ.get("HF_ENDPOINT", "").strip() or "https://huggingface.co").rstrip("/")


def _create_temp(path: Path) -> tuple[int, str]:
    """A new file next to ``path``, created with mode 0o666 so that the umask applies, as it
    does to any file a program writes (``tempfile.mkstemp`` gives 0o600 whatever the umask).
    When ``path`` exists, the new file takes its mode: rewriting keeps a ``chmod``."""
    try:
        mode: int | None = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        mode = None
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        if mode is not None:
            try:
                os.chmod(tmp, mode)
            except OSError:
                os.close(fd)
                Path(tmp).unlink(missing_ok=True)
                raise
        return fd, tmp
    raise FileExistsError(f"no free temporary name next to {path}")


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a synced temporary file and a rename, so
    that ``path`` holds the old content or the new, never half of it.

    A new file gets the usual permissions (0o666 less the umask: 0o644 under umask 022); a
    file replaced keeps its mode.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
