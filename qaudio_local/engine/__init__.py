"""The llama.cpp runtime: audio and text in, streamed tokens out.

Backend plumbing and ctypes bindings (:mod:`.backend`, :mod:`.ggml_api`), the checks that
keep a bad GGUF away from llama.cpp (:mod:`.gguf`), the CPU-kernel probe's verdict
(:mod:`.cpu_probe`), the ggml audio encoder (:mod:`.encoder`), prompt rendering
(:mod:`.prompt`), prefill (:mod:`.prefill`), options (:mod:`.options`), typed results
(:mod:`.results`) and :class:`AudioModel` (:mod:`.model`). Imports :mod:`qaudio_local.audio`
and the root.

The names below are its public face for the rest of the package (``models`` uses only
these); they load lazily, so importing this package does not load llama.cpp.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "AudioModel": ".model",
    "ModelOptions": ".options",
    "SamplingOptions": ".options",
    "Chunk": ".results",
    "Generation": ".results",
    "Result": ".results",
    "Timings": ".results",
    "Usage": ".results",
    "Message": ".prompt",
    "user": ".prompt",
    "BackendInfo": ".bindings.backend",
    "backend_info": ".bindings.backend",
    "KernelVerdict": ".cpu_probe",
    "cpu_kernel_verdict": ".cpu_probe",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
