"""Which prebuilt llama-cpp-python wheel runs on a GPU, so that nobody compiles by default.

llama-cpp-python publishes GPU builds on its own wheel index (one folder per backend:
CUDA versions, Metal, ROCm, HIP for Radeon on Windows, Vulkan), for CPython 3.10-3.12. A
CUDA wheel runs where the driver supports its CUDA version (``nvidia-smi`` prints the
newest it supports) and the GPU's compute capability is in the wheel's range (CUDA 11.8:
6.0-8.9; 12.x: 6.0 and newer; 13.x: 7.5 and newer). Pure functions: the probes that feed
them live in :mod:`.hardware_probes`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .hardware_probes import Gpu

WHEEL_INDEX = "https://abetlen.github.io/llama-cpp-python/whl"
CUDA_WHEELS = ((11, 8), (12, 1), (12, 2), (12, 3), (12, 4), (12, 5), (13, 0), (13, 2))
WHEEL_PYTHONS = ((3, 10), (3, 11), (3, 12))


@dataclass(frozen=True)
class Wheel:
    """A prebuilt build for one GPU.

    Attributes:
        index: The wheel index's folder, e.g. ``"cu124"``, ``"metal"``, ``"rocm72"``.
        why: What it was chosen from, for people.
    """

    index: str
    why: str

    def command(self, version: str) -> str:
        """The one install command (``--only-binary`` so that pip never compiles instead)."""
        return (
            f"pip install --force-reinstall --no-cache-dir --only-binary llama-cpp-python "
            f'"llama-cpp-python=={version}" --extra-index-url {WHEEL_INDEX}/{self.index}'
        )


def _version(text: str | None) -> tuple[int, int] | None:
    m = re.fullmatch(r"\s*(\d+)\.(\d+)(?:\.\d+)?\s*", text or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def _runs_on(wheel: tuple[int, int], cc: tuple[int, int] | None) -> bool:
    """A CUDA wheel's kernels cover this compute capability (unknown: assume so)."""
    if cc is None:
        return True
    if wheel == (11, 8):
        return (6, 0) <= cc <= (8, 9)
    return cc >= ((7, 5) if wheel[0] >= 13 else (6, 0))


def cuda_wheel(cuda: str | None, compute_capability: str | None) -> Wheel | None:
    """The newest CUDA wheel the driver (``cuda``: the version ``nvidia-smi`` reports) and
    the GPU (its compute capability) can run, or ``None``."""
    driver = _version(cuda)
    if driver is None:
        return None
    cc = _version(compute_capability)
    fits = [v for v in CUDA_WHEELS if v <= driver and _runs_on(v, cc)]
    if not fits:
        return None
    major, minor = max(fits)
    where = f"driver supports CUDA {driver[0]}.{driver[1]}"
    if cc is not None:
        where += f", compute capability {cc[0]}.{cc[1]}"
    return Wheel(f"cu{major}{minor}", f"CUDA {major}.{minor} build ({where})")


def prebuilt_wheel(
    gpu: Gpu, system: str, machine: str, python: tuple[int, int], cuda: str | None
) -> Wheel | None:
    """The prebuilt wheel for ``gpu`` on this platform and Python, or ``None`` (compile).

    Args:
        gpu: The GPU to run on.
        system: ``platform.system()``.
        machine: ``platform.machine()``.
        python: The interpreter's ``(major, minor)``.
        cuda: The CUDA version the NVIDIA driver supports (``nvidia-smi``), if known.
    """
    if python[:2] not in WHEEL_PYTHONS:
        return None
    if gpu.vendor == "nvidia" and system in ("Linux", "Windows"):
        return cuda_wheel(cuda, gpu.compute_capability)
    if gpu.vendor == "apple" and system == "Darwin" and machine == "arm64":
        return Wheel("metal", "Metal build for Apple Silicon")
    if gpu.vendor == "amd" and system == "Linux":
        return Wheel("rocm72", "ROCm build")
    if gpu.vendor == "amd" and system == "Windows":
        return Wheel("hip-radeon", "HIP build for Radeon on Windows")
    return None
