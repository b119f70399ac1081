"""K-quant levels through llama.cpp's own quantizer (``llama_model_quantize``).

The registry's quantizations (Q3_K_M ... Q6_K) are mixes that llama.cpp chooses per tensor
(for example Q4_K_M keeps ``attn_v`` and half of ``ffn_down`` in Q6_K); only its quantizer
makes them the way community GGUFs are made, so the converter writes an F16 text model and
hands it to that quantizer. The projector is not a llama model and stays with the converter.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from ..errors import ConversionError

# name -> enum llama_ftype (llama.h)
LLAMA_FTYPES = {"Q3_K_M": 12, "Q4_K_M": 15, "Q5_K_M": 17, "Q6_K": 18, "Q8_0": 7}


def quantize_text_model(src: Path, dst: Path, level: str, n_threads: int | None = None) -> None:
    """Quantize the F16/F32 text-model GGUF ``src`` into ``dst`` at ``level``, atomically.

    ``dst`` appears only when complete: the quantizer writes ``dst.partial``, which is
    renamed on success and removed on failure.

    Args:
        src: A qwen2 text-model GGUF in F16 or F32 (as the converter writes it).
        dst: The output path.
        level: One of :data:`LLAMA_FTYPES`.
        n_threads: Quantizer threads (default: all cores).

    Raises:
        ConversionError: Unknown level, or llama.cpp failed (disk full, unreadable input).
    """
    key = level.upper()
    if key not in LLAMA_FTYPES:
        raise ConversionError(
            f"unknown quantization {level!r}; choose one of {', '.join(LLAMA_FTYPES)}",
            path=str(src),
        )
    from ..engine.bindings.backend import llama_modules, recent_errors

    llama, _ = llama_modules()
    params = llama.llama_model_quantize_default_params()
    params.nthread = n_threads or os.cpu_count() or 1
    params.ftype = LLAMA_FTYPES[key]
    partial = dst.with_name(dst.name + ".partial")
    try:
        rc = llama.llama_model_quantize(
            str(src).encode(), str(partial).encode(), ctypes.byref(params)
        )
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    if rc != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        detail = recent_errors() or "no details"
        hint = "; the disk may be full" if "write" in detail.lower() else ""
        raise ConversionError(
            f"llama.cpp could not quantize {src.name} to {key} (code {rc}): {detail}{hint}",
            path=str(dst),
        )
    os.replace(partial, dst)
