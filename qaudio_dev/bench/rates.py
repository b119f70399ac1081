"""How every benchmark drives the engine: the aggregate decode rate of sequences started in
the same step, and the CPU-kernel verdict each side obeys (``scripts/bench.py``,
``scripts/bench_engine.py``)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qaudio_local.engine.model import AudioModel


def engine_rate(model: AudioModel, n: int, tokens: int) -> float:
    """Aggregate decode tokens/s of n sequences started in the same step."""
    from qaudio_local.engine.options import SamplingOptions

    sampling = SamplingOptions(max_tokens=tokens, stop_at_end_of_turn=False)
    results: list = [None] * n
    gens = [model.stream(f"Sequence {i}: say something.", sampling=sampling) for i in range(n)]

    def run(i: int) -> None:
        results[i] = gens[i].wait()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    with model._scheduler.held():  # type: ignore[union-attr]
        for t in threads:
            t.start()
        while model._scheduler.queued < n:  # type: ignore[union-attr]
            time.sleep(0.001)
    for t in threads:
        t.join()
    # all prompts were fed in the first step; after it, every step decodes all n
    decoded = sum(r.usage.completion_tokens - 1 for r in results)
    return decoded / (max(r.timings.decode_ms for r in results) / 1e3)


def fast_kernels(model: str | Path) -> bool:
    """Whether this GGUF may load with llama.cpp's fast CPU kernels here: the project's
    CPU-kernel verdict, which every side of a benchmark obeys (the engine by itself,
    llama.cpp's tools through ``--repack 0`` / ``--no-repack``, ``Llama`` in bench.py)."""
    from qaudio_local.engine.cpu_probe import kernel_plan
    from qaudio_local.engine.gguf import check_text_model

    return kernel_plan("auto", check_text_model(model).quantized, False).extra_bufts
