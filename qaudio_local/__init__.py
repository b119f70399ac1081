"""qaudio-local: Qwen2-Audio on consumer hardware through llama.cpp.

The public API; importing it does not load llama.cpp (that happens when a model
is created)::

    import qaudio_local as qa

    with qa.load_model("qwen2-audio", parallel=4) as model:   # plan, pull once, load
        for seg in qa.transcribe(model, "meeting.flac"):
            print(f"[{seg.start:.1f}] {seg.text}")
        chat = qa.Conversation(model)
        chat.add("What is said here?", ["meeting.flac"])
        print(chat.reply().wait().text)

Errors are the classes of :mod:`qaudio_local.errors` (all derive from ``QAudioError``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "AudioClip",
    "AudioModel",
    "Chunk",
    "Conversation",
    "Generation",
    "Message",
    "ModelOptions",
    "ResidentModel",
    "Result",
    "SamplingOptions",
    "Segment",
    "Timings",
    "TranscribeOptions",
    "Transcription",
    "TranscriptionInfo",
    "Usage",
    "VadOptions",
    "__version__",
    "convert_checkpoint",
    "load_audio",
    "load_clip",
    "load_model",
    "resolve_model",
    "transcribe",
    "user",
    "write_outputs",
]

if TYPE_CHECKING:
    from .audio import AudioClip, load_audio, load_clip
    from .audio.vad import VadOptions
    from .chat import Conversation
    from .convert import convert_checkpoint
    from .engine.model import AudioModel
    from .engine.options import ModelOptions, SamplingOptions
    from .engine.prompt import Message, user
    from .engine.results import Chunk, Generation, Result, Timings, Usage
    from .models.load import load_model
    from .models.resident import ResidentModel
    from .models.resolve import resolve_model
    from .transcription import (
        Segment,
        TranscribeOptions,
        Transcription,
        TranscriptionInfo,
        transcribe,
        write_outputs,
    )

_LAZY = {
    "load_audio": ".audio",
    "load_clip": ".audio",
    "AudioClip": ".audio",
    "resolve_model": ".models.resolve",
    "load_model": ".models.load",
    "ResidentModel": ".models.resident",
    "VadOptions": ".audio.vad",
    "Conversation": ".chat",
    **{
        n: ".transcription"
        for n in (
            "Segment",
            "TranscribeOptions",
            "Transcription",
            "TranscriptionInfo",
            "transcribe",
            "write_outputs",
        )
    },
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
