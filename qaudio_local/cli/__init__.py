"""The ``qaudio`` command line: parse, call the library, render.

``main`` (the click group, the one table mapping exceptions to wording and exit codes) is in
:mod:`.main`; each command family has a module of its own, imported here to register it:
:mod:`.run` (run), :mod:`.plan` (plan, hardware), :mod:`.hub` (pull, list, verify, rm),
:mod:`.tools` (convert, selftest), :mod:`.chat` (chat), :mod:`.transcribe` (transcribe),
:mod:`.serve` (serve), :mod:`.ui` (ui), :mod:`.listen` (listen).
May import every other part of the package.
"""

from __future__ import annotations

from . import chat, hub, listen, plan, run, serve, tools, transcribe, ui  # noqa: F401  (registers)
from .main import main

__all__ = ["main"]
