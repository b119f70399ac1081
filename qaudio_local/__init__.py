"""qaudio-local: Qwen2-Audio on consumer hardware through llama.cpp.

The public API; importing it does not load llama.cpp (that happens when a model
is created).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "AudioClip",
    "AudioModel",
    "Chunk",
    "Generation",
    "Message",
    "ModelOptions",
    "Result",
    "SamplingOptions",
    "Timings",
    "Usage",
    "__version__",
    "convert_checkpoint",
    "load_audio",
    "load_clip",
    "resolve_model",
    "user",
]

if TYPE_CHECKING:
    from .audio import AudioClip, load_audio, load_clip
    from .convert import convert_checkpoint
    from .engine.model import (
        AudioModel,
        Chunk,
        Generation,
        ModelOptions,
        Result,
        SamplingOptions,
        Timings,
        Usage,
    )
    from .engine.prompt import Message, user
    from .models.resolve import resolve_model

_LAZY = {
    "load_audio": ".audio",
    "load_clip": ".audio",
    "AudioClip": ".audio",
    "resolve_model": ".models.resolve",
    "convert_checkpoint": ".convert",
    "Message": ".engine.prompt",
    "user": ".engine.prompt",
    **{
        n: ".engine.model"
        for n in (
            "AudioModel",
            "Chunk",
            "Generation",
            "ModelOptions",
            "Result",
            "SamplingOptions",
            "Timings",
            "Usage",
        )
    },
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'qaudio_local' has no attribute {name!r}")
