"""File modes and the umask, for tests of what the CLI and the library write."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    """Run the block under ``mask`` (the files it creates get ``0o666 & ~mask``)."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def current_umask() -> int:
    old = os.umask(0o022)
    os.umask(old)
    return old


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)
