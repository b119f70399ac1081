"""Process-wide llama.cpp plumbing: logging, backend initialisation, capabilities.

llama.cpp writes its logs to stderr by default; the library must not print, so
its messages are routed to the ``qaudio_local.llama`` logger and the last ones are
kept to explain a failure.
"""

from __future__ import annotations

import collections
import ctypes
import logging
import re
import threading
from dataclasses import dataclass
from typing import Any

from ...errors import DependencyMissingError

logger = logging.getLogger("qaudio_local.llama")

logger.addHandler(logging.NullHandler())  # the library never prints

# enum ggml_log_level: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5 (continues a line)
_LEVELS = {
    0: logging.CRITICAL,
    1: logging.DEBUG,
    2: logging.INFO,
    3: logging.WARNING,
    4: logging.ERROR,
}
_recent: collections.deque[str] = collections.deque(maxlen=1024)
_lock = threading.Lock()
_state: dict[str, Any] = {"lines": 0}


def llama_modules() -> tuple[Any, Any]:
    """Import ``llama_cpp`` and ``llama_cpp.mtmd_cpp`` lazily, initialised once.

    Raises:
        DependencyMissingError: llama-cpp-python is not installed.
    """
    with _lock:
        if "llama" in _state:
            return _state["llama"], _state["mtmd"]
        try:
            import llama_cpp
            import llama_cpp.mtmd_cpp as mtmd
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise DependencyMissingError("llama-cpp-python", "all") from exc

        @llama_cpp.llama_log_callback
        def _on_log(level: int, text: bytes, _user: ctypes.c_void_p) -> None:
            msg = text.decode("utf-8", errors="replace")
            if level != 5:  # 5 continues the previous line
                _recent.append(msg.rstrip())
                _state["lines"] += 1
            elif _recent:
                _recent[-1] += msg.rstrip()
            logger.log(_LEVELS.get(level, logging.DEBUG), "%s", msg.rstrip())

        llama_cpp.llama_log_set(_on_log, ctypes.c_void_p(0))
        mtmd.mtmd_log_set(_on_log, ctypes.c_void_p(0))
        mtmd.mtmd_helper_log_set(_on_log, ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()
        _state.update(llama=llama_cpp, mtmd=mtmd, callback=_on_log)
        return llama_cpp, mtmd


def log_mark() -> int:
    """A position in llama.cpp's log, for :func:`log_since`."""
    return int(_state["lines"])


def log_since(mark: int) -> list[str]:
    """The log lines written after ``mark`` (at most the last 1024)."""
    n = min(int(_state["lines"]) - mark, len(_recent))
    return list(_recent)[len(_recent) - n :] if n > 0 else []


def recent_errors(n: int = 3) -> str:
    """The last llama.cpp log lines that look like errors, joined for a message."""
    lines = [ln for ln in _recent if re.search(r"error|fail|unable|invalid|abort", ln, re.I)]
    return "; ".join(lines[-n:])


@dataclass(frozen=True)
class BackendInfo:
    """What the installed llama.cpp build can do.

    Attributes:
        version: llama-cpp-python version.
        backends: Compute backends compiled in, e.g. ``("CPU",)`` or ``("CUDA", "CPU")``.
        gpu_offload: Whether layers can be offloaded to a GPU.
        system_info: llama.cpp's own one-line summary.
    """

    version: str
    backends: tuple[str, ...]
    gpu_offload: bool
    system_info: str


def backend_info() -> BackendInfo:
    """Describe the llama.cpp build in use (no model needed)."""
    llama_cpp, _ = llama_modules()
    info = llama_cpp.llama_print_system_info().decode("utf-8", errors="replace").strip()
    names = []
    for part in info.split("|"):
        m = re.match(r"\s*([A-Za-z][A-Za-z0-9_-]*)\s*:", part)
        if m and m.group(1).isupper() and m.group(1) not in names:
            names.append(m.group(1))
    backends = tuple(
        n
        for n in names
        if n
        in {
            "CPU",
            "CUDA",
            "METAL",
            "VULKAN",
            "HIP",
            "ROCM",
            "SYCL",
            "OPENCL",
            "CANN",
            "MUSA",
            "BLAS",
            "RPC",
            "KOMPUTE",
        }
    ) or ("CPU",)
    return BackendInfo(
        version=str(llama_cpp.__version__),
        backends=backends,
        gpu_offload=bool(llama_cpp.llama_supports_gpu_offload()),
        system_info=info,
    )


def give_back_heap() -> None:
    """Return the C heap's free pages to the system (glibc's ``malloc_trim``), so that a
    closed model's memory shows as freed; a no-op where the C library has no such call."""
    try:
        libc = ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows)
        return
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    trim(0)
