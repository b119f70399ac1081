"""What this machine has: GPUs, CPU cores, RAM, and whether llama.cpp can offload to a GPU.

No policy lives here (that is :mod:`qaudio_local.planner`). Every probe is defensive: a missing
tool, a timeout or output that does not parse means "nothing found", never an exception.
Probes, in order: NVIDIA through NVML (``pynvml``, only if it is installed) or ``nvidia-smi``;
AMD through ``rocm-smi``; Apple Silicon unified memory through ``sysctl``; RAM from
``/proc/meminfo`` (capped by a cgroup v2 limit), ``sysctl``/``vm_stat`` on macOS,
``GlobalMemoryStatusEx`` on Windows, ``sysconf`` elsewhere.

Memory figures are bytes; the ``--vram`` / ``--ram`` overrides are GiB (2**30 bytes).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from . import hardware_probes as probes
from .hardware_probes import GIB, Gpu

LLAMA_CPP_PIN = "0.3.36"  # the llama-cpp-python release pyproject.toml allows
_REINSTALL = (
    'CMAKE_ARGS="{flag}" pip install --force-reinstall --no-cache-dir llama-cpp-python=={version}'
)
_BUILD_FLAGS = {"nvidia": "-DGGML_CUDA=on", "amd": "-DGGML_HIP=on", "apple": "-DGGML_METAL=on"}


@dataclass(frozen=True)
class Hardware:
    """What :func:`detect` found.

    Attributes:
        gpus: GPUs, in device order.
        cpu_cores: Logical cores this process may use.
        physical_cores: Physical cores, where cheap to learn; else ``None``.
        ram_total: Installed RAM (or the container's limit), bytes; 0 if unknown.
        ram_available: RAM available to new work, bytes (replaced by a ``--ram`` override).
        llama_gpu_offload: Whether the installed llama.cpp build can offload layers to a GPU.
        llama_backends: Its compute backends, e.g. ``("CUDA", "CPU")``; empty if unknown.
        llama_version: The llama-cpp-python version, if installed.
        system: ``platform.system()``, e.g. ``"Linux"``.
        machine: ``platform.machine()``, e.g. ``"x86_64"``.
        cpu_kernels: The CPU-kernel probe's one-line verdict (see
            :mod:`qaudio_local.engine.cpu_probe`), or ``""`` if llama.cpp was not asked.
        cpu_fast_kernels: Whether quantized models load with llama.cpp's fast kernels here.
        cpu_kernels_cause: Why they fault, when the build explains it (one line), else ``""``.
        cpu_matrix_units: llama.cpp's AMX kernels run here, so the audio encoder runs a
            Q8_0 projector's matrix weights on the CPU's matrix units.
        vram_override: The ``--vram`` figure in bytes, if one was given.
        ram_override: The ``--ram`` figure in bytes, if one was given.
        notes: What the probes could not learn, one short line each.
        cuda_version: The newest CUDA the NVIDIA driver supports (``nvidia-smi``), if any.
    """

    gpus: tuple[Gpu, ...]
    cpu_cores: int
    physical_cores: int | None
    ram_total: int
    ram_available: int
    llama_gpu_offload: bool
    llama_backends: tuple[str, ...] = ()
    llama_version: str | None = None
    system: str = ""
    machine: str = ""
    cpu_kernels: str = ""
    cpu_fast_kernels: bool = True
    cpu_kernels_cause: str = ""
    cpu_matrix_units: bool = False
    vram_override: int | None = None
    ram_override: int | None = None
    notes: tuple[str, ...] = ()
    cuda_version: str | None = None

    @property
    def best_gpu(self) -> Gpu | None:
        """The GPU with the most free memory (the one a plan uses), or ``None``."""
        return max(self.gpus, key=lambda g: (g.free_bytes, -g.index), default=None)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


# --- llama.cpp build ----------------------------------------------------------------------


def _backend() -> tuple[bool, tuple[str, ...], str | None, str | None]:
    """(can offload, backends, llama-cpp-python version, a note if it could not be asked)."""
    try:
        from ..engine import backend_info

        info = backend_info()
    except Exception as exc:
        return False, (), None, f"llama.cpp build not inspected ({exc})"
    return info.gpu_offload, info.backends, info.version, None


def _cpu_kernels() -> tuple[str, bool, str, bool, str | None]:
    """(the probe's verdict line, fast kernels usable, why they fault if known, the AMX
    kernels run, a note if it could not be asked)."""
    try:
        from ..engine import cpu_kernel_verdict

        verdict = cpu_kernel_verdict()
    except Exception as exc:
        return "", True, "", False, f"CPU kernels not probed ({exc})"
    return (
        verdict.summary(),
        verdict.text_fast_ok,
        verdict.cause(),
        verdict.matrix_units_ok,
        None,
    )


def detect(
    vram_gb: float | None = None,
    ram_gb: float | None = None,
    *,
    llama_gpu_offload: bool | None = None,
    proc_dir: Path = Path("/proc"),
    cgroup_dir: Path = Path("/sys/fs/cgroup"),
) -> Hardware:
    """Probe this machine. Never raises for a failed probe: it reports nothing found instead.

    Args:
        vram_gb: GiB of GPU memory to use instead of the free memory found (``--vram``). With
            no GPU detected, a GPU of that size is assumed (for tools that cannot see it).
        ram_gb: GiB of RAM to use instead of the available RAM found (``--ram``).
        llama_gpu_offload: Whether llama.cpp can offload; ``None`` asks the installed build
            (which imports llama_cpp).
        proc_dir: Where ``meminfo`` and ``cpuinfo`` are read on Linux (for tests).
        cgroup_dir: Where a cgroup v2 memory limit is read on Linux (for tests).

    Raises:
        ValueError: A negative override.
    """
    if (vram_gb is not None and vram_gb < 0) or (ram_gb is not None and ram_gb < 0):
        raise ValueError("--vram and --ram take a size in GiB of 0 or more")
    system, machine = probes.platform_id()
    gpus, notes = probes.find_gpus(system, machine)
    ram = probes.ram(system, proc_dir, cgroup_dir)
    if ram is None:
        notes.append("RAM size unknown; pass --ram GB")
    backends: tuple[str, ...] = ()
    version = None
    kernels, fast, cause, amx = "", True, "", False
    if llama_gpu_offload is None:
        llama_gpu_offload, backends, version, note = _backend()
        notes += [note] if note else []
        if version is not None:
            kernels, fast, cause, amx, note = _cpu_kernels()
            notes += [note] if note else []
    hw = Hardware(
        gpus=tuple(gpus),
        cpu_cores=probes.logical_cores(),
        physical_cores=probes.physical_cores(system, proc_dir),
        ram_total=ram[0] if ram else 0,
        ram_available=ram[1] if ram else 0,
        llama_gpu_offload=llama_gpu_offload,
        llama_backends=backends,
        llama_version=version,
        cpu_kernels=kernels,
        cpu_fast_kernels=fast,
        cpu_kernels_cause=cause,
        cpu_matrix_units=amx,
        cuda_version=probes.cuda_version() if any(g.vendor == "nvidia" for g in gpus) else None,
        system=system,
        machine=machine,
        notes=tuple(notes),
    )
    return with_overrides(hw, vram_gb=vram_gb, ram_gb=ram_gb)


def with_overrides(hw: Hardware, vram_gb: float | None, ram_gb: float | None) -> Hardware:
    """``hw`` with the free GPU memory and/or available RAM replaced (GiB figures)."""
    if vram_gb is not None:
        vram = int(vram_gb * GIB)
        gpus = tuple(
            replace(g, free_bytes=vram, total_bytes=max(g.total_bytes, vram)) for g in hw.gpus
        ) or (Gpu(0, "GPU (not detected; size from --vram)", "unknown", vram, vram),)
        hw = replace(hw, gpus=gpus, vram_override=vram)
    if ram_gb is not None:
        ram = int(ram_gb * GIB)
        hw = replace(hw, ram_available=ram, ram_total=max(hw.ram_total, ram), ram_override=ram)
    return hw


def cpu_only_build_warning(hw: Hardware) -> str | None:
    """The warning, with the exact install command, for a GPU that llama.cpp cannot use:
    a prebuilt wheel for that GPU and driver where one exists (see :mod:`.wheels`), else
    the rebuild with the backend switched on.

    ``None`` when there is no NVIDIA/AMD/Apple GPU or when the build can offload.
    """
    import sys

    from .wheels import prebuilt_wheel

    if hw.llama_gpu_offload:
        return None
    gpu = next((g for g in hw.gpus if g.vendor in _BUILD_FLAGS), None)
    if gpu is None:
        return None
    version = hw.llama_version or LLAMA_CPP_PIN
    build = _REINSTALL.format(flag=_BUILD_FLAGS[gpu.vendor], version=version)
    toolkit = {"nvidia": "the CUDA toolkit", "amd": "ROCm/HIP", "apple": "Xcode command-line tools"}
    head = (
        f"found {gpu.name}, but the installed llama-cpp-python is a CPU-only build and cannot "
        "use it; to run on the GPU, "
    )
    wheel = prebuilt_wheel(gpu, hw.system, hw.machine, sys.version_info[:2], hw.cuda_version)
    if wheel is None:
        return f"{head}install {toolkit[gpu.vendor]} and reinstall with: {build}"
    return (
        f"{head}install its prebuilt {wheel.why}: {wheel.command(version)} "
        f"(or compile it: install {toolkit[gpu.vendor]}, then {build})"
    )


__all__ = ["GIB", "Gpu", "Hardware", "cpu_only_build_warning", "detect", "with_overrides"]
