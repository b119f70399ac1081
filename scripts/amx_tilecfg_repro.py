"""Why llama.cpp's AMX kernels fault when GCC 12 built them: one C program, each compiler.

    .venv/bin/python scripts/amx_tilecfg_repro.py            # gcc and clang, where installed
    .venv/bin/python scripts/amx_tilecfg_repro.py gcc-13     # the compilers named

See qaudio_dev/amx_repro.py.
"""

import sys

from qaudio_dev.amx_repro import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["gcc", "clang"]))
