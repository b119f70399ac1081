"""How many threads ggml computes with when the user does not say: one per physical core.

Matrix products keep a core's vector units busy, so a second hyper-thread on the same core
only competes for them (llama.cpp's own tools default to the physical count for the same
reason). Counted among the CPUs this process may run on (a container's or ``taskset``'s
share, not the host's), from Linux's ``/proc/cpuinfo``; elsewhere, or when it cannot be
read, every CPU the process may use.
"""

from __future__ import annotations

import contextlib
import os
import re
from functools import cache
from pathlib import Path


def physical_cores_in(cpuinfo: str, allowed: set[int] | None = None) -> int | None:
    """Distinct (package, core) pairs in ``/proc/cpuinfo`` text, among the ``allowed``
    processors (all if ``None``); ``None`` when the text does not say."""
    cores = set()
    for block in cpuinfo.split("\n\n"):
        fields = dict(re.findall(r"^(processor|physical id|core id)\s*:\s*(\d+)", block, re.M))
        if "physical id" not in fields or "core id" not in fields:
            continue
        if allowed is not None and int(fields.get("processor", -1)) not in allowed:
            continue
        cores.add((fields["physical id"], fields["core id"]))
    return len(cores) or None


def _allowed() -> set[int] | None:
    with contextlib.suppress(AttributeError, OSError):
        return set(os.sched_getaffinity(0))
    return None


def threads_for(cpuinfo: str | None, allowed: set[int] | None, cpu_count: int | None) -> int:
    """The default thread count from what the machine says (see the module docstring)."""
    usable = len(allowed) if allowed else (cpu_count or 1)
    physical = physical_cores_in(cpuinfo, allowed) if cpuinfo else None
    return max(1, min(physical, usable) if physical else usable)


@cache
def default_threads() -> int:
    """Threads for ggml when ``--threads`` is not given: the physical cores this process
    may use (at least 1)."""
    text = None
    with contextlib.suppress(OSError):
        text = Path("/proc/cpuinfo").read_text()
    return threads_for(text, _allowed(), os.cpu_count())
