"""What the fuzz cases of every kind share: picking from a list, and how an exception
classifies (a one-line ``QAudioError`` is clean, anything else foreign)."""

from __future__ import annotations

from typing import Any

import numpy as np

SAMPLE_RATE = 16000


def classify_exception(exc: BaseException) -> dict[str, Any]:
    """A case's outcome from the exception it ended with (a messy message is wrong)."""
    from qaudio_local.errors import QAudioError

    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, QAudioError):
        msg = str(exc)
        if "\n" in msg.strip() or len(msg) > 1200:
            return {"outcome": "wrong", "detail": f"messy message: {text[:300]}"}
        return {"outcome": "clean", "detail": text[:300]}
    return {"outcome": "foreign", "detail": text[:400]}


def pick_one(rng: np.random.Generator, items: Any) -> Any:
    """One of ``items``, exactly as written (numpy's choice would round big ints to floats)."""
    seq = list(items)
    return seq[int(rng.integers(len(seq)))]
