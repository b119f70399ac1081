"""The probes behind :func:`qaudio_local.hardware.detect`: vendor tools, RAM and cores.

Each probe returns what it found or nothing; none raises for a missing tool, a timeout or
output it cannot parse. Commands go through :func:`run_probe`, which tests replace with
canned outputs. The ``parse_*`` functions are pure and take the tools' text.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import platform
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

MIB = 1 << 20
GIB = 1 << 30
PROBE_TIMEOUT_S = 5.0
_NVIDIA_FIELDS = "index,name,memory.total,memory.free,compute_cap,driver_version"


@dataclass(frozen=True)
class Gpu:
    """One GPU.

    Attributes:
        index: The device index its vendor tools use.
        name: Marketing name, e.g. ``"NVIDIA GeForce RTX 4070"``.
        vendor: ``"nvidia"``, ``"amd"``, ``"apple"`` or ``"unknown"`` (given by ``--vram`` only).
        total_bytes: Memory on the device (for Apple: all unified memory).
        free_bytes: Memory free now (replaced by a ``--vram`` override).
        compute_capability: e.g. ``"8.9"`` (NVIDIA) or ``"gfx1100"`` (AMD), if known.
        driver: Driver version, if known.
        unified: Whether the memory is shared with the CPU (Apple Silicon).
    """

    index: int
    name: str
    vendor: str
    total_bytes: int
    free_bytes: int
    compute_capability: str | None = None
    driver: str | None = None
    unified: bool = False


def run_probe(cmd: list[str], timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Run a probe command; its stdout, or ``None`` if it is missing, fails or times out."""
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def platform_id() -> tuple[str, str]:
    """``(platform.system(), platform.machine())``, e.g. ``("Darwin", "arm64")``."""
    return platform.system(), platform.machine()


def _int(text: object) -> int | None:
    try:
        return int(float(str(text).strip()))
    except (TypeError, ValueError, OverflowError):
        return None


# --- NVIDIA -------------------------------------------------------------------------------


def probe_nvml() -> list[Gpu] | None:
    """GPUs through NVML, or ``None`` when pynvml is missing or NVML fails."""
    try:
        import pynvml  # optional, never a hard dependency
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:
        return None
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        driver = driver.decode() if isinstance(driver, bytes) else str(driver)
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(h)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(h)
            gpus.append(
                Gpu(
                    index=i,
                    name=name.decode() if isinstance(name, bytes) else str(name),
                    vendor="nvidia",
                    total_bytes=int(mem.total),
                    free_bytes=int(mem.free),
                    compute_capability=f"{major}.{minor}",
                    driver=driver,
                )
            )
        return gpus
    except Exception:
        return None
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def parse_nvidia_smi(text: str, with_compute_cap: bool = True) -> list[Gpu]:
    """GPUs from ``nvidia-smi --query-gpu=... --format=csv,noheader,nounits`` (MiB figures).

    Lines that do not parse (``[N/A]``, garbage) are skipped.
    """
    gpus = []
    for row in csv.reader(text.splitlines(), skipinitialspace=True):
        if not with_compute_cap and len(row) == 5:
            row = [*row[:4], "", row[4]]
        if len(row) != 6:
            continue
        index, total, free = _int(row[0]), _int(row[2]), _int(row[3])
        if index is None or total is None or free is None or total <= 0 or free < 0:
            continue
        cc, driver = row[4].strip(), row[5].strip()
        gpus.append(
            Gpu(
                index=index,
                name=row[1].strip() or "NVIDIA GPU",
                vendor="nvidia",
                total_bytes=total * MIB,
                free_bytes=min(free, total) * MIB,
                compute_capability=cc if re.fullmatch(r"\d+\.\d+", cc) else None,
                driver=driver if driver and not driver.startswith("[") else None,
            )
        )
    return gpus


def probe_nvidia_smi() -> list[Gpu]:
    base = ["nvidia-smi", "--format=csv,noheader,nounits"]
    out = run_probe([*base, f"--query-gpu={_NVIDIA_FIELDS}"])
    if out is not None:
        return parse_nvidia_smi(out)
    # drivers older than ~510 do not know compute_cap
    out = run_probe([*base, f"--query-gpu={_NVIDIA_FIELDS.replace(',compute_cap', '')}"])
    return parse_nvidia_smi(out, with_compute_cap=False) if out is not None else []


def cuda_version() -> str | None:
    """The newest CUDA version the NVIDIA driver supports, from ``nvidia-smi``'s header."""
    out = run_probe(["nvidia-smi"])
    m = re.search(r"CUDA Version:\s*(\d+\.\d+)", out or "")
    return m.group(1) if m else None


def cuda_visible(gpus: list[Gpu]) -> tuple[list[Gpu], str | None]:
    """Apply ``CUDA_VISIBLE_DEVICES`` (numeric indices) as llama.cpp will see it."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is None:
        return gpus, None
    parts = [p.strip() for p in env.split(",") if p.strip()]
    if not parts or parts[0].startswith("-"):
        return [], "CUDA_VISIBLE_DEVICES hides every NVIDIA GPU"
    if not all(p.isdigit() for p in parts):
        return gpus, "CUDA_VISIBLE_DEVICES uses UUIDs; all NVIDIA GPUs are listed"
    order = [int(p) for p in parts]
    return [g for i in order for g in gpus if g.index == i], None


# --- AMD, Apple ---------------------------------------------------------------------------


def parse_rocm_smi(text: str) -> list[Gpu]:
    """GPUs from ``rocm-smi --showmeminfo vram --showproductname --showdriverversion --json``."""
    start = text.find("{")
    try:
        data = json.loads(text[start:]) if start >= 0 else None
    except ValueError:
        return []
    if not isinstance(data, dict):
        return []
    system = data.get("system")
    driver = system.get("Driver version") if isinstance(system, dict) else None
    gpus = []
    for key, card in data.items():
        m = re.fullmatch(r"card(\d+)", str(key))
        if not m or not isinstance(card, dict):
            continue
        total = used = None
        for k, v in card.items():
            lk = k.lower()
            if "vram" in lk and "total" in lk and "used" not in lk:
                total = _int(v)
            elif "vram" in lk and "used" in lk:
                used = _int(v)
        if total is None or used is None or total <= 0 or not 0 <= used <= total:
            continue
        name = next((card[k] for k in ("Card series", "Card model", "Card SKU") if k in card), "")
        gfx = card.get("GFX Version")
        gpus.append(
            Gpu(
                index=int(m.group(1)),
                name=str(name).strip() or "AMD GPU",
                vendor="amd",
                total_bytes=total,
                free_bytes=total - used,
                compute_capability=str(gfx) if gfx else None,
                driver=str(driver) if driver else None,
            )
        )
    return gpus


def probe_rocm() -> list[Gpu]:
    cmd = ["rocm-smi", "--showmeminfo", "vram", "--showproductname", "--showdriverversion"]
    out = run_probe([*cmd, "--json"])
    return parse_rocm_smi(out) if out is not None else []


def probe_apple() -> list[Gpu]:
    total = _int(run_probe(["sysctl", "-n", "hw.memsize"]) or "")
    if not total or total <= 0:
        return []
    brand = (run_probe(["sysctl", "-n", "machdep.cpu.brand_string"]) or "").strip()
    return [Gpu(0, brand or "Apple Silicon GPU", "apple", total, total, unified=True)]


# --- RAM, cores ---------------------------------------------------------------------------


def parse_meminfo(text: str) -> tuple[int, int] | None:
    """(total, available) bytes from ``/proc/meminfo`` text, or ``None``."""
    fields = {}
    for line in text.splitlines():
        m = re.match(r"(\w+):\s+(\d+)\s*kB", line)
        if m:
            fields[m.group(1)] = int(m.group(2)) * 1024
    total = fields.get("MemTotal")
    if not total:
        return None
    avail = fields.get("MemAvailable")
    if avail is None:
        avail = fields.get("MemFree", 0) + fields.get("Cached", 0) + fields.get("Buffers", 0)
    return total, min(avail, total)


def _cgroup_limit(cgroup_dir: Path) -> tuple[int, int] | None:
    """(limit, current usage) of a cgroup v2 memory limit, if one is set."""
    try:
        limit = (cgroup_dir / "memory.max").read_text().strip()
        current = int((cgroup_dir / "memory.current").read_text().strip())
    except (OSError, ValueError):
        return None
    return (int(limit), current) if limit.isdigit() else None


def _linux_ram(proc_dir: Path, cgroup_dir: Path) -> tuple[int, int] | None:
    try:
        ram = parse_meminfo((proc_dir / "meminfo").read_text())
    except OSError:
        return None
    limit = _cgroup_limit(cgroup_dir)
    if ram and limit and limit[0] < ram[0]:
        return limit[0], max(0, min(ram[1], limit[0] - limit[1]))
    return ram


def _mac_ram() -> tuple[int, int] | None:
    total = _int(run_probe(["sysctl", "-n", "hw.memsize"]) or "")
    if not total or total <= 0:
        return None
    out = run_probe(["vm_stat"]) or ""
    page = re.search(r"page size of (\d+) bytes", out)
    pages = {k: int(v) for k, v in re.findall(r"Pages (\w+):\s+(\d+)", out)}
    if not page or "free" not in pages:
        return total, total
    free = sum(pages.get(k, 0) for k in ("free", "inactive", "speculative", "purgeable"))
    return total, min(total, free * int(page.group(1)))


def _windows_ram() -> tuple[int, int] | None:  # pragma: no cover - Windows only
    import ctypes

    class _Status(ctypes.Structure):
        _fields_ = [("dwLength", ctypes.c_ulong), ("dwMemoryLoad", ctypes.c_ulong)] + [
            (n, ctypes.c_ulonglong)
            for n in ("total", "avail", "pf_total", "pf_avail", "v_total", "v_avail", "ext")
        ]

    st = _Status()
    st.dwLength = ctypes.sizeof(_Status)
    if not ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(st)):  # type: ignore[attr-defined]
        return None
    return int(st.total), int(st.avail)


def _sysconf_ram() -> tuple[int, int] | None:
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        return os.sysconf("SC_PHYS_PAGES") * page, os.sysconf("SC_AVPHYS_PAGES") * page
    except (AttributeError, ValueError, OSError):
        return None


def ram(system: str, proc_dir: Path, cgroup_dir: Path) -> tuple[int, int] | None:
    """(total, available) RAM in bytes by the platform's own means, else ``sysconf``."""
    probes = {
        "Linux": lambda: _linux_ram(proc_dir, cgroup_dir),
        "Darwin": _mac_ram,
        "Windows": _windows_ram,
    }
    for probe in (probes.get(system), _sysconf_ram):
        if probe is None:
            continue
        try:
            found = probe()
        except Exception:
            found = None
        if found:
            return found
    return None


def physical_cores(system: str, proc_dir: Path) -> int | None:
    """Physical CPU cores where cheap to learn (Linux cpuinfo, macOS sysctl), else ``None``."""
    if system == "Darwin":
        n = _int(run_probe(["sysctl", "-n", "hw.physicalcpu"]) or "")
        return n if n and n > 0 else None
    try:
        from ..engine import physical_cores_in

        return physical_cores_in((proc_dir / "cpuinfo").read_text())
    except OSError:
        return None


def logical_cores() -> int:
    """Logical cores this process may run on."""
    with contextlib.suppress(AttributeError, OSError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def find_gpus(system: str, machine: str) -> tuple[list[Gpu], list[str]]:
    """Every GPU the vendor tools report (NVIDIA as CUDA will see them), and notes."""
    notes: list[str] = []
    nvidia = probe_nvml()
    if nvidia is None:
        nvidia = probe_nvidia_smi()
    nvidia, note = cuda_visible(nvidia)
    notes += [note] if note else []
    gpus = nvidia + probe_rocm()
    if system == "Darwin" and machine in ("arm64", "aarch64"):
        gpus += probe_apple()
    return gpus, notes
