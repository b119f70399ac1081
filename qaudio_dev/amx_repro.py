"""Show, in 40 lines of C, why llama.cpp's AMX kernels fault when GCC 12 built them.

``scripts/amx_tilecfg_repro.py`` compiles one small program with each C compiler found
(``gcc``, ``clang``, or those named) at ``-O2`` and at ``-O0``, and runs it. The program
does what ggml's AMX matmul does first: it fills a 64-byte tile configuration on the stack
(palette 1, 8 tiles of 16 rows x 64 bytes), loads it with ``_tile_loadconfig`` and
multiplies two int8 tiles. Where a compiler's intrinsic lets the optimiser drop the stores
to the configuration, ``ldtilecfg`` gets rows and widths of zero and the program dies
(SIGILL or SIGSEGV); a sound build prints the right product. On a CPU without AMX every
build dies, so the script first checks ``amx_tile`` in ``/proc/cpuinfo``.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

PROGRAM = r"""
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

typedef struct {
    uint8_t palette_id, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} __attribute__((aligned(64))) tile_config;

__attribute__((noinline)) static void configure(int rows) {
    tile_config tc = {0};
    tc.palette_id = 1;
    for (int t = 0; t < 8; t++) { tc.rows[t] = rows; tc.colsb[t] = 64; }
    _tile_loadconfig(&tc);
}

int main(void) {
    /* ARCH_REQ_XCOMP_PERM for XTILEDATA, as the kernel asks of every AMX user */
    if (syscall(SYS_arch_prctl, 0x1023, 18)) { perror("arch_prctl"); return 2; }
    int8_t a[16 * 64], b[16 * 64];
    int32_t c[16 * 16];
    for (int i = 0; i < 16 * 64; i++) { a[i] = 1; b[i] = 2; }
    configure(16);
    _tile_zero(0);
    _tile_loadd(1, a, 64);
    _tile_loadd(2, b, 64);
    _tile_dpbssd(0, 1, 2);
    _tile_stored(0, c, 64);
    _tile_release();
    printf("%d\n", c[0]);
    return c[0] != 128;
}
"""


def has_amx() -> bool:
    try:
        return "amx_tile" in Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False


def try_compiler(cc: str, opt: str, work: Path) -> str:
    """One build and run: ``"runs (128)"``, the signal that killed it, or why not built."""
    src = work / "tilecfg.c"
    src.write_text(PROGRAM)
    exe = work / f"tilecfg-{Path(cc).name}{opt}"
    built = subprocess.run(
        [cc, opt, "-mamx-tile", "-mamx-int8", str(src), "-o", str(exe)],
        capture_output=True,
        text=True,
    )
    if built.returncode:
        return "not built: " + (built.stderr.strip().splitlines() or ["?"])[-1][:100]
    ran = subprocess.run([str(exe)], capture_output=True, text=True, timeout=30)
    if ran.returncode < 0:
        return f"faults ({signal.Signals(-ran.returncode).name})"
    if ran.returncode:
        return f"wrong result ({ran.stdout.strip() or ran.stderr.strip()})"
    return f"runs ({ran.stdout.strip()})"


def version(cc: str) -> str:
    out = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    return (out.splitlines() or [cc])[0]


def main(compilers: list[str]) -> int:
    if not has_amx():
        print("this CPU has no AMX (no amx_tile in /proc/cpuinfo): nothing to show here")
        return 0
    found = [c for c in compilers if shutil.which(c)]
    if not found:
        print(f"none of {', '.join(compilers)} is installed")
        return 1
    with tempfile.TemporaryDirectory(prefix="amx-tilecfg-") as tmp:
        for cc in found:
            for opt in ("-O2", "-O0"):
                print(f"{version(cc)} {opt}: {try_compiler(cc, opt, Path(tmp))}")
    return 0
