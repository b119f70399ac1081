"""Hardware detection. Vendor tools are replaced by canned outputs (this machine has no GPU);
RAM comes from fake /proc files; the llama.cpp build is the real one unless a test says so."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from qaudio_local.models import hardware_probes as probes
from qaudio_local.models.hardware import (
    GIB,
    Gpu,
    Hardware,
    cpu_only_build_warning,
    detect,
    with_overrides,
)
from qaudio_local.models.wheels import WHEEL_INDEX, cuda_wheel, prebuilt_wheel

MIB = 1 << 20
NVIDIA_SMI = "0, NVIDIA GeForce RTX 4070, 12282, 11563, 8.9, 550.54.14\n"
NVIDIA_SMI_TWO = (
    "0, NVIDIA GeForce RTX 3090, 24576, 23000, 8.6, 535.104.05\n"
    "1, NVIDIA GeForce GTX 1080 Ti, 11264, [N/A], 6.1, 535.104.05\n"
    "2, NVIDIA RTX A2000, 6138, 5900, 8.6, 535.104.05\n"
)
ROCM_SMI = """WARNING: AMD GPU device(s) is/are in a low-power state. Check power control
{"card0": {"VRAM Total Memory (B)": "17163091968", "VRAM Total Used Memory (B)": "1073741824",
 "Card series": "Navi 21 [Radeon RX 6800/6800 XT / 6900 XT]", "Card model": "0x73bf",
 "GFX Version": "gfx1030"}, "system": {"Driver version": "6.3.6"}}
"""
VM_STAT = """Mach Virtual Memory Statistics: (page size of 16384 bytes)
Pages free:                               100000.
Pages active:                             300000.
Pages inactive:                           200000.
Pages speculative:                         50000.
"""
MEMINFO = "MemTotal:       32768000 kB\nMemFree:         1000000 kB\nMemAvailable:   20000000 kB\n"
CPUINFO = "".join(f"processor\t: {i}\nphysical id\t: 0\ncore id\t\t: {i % 4}\n\n" for i in range(8))


def fake_tools(
    monkeypatch: pytest.MonkeyPatch,
    outputs: dict[str, str | None],
    system: tuple[str, str] = ("Linux", "x86_64"),
) -> list[list[str]]:
    """Answer probe commands by prefix (``"nvidia-smi"``, ``"sysctl -n hw.memsize"``...)."""
    calls: list[list[str]] = []

    def run(cmd: list[str], timeout: float = probes.PROBE_TIMEOUT_S) -> str | None:
        calls.append(cmd)
        line = " ".join(cmd)
        return next((out for key, out in outputs.items() if line.startswith(key)), None)

    monkeypatch.setattr(probes, "run_probe", run)
    monkeypatch.setattr(probes, "platform_id", lambda: system)
    monkeypatch.setattr(probes, "probe_nvml", lambda: None)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return calls


@pytest.fixture()
def proc(tmp_path: Path) -> Path:
    (tmp_path / "meminfo").write_text(MEMINFO)
    (tmp_path / "cpuinfo").write_text(CPUINFO)
    return tmp_path


def _detect(proc: Path, **kw: object) -> Hardware:
    return detect(llama_gpu_offload=True, proc_dir=proc, cgroup_dir=proc / "none", **kw)  # type: ignore[arg-type]


# --- the probes ------------------------------------------------------------------------------


def test_run_probe_survives_missing_failing_and_hanging_commands() -> None:
    assert probes.run_probe(["qaudio-no-such-tool-xyz"]) is None
    assert probes.run_probe([sys.executable, "-c", "import sys; sys.exit(3)"]) is None
    hang = [sys.executable, "-c", "import time; time.sleep(30)"]
    assert probes.run_probe(hang, timeout=0.3) is None
    assert probes.run_probe([sys.executable, "-c", "print('ok')"]) == "ok\n"


def test_nvidia_smi(monkeypatch: pytest.MonkeyPatch, proc: Path) -> None:
    fake_tools(monkeypatch, {"nvidia-smi": NVIDIA_SMI})
    hw = _detect(proc)
    assert hw.gpus == (
        Gpu(0, "NVIDIA GeForce RTX 4070", "nvidia", 12282 * MIB, 11563 * MIB, "8.9", "550.54.14"),
    )
    assert hw.best_gpu == hw.gpus[0]
    assert (hw.ram_total, hw.ram_available) == (32768000 * 1024, 20000000 * 1024)
    assert hw.physical_cores == 4 and hw.cpu_cores >= 1 and hw.notes == ()


def test_nvidia_smi_skips_unreadable_gpus_and_picks_the_most_free(
    monkeypatch: pytest.MonkeyPatch, proc: Path
) -> None:
    fake_tools(monkeypatch, {"nvidia-smi": NVIDIA_SMI_TWO})
    hw = _detect(proc)
    assert [g.index for g in hw.gpus] == [0, 2]
    assert hw.best_gpu is not None and hw.best_gpu.name == "NVIDIA GeForce RTX 3090"


def test_old_nvidia_driver_without_compute_cap(monkeypatch: pytest.MonkeyPatch, proc: Path) -> None:
    calls = fake_tools(
        monkeypatch,
        {
            "nvidia-smi --format=csv,noheader,nounits --query-gpu=index,name,memory.total,"
            "memory.free,driver_version": "0, Tesla K80, 11441, 11000, 470.82.01\n",
        },
    )
    hw = _detect(proc)
    assert len(calls) >= 2  # asked once with compute_cap, then without
    assert hw.gpus[0].compute_capability is None and hw.gpus[0].driver == "470.82.01"
    assert hw.gpus[0].free_bytes == 11000 * MIB


def test_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch, proc: Path) -> None:
    fake_tools(monkeypatch, {"nvidia-smi": NVIDIA_SMI_TWO})
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    assert [g.index for g in _detect(proc).gpus] == [2]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    hw = _detect(proc)
    assert hw.gpus == () and "hides every NVIDIA GPU" in hw.notes[0]


def test_nvml_when_pynvml_is_importable(monkeypatch: pytest.MonkeyPatch, proc: Path) -> None:
    mem = types.SimpleNamespace(total=8 * GIB, free=7 * GIB)
    fake = types.SimpleNamespace(
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: None,
        nvmlSystemGetDriverVersion=lambda: b"555.42",
        nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetName=lambda h: "NVIDIA GeForce RTX 4060 Laptop GPU",
        nvmlDeviceGetMemoryInfo=lambda h: mem,
        nvmlDeviceGetCudaComputeCapability=lambda h: (8, 9),
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert probes.probe_nvml() == [
        Gpu(0, "NVIDIA GeForce RTX 4060 Laptop GPU", "nvidia", 8 * GIB, 7 * GIB, "8.9", "555.42")
    ]

    def broken() -> None:
        raise RuntimeError("NVML Shared Library Not Found")

    monkeypatch.setattr(fake, "nvmlInit", broken)
    assert probes.probe_nvml() is None  # then nvidia-smi is asked


def test_rocm_smi(monkeypatch: pytest.MonkeyPatch, proc: Path) -> None:
    fake_tools(monkeypatch, {"rocm-smi": ROCM_SMI})
    (gpu,) = _detect(proc).gpus
    assert gpu.vendor == "amd" and gpu.name.startswith("Navi 21")
    assert (gpu.total_bytes, gpu.free_bytes) == (17163091968, 17163091968 - GIB)
    assert gpu.compute_capability == "gfx1030" and gpu.driver == "6.3.6"


def test_apple_silicon(monkeypatch: pytest.MonkeyPatch, proc: Path) -> None:
    fake_tools(
        monkeypatch,
        {
            "sysctl -n hw.memsize": "17179869184\n",
            "sysctl -n machdep.cpu.brand_string": "Apple M2 Pro\n",
            "sysctl -n hw.physicalcpu": "10\n",
            "vm_stat": VM_STAT,
        },
        system=("Darwin", "arm64"),
    )
    hw = _detect(proc)
    (gpu,) = hw.gpus
    assert gpu.vendor == "apple" and gpu.unified and gpu.name == "Apple M2 Pro"
    assert gpu.total_bytes == 16 * GIB
    assert hw.ram_total == 16 * GIB and hw.ram_available == (100000 + 200000 + 50000) * 16384
    assert hw.physical_cores == 10


@pytest.mark.parametrize(
    "garbage",
    ["", "\x00\xff", "error: NVIDIA-SMI has failed", "{not json", "0, x, -1, y, z, w", "[]", "{}"],
)
def test_garbage_from_every_tool_means_no_gpu(
    monkeypatch: pytest.MonkeyPatch, proc: Path, garbage: str
) -> None:
    fake_tools(monkeypatch, {"nvidia-smi": garbage, "rocm-smi": garbage, "sysctl": garbage})
    assert _detect(proc).gpus == ()
    fake_tools(monkeypatch, {"sysctl": garbage, "vm_stat": garbage}, system=("Darwin", "arm64"))
    hw = _detect(proc)
    assert hw.gpus == () and hw.physical_cores is None


def test_cgroup_limit_caps_ram(monkeypatch: pytest.MonkeyPatch, proc: Path) -> None:
    fake_tools(monkeypatch, {})
    cg = proc / "cg"
    cg.mkdir()
    (cg / "memory.max").write_text(f"{8 * GIB}\n")
    (cg / "memory.current").write_text(f"{GIB}\n")
    hw = detect(llama_gpu_offload=False, proc_dir=proc, cgroup_dir=cg)
    assert (hw.ram_total, hw.ram_available) == (8 * GIB, 7 * GIB)
    (cg / "memory.max").write_text("max\n")
    hw = detect(llama_gpu_offload=False, proc_dir=proc, cgroup_dir=cg)
    assert hw.ram_total == 32768000 * 1024


def test_unreadable_ram_is_reported_not_raised(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake_tools(monkeypatch, {})
    monkeypatch.setattr(probes, "_sysconf_ram", lambda: None)
    (tmp_path / "meminfo").write_text("garbage\n")
    hw = detect(llama_gpu_offload=False, proc_dir=tmp_path, cgroup_dir=tmp_path)
    assert hw.ram_total == 0 and any("--ram" in n for n in hw.notes)
    assert hw.physical_cores is None


def test_meminfo_without_memavailable() -> None:
    text = "MemTotal: 1000 kB\nMemFree: 100 kB\nCached: 200 kB\nBuffers: 50 kB\n"
    assert probes.parse_meminfo(text) == (1000 * 1024, 350 * 1024)
    assert probes.parse_meminfo("nonsense") is None


# --- overrides and the build ---------------------------------------------------------------


def test_overrides_replace_free_memory(monkeypatch: pytest.MonkeyPatch, proc: Path) -> None:
    fake_tools(monkeypatch, {"nvidia-smi": NVIDIA_SMI})
    hw = _detect(proc, vram_gb=6, ram_gb=12.5)
    assert hw.gpus[0].free_bytes == 6 * GIB and hw.gpus[0].total_bytes == 12282 * MIB
    assert hw.ram_available == int(12.5 * GIB) and hw.vram_override == 6 * GIB
    assert hw.ram_override == int(12.5 * GIB)
    with pytest.raises(ValueError, match="0 or more"):
        _detect(proc, vram_gb=-1)


def test_vram_override_without_a_detected_gpu(monkeypatch: pytest.MonkeyPatch, proc: Path) -> None:
    fake_tools(monkeypatch, {})
    (gpu,) = _detect(proc, vram_gb=8).gpus
    assert gpu.vendor == "unknown" and gpu.free_bytes == gpu.total_bytes == 8 * GIB


def test_real_machine_and_real_llama_build() -> None:
    """No fakes: whatever this machine has, detection answers and asks the real build."""
    import llama_cpp

    hw = detect()
    assert hw.cpu_cores >= 1 and hw.ram_total > 0 and 0 < hw.ram_available <= hw.ram_total
    assert hw.llama_version == llama_cpp.__version__ and "CPU" in hw.llama_backends
    assert hw.llama_gpu_offload == bool(llama_cpp.llama_supports_gpu_offload())
    assert json.loads(json.dumps(hw.to_dict()))["cpu_cores"] == hw.cpu_cores


def _hw(vendor: str, offload: bool) -> Hardware:
    gpu = Gpu(0, f"{vendor} gpu", vendor, 8 * GIB, 8 * GIB, unified=vendor == "apple")
    return Hardware((gpu,), 8, 4, 16 * GIB, 16 * GIB, offload, llama_version="0.3.36")


@pytest.mark.parametrize(
    ("vendor", "flag"),
    [("nvidia", "-DGGML_CUDA=on"), ("amd", "-DGGML_HIP=on"), ("apple", "-DGGML_METAL=on")],
)
def test_cpu_only_build_warning_gives_the_reinstall_command(vendor: str, flag: str) -> None:
    warning = cpu_only_build_warning(_hw(vendor, offload=False))
    assert warning is not None and f"{vendor} gpu" in warning
    assert warning.endswith(
        f'CMAKE_ARGS="{flag}" pip install --force-reinstall --no-cache-dir llama-cpp-python==0.3.36'
    )
    assert cpu_only_build_warning(_hw(vendor, offload=True)) is None


def test_no_warning_without_a_gpu() -> None:
    hw = with_overrides(_hw("nvidia", False), vram_gb=None, ram_gb=None)
    assert cpu_only_build_warning(Hardware((), 8, 4, GIB, GIB, False)) is None
    assert hw == _hw("nvidia", False)


# --- the prebuilt wheel for a GPU (models/wheels.py) ---------------------------------------

HEADER = """+---------------------------------------------------------------------------------+
| NVIDIA-SMI 550.54.14           Driver Version: 550.54.14     CUDA Version: 12.4  |
|-------------------------------+----------------------+----------------------------+
"""


@pytest.mark.parametrize(
    ("cuda", "cc", "index"),
    [
        ("12.4", "8.9", "cu124"),  # RTX 4070 on a 550 driver
        ("12.9", "8.6", "cu125"),  # the newest 12.x wheel the driver can run
        ("13.1", "8.9", "cu130"),
        ("13.2", "12.0", "cu132"),  # Blackwell
        ("13.2", "6.1", "cu125"),  # Pascal: CUDA 13 wheels start at 7.5
        ("12.0", "8.6", "cu118"),  # older than every 12.x wheel
        ("12.8", "12.0", "cu125"),  # no 11.8 for Blackwell, 12.x covers it
        ("11.4", "8.6", None),  # too old a driver for any wheel
        (None, "8.9", None),  # unknown driver: compile
        ("12.4", None, "cu124"),  # unknown compute capability: trust the driver
    ],
)
def test_the_cuda_wheel_follows_driver_and_compute_capability(
    cuda: str | None, cc: str | None, index: str | None
) -> None:
    wheel = cuda_wheel(cuda, cc)
    assert (wheel.index if wheel else None) == index


def _gpu(vendor: str) -> Gpu:
    return Gpu(0, f"{vendor} gpu", vendor, 8 * GIB, 8 * GIB, "8.9" if vendor == "nvidia" else None)


@pytest.mark.parametrize(
    ("vendor", "system", "machine", "python", "index"),
    [
        ("nvidia", "Linux", "x86_64", (3, 11), "cu124"),
        ("nvidia", "Windows", "AMD64", (3, 12), "cu124"),
        ("nvidia", "Linux", "x86_64", (3, 13), None),  # no wheels for 3.13
        ("apple", "Darwin", "arm64", (3, 11), "metal"),
        ("apple", "Darwin", "x86_64", (3, 11), None),
        ("amd", "Linux", "x86_64", (3, 10), "rocm72"),
        ("amd", "Windows", "AMD64", (3, 11), "hip-radeon"),
        ("unknown", "Linux", "x86_64", (3, 11), None),
    ],
)
def test_the_wheel_follows_vendor_platform_and_python(
    vendor: str, system: str, machine: str, python: tuple[int, int], index: str | None
) -> None:
    wheel = prebuilt_wheel(_gpu(vendor), system, machine, python, "12.4")
    assert (wheel.index if wheel else None) == index


def test_the_warning_leads_with_the_prebuilt_wheel_from_the_probes(
    monkeypatch: pytest.MonkeyPatch,
    proc: Path,
) -> None:
    """nvidia-smi's query gives the GPU, its header the CUDA version: one install command."""
    fake_tools(monkeypatch, {"nvidia-smi --": NVIDIA_SMI, "nvidia-smi": HEADER})
    monkeypatch.setattr("sys.version_info", (3, 11, 7, "final", 0))
    hw = detect(llama_gpu_offload=False, proc_dir=proc, cgroup_dir=proc / "none")
    assert hw.cuda_version == "12.4"
    warning = cpu_only_build_warning(Hardware(**{**hw.__dict__, "llama_version": "0.3.36"}))
    assert warning is not None
    command = (
        "pip install --force-reinstall --no-cache-dir --only-binary llama-cpp-python "
        f'"llama-cpp-python==0.3.36" --extra-index-url {WHEEL_INDEX}/cu124'
    )
    assert "install its prebuilt CUDA 12.4 build" in warning and command in warning
    assert warning.index(command) < warning.index("CMAKE_ARGS")  # compiling comes second
    assert probes.cuda_version() == "12.4"
