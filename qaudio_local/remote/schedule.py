"""Which queued request a server with a free slot takes: the one an earliest-finish list
schedule gives it.

The queue is laid out in order over every slot of every server that is up: each request
goes to the slot that would finish it first, given when each slot frees (its request's
audio over the server's learnt speed; a request past its estimate is taken to need as
long again as it has had) and each server's speed. A free server takes the first request
laid on it; if none is, it waits, because faster servers will finish all that is queued
sooner than it would. A free slot that would finish within 10% of the best takes the
request anyway: nobody waits for a small gain, and the estimates are rough.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

NEAR = 1.1  # a free slot within this factor (plus 50 ms) of the best finish takes the job


@dataclass(frozen=True)
class Slot:
    """One place for a request on a server.

    Attributes:
        server: Its server's name.
        free_at: When it frees (``now`` if free).
        rate: Seconds of audio it handles per second.
    """

    server: str
    free_at: float
    rate: float


def slot_free_at(start: float, audio_seconds: float, rate: float, now: float) -> float:
    """When a slot running a request begun at ``start`` frees."""
    end = start + audio_seconds / rate
    return end if end > now else now + (now - start)


def pick(
    server: str, slots: Sequence[Slot], jobs: Sequence[tuple[float, str | None]], now: float
) -> int | None:
    """The index in ``jobs`` (queued requests in order: their audio seconds and the server
    they last failed on) that ``server`` should take now, or ``None``."""
    free = [s.free_at for s in slots]
    servers = {s.server for s in slots}
    for i, (audio, avoid) in enumerate(jobs):
        allowed = [k for k, s in enumerate(slots) if s.server != avoid or len(servers) == 1]
        if not allowed:
            continue
        ends = {k: free[k] + audio / slots[k].rate for k in allowed}
        best = min(allowed, key=lambda k: ends[k])
        mine = [k for k in allowed if slots[k].server == server and free[k] <= now]
        if mine and min(ends[k] for k in mine) <= NEAR * ends[best] + 0.05:
            return i
        free[best] = ends[best]
    return None
