"""The llama.cpp runtime: audio and text in, streamed tokens out.

At its centre are :class:`AudioModel` (:mod:`.model`), how a model is loaded and how
tokens are chosen (:mod:`.options`) and what comes back (:mod:`.results`). On the way in, a
prompt is rendered (:mod:`.prompt`), its audio encoded by the ggml audio encoder
(:mod:`.encoder`) and fed (:mod:`.prefill`); the rooms beside them are the ctypes plumbing
over llama-cpp-python and libggml (:mod:`.bindings`), the checks that keep a bad GGUF away
from llama.cpp (:mod:`.gguf`) and the scheduler of parallel sequences (:mod:`.batch`);
:mod:`.cpu_probe` decides whether llama.cpp's fast CPU kernels may run here, and
:mod:`.threads` how many threads compute by default. Imports
:mod:`qaudio_local.audio` and the root.

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
    "default_threads": ".threads",
    "physical_cores_in": ".threads",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
