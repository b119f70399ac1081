"""Progress shown on stderr: download bars (and, later, long-form progress)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from ..models.hub import Progress


def decimal_size(n: int) -> str:
    """Bytes in decimal units, as disk tools and the hub show them."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"  # pragma: no cover


class DownloadBars:
    """One click progress bar per file on stderr, fed by :class:`~..models.hub.Progress`."""

    def __init__(self) -> None:
        self._bar: Any = None
        self._name = ""
        self._total = 0
        self._drawn = 0.0

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        if p.file.filename == self._name and p.done < p.total and now - self._drawn < 0.1:
            return  # redraw at most 10 times a second
        self._drawn = now
        if p.file.filename != self._name:
            self.close()
            self._name = p.file.filename
            self._bar = click.progressbar(
                length=max(p.total, 1),
                label=p.file.filename,
                file=sys.stderr,
                show_pos=False,
                show_eta=True,
                item_show_func=lambda _: None,
            )
            self._bar.__enter__()
            self._total = p.total
        self._bar.label = f"{p.file.filename} {decimal_size(p.done)}/{decimal_size(self._total)}"
        self._bar.update(p.done - self._bar.pos)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None

    @contextmanager
    def active(self) -> Iterator[DownloadBars]:
        try:
            yield self
        finally:
            self.close()
