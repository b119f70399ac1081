"""The whole path side by side: this project, llama.cpp's own tools and transformers.

Builds (once, cached in ``--work``) a synthetic Qwen2-Audio of the real widths, converts it
to F16, Q8_0 and Q4_K_M, and measures every side in its own child process: time to first
token and end to end, prefill and decode on each GGUF (the engine, ``llama-bench``,
``Llama``), memory copy bandwidth, and parallel sequences; then prints the Markdown block,
and with ``--write-readme`` also writes it between README.md's ``bench:start``/``bench:end``
markers (a run without it changes no tracked file). What it measures and how:
:mod:`qaudio_dev.bench`.

    .venv/bin/python scripts/bench.py --write-readme  # full run (~40 min the first time)
    .venv/bin/python scripts/bench.py --quick         # one repeat, 5 s clip only; prints it
    .venv/bin/python scripts/bench.py --smoke         # tiny sizes, seconds (the test)

Needs ~13 GB of RAM at 4 text layers (transformers in float32 holds it all) and ~25 GB of
disk in ``--work``.
"""

from __future__ import annotations

from qaudio_dev.bench.cli import main

if __name__ == "__main__":
    main()
