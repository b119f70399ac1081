"""Keep C libraries from writing to the terminal.

Some native code (libmpg123 inside libsndfile, for one) writes warnings straight to
file descriptor 2, which no Python logging setting reaches. :func:`quiet_c_stderr`
points that descriptor at a temporary file for the duration of a call and forwards
what was written to the ``qaudio_local.native`` logger (shown with ``--debug``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Iterator

logger = logging.getLogger("qaudio_local.native")
logger.addHandler(logging.NullHandler())
_lock = threading.Lock()


@contextlib.contextmanager
def quiet_c_stderr() -> Iterator[None]:
    """Capture native writes to fd 2 while the block runs (serialised across threads)."""
    try:
        fd = sys.__stderr__.fileno() if sys.__stderr__ is not None else 2
    except (AttributeError, OSError, ValueError):  # no real stderr (embedded, pythonw)
        yield
        return
    with _lock, tempfile.TemporaryFile() as sink:
        saved = os.dup(fd)
        try:
            with contextlib.suppress(OSError, ValueError):
                sys.__stderr__.flush()  # type: ignore[union-attr]
            os.dup2(sink.fileno(), fd)
            yield
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", errors="replace").strip()
            if text:
                logger.debug("%s", text)
