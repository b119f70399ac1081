"""ctypes declarations for the part of libggml the audio encoder uses.

llama-cpp-python ships libggml (graph ops, backends, allocator) next to libllama;
this module binds the few dozen functions needed to build and run a graph, from
the same libraries llama.cpp itself uses, so CPU and GPU backends are shared.
"""

from __future__ import annotations

import ctypes
import sys
from ctypes import POINTER, c_bool, c_char_p, c_float, c_int, c_int64, c_size_t, c_void_p
from functools import cache
from pathlib import Path
from typing import Any

GGML_TYPE_F32 = 0
GGML_TYPE_F16 = 1
GGML_OP_POOL_AVG = 1
GGML_BACKEND_DEVICE_TYPE_CPU = 0
GGML_MAX_DIMS = 4


class ggml_init_params(ctypes.Structure):  # noqa: N801 - C name
    _fields_ = [("mem_size", c_size_t), ("mem_buffer", c_void_p), ("no_alloc", c_bool)]


class ggml_tensor_head(ctypes.Structure):  # noqa: N801 - the leading fields of ggml_tensor
    _fields_ = [
        ("type", c_int),
        ("buffer", c_void_p),
        ("ne", c_int64 * GGML_MAX_DIMS),
        ("nb", c_size_t * GGML_MAX_DIMS),
    ]


T = POINTER(ggml_tensor_head)  # struct ggml_tensor *
CTX = c_void_p  # struct ggml_context *

# name: (restype, argtypes)
_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    # context and graph
    "ggml_init": (CTX, [ggml_init_params]),
    "ggml_free": (None, [CTX]),
    "ggml_tensor_overhead": (c_size_t, []),
    "ggml_graph_overhead_custom": (c_size_t, [c_size_t, c_bool]),
    "ggml_new_graph_custom": (c_void_p, [CTX, c_size_t, c_bool]),
    "ggml_build_forward_expand": (None, [c_void_p, T]),
    "ggml_graph_n_nodes": (c_int, [c_void_p]),
    "ggml_graph_node": (T, [c_void_p, c_int]),
    "ggml_nbytes": (c_size_t, [T]),
    "ggml_set_input": (None, [T]),
    "ggml_set_output": (None, [T]),
    "ggml_set_name": (T, [T, c_char_p]),
    # tensors and ops
    "ggml_new_tensor_1d": (T, [CTX, c_int, c_int64]),
    "ggml_new_tensor_2d": (T, [CTX, c_int, c_int64, c_int64]),
    "ggml_new_tensor_3d": (T, [CTX, c_int, c_int64, c_int64, c_int64]),
    "ggml_add": (T, [CTX, T, T]),
    "ggml_mul": (T, [CTX, T, T]),
    "ggml_mul_mat": (T, [CTX, T, T]),
    "ggml_norm": (T, [CTX, T, c_float]),
    "ggml_gelu_erf": (T, [CTX, T]),
    "ggml_soft_max_ext": (T, [CTX, T, T, c_float, c_float]),
    "ggml_flash_attn_ext": (T, [CTX, T, T, T, T, c_float, c_float, c_float]),
    "ggml_conv_1d": (T, [CTX, T, T, c_int, c_int, c_int]),
    "ggml_pool_1d": (T, [CTX, T, c_int, c_int, c_int, c_int]),
    "ggml_cont": (T, [CTX, T]),
    "ggml_transpose": (T, [CTX, T]),
    "ggml_permute": (T, [CTX, T, c_int, c_int, c_int, c_int]),
    "ggml_reshape_2d": (T, [CTX, T, c_int64, c_int64]),
    "ggml_reshape_3d": (T, [CTX, T, c_int64, c_int64, c_int64]),
    "ggml_view_2d": (T, [CTX, T, c_int64, c_int64, c_size_t, c_size_t]),
    # backends
    "ggml_backend_init_best": (c_void_p, []),
    "ggml_backend_init_by_type": (c_void_p, [c_int, c_char_p]),
    "ggml_backend_free": (None, [c_void_p]),
    "ggml_backend_name": (c_char_p, [c_void_p]),
    "ggml_backend_supports_op": (c_bool, [c_void_p, T]),
    "ggml_backend_get_default_buffer_type": (c_void_p, [c_void_p]),
    "ggml_backend_alloc_ctx_tensors": (c_void_p, [CTX, c_void_p]),
    "ggml_backend_alloc_ctx_tensors_from_buft": (c_void_p, [CTX, c_void_p]),
    "ggml_backend_get_device": (c_void_p, [c_void_p]),
    "ggml_backend_dev_backend_reg": (c_void_p, [c_void_p]),
    "ggml_backend_reg_get_proc_address": (c_void_p, [c_void_p, c_char_p]),
    "ggml_backend_buft_name": (c_char_p, [c_void_p]),
    "ggml_backend_buffer_free": (None, [c_void_p]),
    "ggml_backend_tensor_set": (None, [T, c_void_p, c_size_t, c_size_t]),
    "ggml_backend_tensor_get": (None, [T, c_void_p, c_size_t, c_size_t]),
    "ggml_backend_graph_compute": (c_int, [c_void_p, c_void_p]),
    "ggml_gallocr_new": (c_void_p, [c_void_p]),
    "ggml_gallocr_free": (None, [c_void_p]),
    "ggml_gallocr_alloc_graph": (c_bool, [c_void_p, c_void_p]),
}
_CPU_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "ggml_backend_is_cpu": (c_bool, [c_void_p]),
    "ggml_backend_cpu_set_n_threads": (None, [c_void_p, c_int]),
}


def _lib_path(lib_dir: Path, base: str) -> Path:
    names = {
        "win32": [f"{base}.dll", f"lib{base}.dll"],
        "darwin": [f"lib{base}.dylib", f"lib{base}.so"],
    }.get(sys.platform, [f"lib{base}.so"])
    for name in names:
        if (lib_dir / name).exists():
            return lib_dir / name
    raise OSError(f"{base} not found in {lib_dir}; reinstall llama-cpp-python")


class GGML:
    """The bound functions, as attributes (``g.ggml_add(ctx, a, b)``)."""

    def __init__(self) -> None:
        import llama_cpp  # loads libllama and, with it, the ggml libraries

        lib_dir = Path(llama_cpp.__file__).parent / "lib"
        mode = getattr(ctypes, "RTLD_GLOBAL", 0)
        libs = [
            ctypes.CDLL(str(_lib_path(lib_dir, name)), mode=mode) for name in ("ggml-base", "ggml")
        ]
        self._bind(libs, _SIGNATURES)
        try:
            cpu = ctypes.CDLL(str(_lib_path(lib_dir, "ggml-cpu")), mode=mode)
            self._bind([cpu, *libs], _CPU_SIGNATURES)
        except (OSError, AttributeError):  # a build with the CPU backend merged elsewhere
            self._bind(libs, _CPU_SIGNATURES)

    def _bind(self, libs: list[ctypes.CDLL], sigs: dict[str, tuple[Any, list[Any]]]) -> None:
        for name, (restype, argtypes) in sigs.items():
            for lib in libs:
                fn = getattr(lib, name, None)
                if fn is not None:
                    fn.restype, fn.argtypes = restype, argtypes
                    setattr(self, name, fn)
                    break
            else:
                raise AttributeError(f"{name} is not exported by this llama-cpp-python build")

    def __getattr__(self, name: str) -> Any:  # for type checkers: bound dynamically
        raise AttributeError(name)


def extra_buffer_types(g: GGML, backend: Any) -> dict[str, int]:
    """The extra buffer types of ``backend``'s device by name (``{"AMX": ..., "CPU_REPACK":
    ...}`` on a CPU whose build has them; ``{}`` elsewhere): where weights go to be run by
    the CPU backend's fast kernels (see :mod:`qaudio_local.engine.cpu_probe`)."""
    dev = g.ggml_backend_get_device(backend)
    reg = g.ggml_backend_dev_backend_reg(dev) if dev else None
    fn = (
        g.ggml_backend_reg_get_proc_address(reg, b"ggml_backend_dev_get_extra_bufts")
        if reg
        else None
    )
    if not fn:
        return {}
    get = ctypes.CFUNCTYPE(POINTER(c_void_p), c_void_p)(fn)
    found: dict[str, int] = {}
    array = get(dev)
    for i in range(64):  # a NULL-terminated array
        buft = array[i] if array else None
        if not buft:
            break
        found[(g.ggml_backend_buft_name(buft) or b"?").decode()] = buft
    return found


@cache
def ggml() -> GGML:
    """The process-wide bindings (loaded once)."""
    return GGML()
