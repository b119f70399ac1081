"""Build llama.cpp's own llama-server from the sources vendored in the installed
llama-cpp-python's sdist, once, into ~/.cache/qaudio-dev (or $QAUDIO_DEV_CACHE); later
runs find it there. tests/test_remote_llama_server.py uses it as a foreign backend.

    python scripts/build_llama_server.py    # prints the binary's path (~10 min the first time)
"""

from __future__ import annotations

import sys

from qaudio_dev.bench.build import llama_server


def main() -> int:
    binary, how = llama_server(lambda line: print(line, file=sys.stderr, flush=True))
    if binary is None:
        print(f"llama-server could not be built: {how}", file=sys.stderr)
        return 1
    print(binary)
    print(how, file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
