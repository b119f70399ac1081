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
    from .audio.decode import AudioClip, load_audio, load_clip
    from .convert import convert_checkpoint
    from .engine.model import AudioModel
    from .engine.options import ModelOptions, SamplingOptions
    from .engine.prompt import Message, user
    from .engine.results import Chunk, Generation, Result, Timings, Usage
    from .models.resolve import resolve_model

_LAZY = {
    "load_audio": ".audio.decode",
    "load_clip": ".audio.decode",
    "AudioClip": ".audio.decode",
    "resolve_model": ".models.resolve",
    "convert_checkpoint": ".convert",
    "Message": ".engine.prompt",
    "user": ".engine.prompt",
    "AudioModel": ".engine.model",
    "ModelOptions": ".engine.options",
    "SamplingOptions": ".engine.options",
    **{n: ".engine.results" for n in ("Chunk", "Generation", "Result", "Timings", "Usage")},
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'qaudio_local' has no attribute {name!r}")
