"""Which compiler built llama.cpp's CPU backend, and whether that explains an AMX fault.

On Intel CPUs with AMX, llama.cpp's AMX matmul first loads a tile configuration it builds
on the stack (``_tile_loadconfig``). GCC 11 and 12 ship that intrinsic as an inline
``asm`` whose memory operand is a single pointer (8 bytes), so the optimiser sees only the
first bytes of the 64-byte configuration being read and drops the stores to the rest: the
rows and column widths stay zero, ``ldtilecfg`` rejects the configuration (#GP) and the
process dies with SIGSEGV or SIGILL. GCC 13 and clang use a compiler builtin that reads the
whole configuration. llama-cpp-python compiles llama.cpp on the user's machine with the
default compiler, which on Debian 12 (and Ubuntu 22.04) is GCC 12: that, not the virtual
machine, is why the AMX kernels fault there while oneDNN's AMX (torch) runs fine. Verified
on an Intel Xeon VM with AMX (2 cores): a 40-line C program loading a stack configuration
faults built by GCC 12.2 at ``-O2`` and runs built by clang 14 (or GCC at ``-O0``); the
GCC build's object code stores only the first 16 bytes before ``ldtilecfg``.

The compiler is read from the ELF ``.comment`` section of ``libggml-cpu`` (GCC writes
``GCC: (...) 12.2.0`` there; clang writes ``clang version ...`` or nothing, and a shared
library built by clang may still carry GCC's line from the C runtime's start files, so
clang wins when both appear). Nothing here raises: an unreadable file means "unknown".
"""

from __future__ import annotations

import contextlib
import re
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

# rebuilding llama-cpp-python with clang and the CPU's features named (clang 14 names the
# AMX macros differently, so llama.cpp's native detection would leave AMX out)
CLANG_REBUILD = (
    'CMAKE_ARGS="-DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DGGML_NATIVE=OFF '
    "-DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON "
    "-DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON "
    '-DGGML_AMX_TILE=ON -DGGML_AMX_INT8=ON -DGGML_AMX_BF16=ON" '
    'pip install --force-reinstall --no-cache-dir "llama-cpp-python==0.3.36"'
)


def elf_comments(path: Path) -> list[str]:
    """The strings of an ELF file's ``.comment`` section (``[]`` if none or not ELF)."""
    try:
        with open(path, "rb") as fh:
            ident = fh.read(64)
            if len(ident) < 64 or ident[:4] != b"\x7fELF" or ident[4] != 2:  # ELF64 only
                return []
            end = "<" if ident[5] == 1 else ">"
            shoff, shentsize, shnum, shstrndx = (
                struct.unpack_from(end + "Q", ident, 0x28)[0],
                *struct.unpack_from(end + "HHH", ident, 0x3A),
            )
            if not shoff or shentsize < 64 or not 0 < shnum < 65536 or shstrndx >= shnum:
                return []
            fh.seek(shoff)
            table = fh.read(shentsize * shnum)
            if len(table) < shentsize * shnum:
                return []
            sections = [
                struct.unpack_from(end + "IIQQQQ", table, i * shentsize) for i in range(shnum)
            ]  # name, type, flags, addr, offset, size
            names = _read(fh, sections[shstrndx][4], sections[shstrndx][5])
            for name_off, _type, _flags, _addr, offset, size in sections:
                if names[name_off : name_off + 9] == b".comment\0":
                    raw = _read(fh, offset, min(size, 1 << 16))
                    return [s.decode("utf-8", "replace") for s in raw.split(b"\0") if s]
    except (OSError, struct.error, IndexError):
        pass
    return []


def _read(fh: BinaryIO, offset: int, size: int) -> bytes:
    fh.seek(offset)
    return fh.read(size)


def compiler_of(comments: Iterable[str]) -> str:
    """``"clang 14.0.6"``, ``"GCC 12.2.0"`` or ``""`` from ``.comment`` strings."""
    gcc = ""
    for line in comments:
        m = re.search(r"clang version (\d+[.\d]*)", line)
        if m:
            return f"clang {m.group(1)}"
        m = re.match(r"GCC: \(.*\)\s*(\d+[.\d]*)", line) or re.match(r"GCC:\s*(\d+[.\d]*)", line)
        if m:
            gcc = max(gcc, m.group(1), key=_version) if gcc else m.group(1)
    return f"GCC {gcc}" if gcc else ""


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p.isdigit())


def loses_amx_tile_config(compiler: str) -> bool:
    """This compiler's ``_tile_loadconfig`` lets the optimiser drop the configuration."""
    if not compiler.startswith("GCC "):
        return False
    major = _version(compiler[4:])[:1]
    return bool(major) and major[0] <= 12


def ggml_cpu_compiler(lib_dir: Path | None = None) -> str:
    """The compiler of the installed llama-cpp-python's CPU backend (``""`` if unknown,
    e.g. a build whose ``.comment`` section was stripped)."""
    with contextlib.suppress(Exception):
        if lib_dir is None:
            from .bindings.backend import llama_modules

            llama, _ = llama_modules()
            lib_dir = Path(llama.__file__).parent / "lib"
        for lib in sorted(lib_dir.glob("libggml-cpu*")):
            compiler = compiler_of(elf_comments(lib))
            if compiler:
                return compiler
    return ""
