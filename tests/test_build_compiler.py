"""Naming the compiler that built llama.cpp's CPU backend, and the AMX fault it explains."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from qaudio_local.engine.build_compiler import (
    compiler_of,
    elf_comments,
    ggml_cpu_compiler,
    loses_amx_tile_config,
)
from qaudio_local.engine.cpu_probe import STEPS, KernelVerdict


def _gcc_object(tmp_path: Path) -> tuple[Path, str]:
    gcc = shutil.which("gcc")
    assert gcc, "gcc is needed to build llama-cpp-python, so every test machine has it"
    src = tmp_path / "one.c"
    src.write_text("int one(void) { return 1; }\n")
    obj = tmp_path / "one.o"
    subprocess.run([gcc, "-c", str(src), "-o", str(obj)], check=True)
    version = subprocess.run(
        [gcc, "-dumpfullversion"], check=True, capture_output=True, text=True
    ).stdout.strip()
    return obj, version


def test_the_compiler_is_read_from_a_real_gcc_object(tmp_path: Path) -> None:
    obj, version = _gcc_object(tmp_path)
    comments = elf_comments(obj)
    assert any(c.startswith("GCC: ") for c in comments), comments
    assert compiler_of(comments) == f"GCC {version}"


def test_a_gcc_built_library_folder_is_named(tmp_path: Path) -> None:
    obj, version = _gcc_object(tmp_path)
    lib = tmp_path / "lib"
    lib.mkdir()
    shutil.copy(obj, lib / "libggml-cpu.so")
    assert ggml_cpu_compiler(lib) == f"GCC {version}"
    assert ggml_cpu_compiler(tmp_path / "nowhere") == ""


@pytest.mark.parametrize(
    "content", [b"", b"not an ELF file at all", b"\x7fELF\x02\x01" + b"\xff" * 58, b"\x7fELF"]
)
def test_files_that_are_not_sound_elf_give_nothing(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "libggml-cpu.so"
    bad.write_bytes(content)
    assert elf_comments(bad) == []
    assert ggml_cpu_compiler(tmp_path) == ""


def test_a_truncated_library_gives_nothing(tmp_path: Path) -> None:
    obj, _ = _gcc_object(tmp_path)
    cut = tmp_path / "cut.o"
    cut.write_bytes(obj.read_bytes()[:100])
    assert elf_comments(cut) == []


def test_clang_wins_over_the_start_files_gcc_line() -> None:
    lines = ["GCC: (Debian 12.2.0-14+deb12u1) 12.2.0", "Debian clang version 14.0.6"]
    assert compiler_of(lines) == "clang 14.0.6"
    assert compiler_of(["GCC: (GNU) 11.4.0", "GCC: (GNU) 12.3.0"]) == "GCC 12.3.0"
    assert compiler_of(["Linker: LLD 17"]) == ""


@pytest.mark.parametrize(
    ("compiler", "loses"),
    [
        ("GCC 12.2.0", True),
        ("GCC 11.4.0", True),
        ("GCC 13.1.0", False),
        ("GCC 14.2.0", False),
        ("clang 14.0.6", False),
        ("", False),
    ],
)
def test_which_compilers_lose_the_tile_config(compiler: str, loses: bool) -> None:
    assert loses_amx_tile_config(compiler) is loses


def _amx_fault(compiler: str) -> KernelVerdict:
    return KernelVerdict(
        steps=tuple((s, "SIGSEGV" if s == "text:Q4_K_M" else "ok") for s in STEPS),
        amx=True,
        cpu="Intel(R) Xeon(R) Processor",
        compiler=compiler,
    )


def test_the_verdict_names_the_cause_when_the_compiler_explains_it() -> None:
    fault = _amx_fault("GCC 12.2.0")
    cause = fault.cause()
    assert "GCC 12.2.0" in cause and "clang" in cause and "Troubleshooting" in cause
    assert len(cause) < 200
    assert fault.summary() == _amx_fault("").summary()  # the verdict line stays as it was
    assert _amx_fault("GCC 13.2.0").cause() == ""  # the fault is real, the cause unknown
    assert _amx_fault("clang 14.0.6").cause() == ""
    no_amx = KernelVerdict(steps=fault.steps, compiler="GCC 12.2.0")
    assert no_amx.cause() == ""  # the repacked kernels' fault: not this
    runs = KernelVerdict(steps=tuple((s, "ok") for s in STEPS), amx=True, compiler="GCC 12.2.0")
    assert runs.cause() == ""
    again = KernelVerdict.from_dict(fault.to_dict())
    assert again.compiler == "GCC 12.2.0" and again.cause() == cause


def test_hardware_prints_the_cause_under_the_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from qaudio_local.engine import cpu_probe
    from tests.support.cli import invoke

    monkeypatch.setenv("QAUDIO_CACHE_DIR", str(tmp_path / "cache"))
    fault = _amx_fault("GCC 12.2.0")
    cpu_probe._store(cpu_probe.build_key(), fault)
    lines = invoke("hardware").stdout.splitlines()
    at = lines.index(fault.summary())
    assert lines[at + 1] == fault.cause()


def test_this_machines_verdict_names_its_build_when_it_has_amx() -> None:
    from qaudio_local.engine import cpu_kernel_verdict

    verdict = cpu_kernel_verdict()
    assert verdict.compiler == (ggml_cpu_compiler() if verdict.amx else "")
