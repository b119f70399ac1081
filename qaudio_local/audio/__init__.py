"""Audio in: decode files, bytes and arrays (:mod:`.load`, with :mod:`.sources`,
:mod:`.arrays`, :mod:`.mpeg`, :mod:`.validate` and the limits in :mod:`.limits`), read long
audio as a stream (:mod:`.stream`), find speech (:mod:`.vad`), Whisper-identical log-mel
(:mod:`.features`) and the <= 30 s windows the encoder sees (:mod:`.windows`).

Imports only the package root (``errors``, ``config``, ``paths``); everything above may use it.

The names below are the front end's public face for the rest of the package and for
library users (``from qaudio_local.audio import load_audio``); they load lazily, so importing
this package (or :mod:`.features`) does not load soundfile or soxr.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "AudioClip",
    "AudioSource",
    "BLOCK_BYTES",
    "BLOCK_FRAMES",
    "MAX_CHANNELS_FIRST",
    "MAX_FILE_CHANNELS",
    "MAX_PEAK",
    "MAX_RATE",
    "MAX_SECONDS",
    "MAX_STREAM_BYTES",
    "MIN_RATE",
    "RESAMPLE_QUALITY",
    "load_audio",
    "load_clip",
    "read_stdin_audio",
]

if TYPE_CHECKING:
    from .limits import (
        BLOCK_BYTES,
        BLOCK_FRAMES,
        MAX_CHANNELS_FIRST,
        MAX_FILE_CHANNELS,
        MAX_PEAK,
        MAX_RATE,
        MAX_SECONDS,
        MAX_STREAM_BYTES,
        MIN_RATE,
        RESAMPLE_QUALITY,
    )
    from .load import AudioClip, load_audio, load_clip
    from .sources import AudioSource, read_stdin_audio

_PUBLIC = {
    "AudioClip": ".load",
    "load_audio": ".load",
    "load_clip": ".load",
    "AudioSource": ".sources",
    "read_stdin_audio": ".sources",
    **{
        name: ".limits"
        for name in (
            "BLOCK_BYTES",
            "BLOCK_FRAMES",
            "MAX_CHANNELS_FIRST",
            "MAX_FILE_CHANNELS",
            "MAX_PEAK",
            "MAX_RATE",
            "MAX_SECONDS",
            "MAX_STREAM_BYTES",
            "MIN_RATE",
            "RESAMPLE_QUALITY",
        )
    },
}


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
