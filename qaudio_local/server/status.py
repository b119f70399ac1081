"""``GET /v1/status``: what runs here, read-only, behind the key like the rest of the API.

The model's files, quantization, projector, backend and GPU layers; the plan the server
made at start with its memory arithmetic (the lines ``qaudio plan`` prints), or ``null``
for model files given by path (nothing is planned then); and live figures: tokens fed to
llama.cpp per second since the previous read, sequences busy, requests queued, live
sessions, KV cells in use. Reading it never loads the model: while it is unloaded (after
``--keep-alive``) the model's facts are the last ones seen and the engine figures are
``null``.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse, Response

from .common import ServerState

if TYPE_CHECKING:
    from ..engine.model import AudioModel

MIN_RATE_SECONDS = 0.5  # a rate over a shorter interval is the previous one again


def weight_type(path: Any) -> str:
    """The type most of a GGUF's weight bytes are stored in (``"Q4_K"``, ``"F32"``)."""
    from ..engine.gguf.scan import scan

    bytes_by_type: Counter[str] = Counter()
    for t in scan(path).tensors:
        if len(t.shape) >= 2:
            bytes_by_type[t.type_name] += t.nbytes
    return bytes_by_type.most_common(1)[0][0] if bytes_by_type else "unknown"


def model_facts(model: AudioModel, plan: Any | None) -> dict[str, Any]:
    """What the loaded model is and where it runs."""
    from ..engine.bindings.backend import backend_info

    opts = model.options
    backend = backend_info()
    n_layer = model.model_info.n_layer
    gpu_layers = n_layer + 1 if opts.n_gpu_layers < 0 else opts.n_gpu_layers
    if not backend.gpu_offload:
        gpu_layers = 0  # a CPU-only build puts every layer on the CPU whatever was asked
    return {
        "text_model": model.model_info.path.name,
        "projector_file": model.projector_info.path.name,
        "quantization": plan.quant if plan is not None else weight_type(model.model_info.path),
        "projector": plan.projector
        if plan is not None
        else weight_type(model.projector_info.path).lower(),
        "projector_type": model.projector_info.projector_type,
        "backend": ", ".join(backend.backends),
        "llama_cpp_python": backend.version,
        "gpu_offload": backend.gpu_offload,
        "gpu_layers": gpu_layers,
        "n_layers": n_layer,
        "projector_on_gpu": bool(opts.mmproj_on_gpu and backend.gpu_offload),
        "n_ctx": model.n_ctx,
        "sequences": opts.n_parallel,
        "kv_type": opts.kv_type,
        "audio_path": opts.audio_path,
        "threads": opts.n_threads,
        "prompt_format": model.prompt_format,
    }


class Rate:
    """Tokens fed per second between two reads of the engine's counts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: tuple[float, int] | None = None
        self._rate = 0.0

    def update(self, fed: int) -> float:
        now = time.monotonic()
        with self._lock:
            last = self._last
            if last is None or fed < last[1]:  # first read, or a model loaded again
                self._last = (now, fed)
                return 0.0
            if now - last[0] >= MIN_RATE_SECONDS:
                self._rate = (fed - last[1]) / (now - last[0])
                self._last = (now, fed)
            return round(self._rate, 1)


def status_route(state: ServerState) -> Any:
    """The route, bound to ``state``."""
    rate = Rate()
    facts: dict[str, Any] = {}

    async def route() -> Response:
        from .common import ready, residency

        resident = ready(state)
        plan = state.planned() if state.planned is not None else None
        model = resident.current
        engine: dict[str, Any] | None = None
        if model is not None:
            if facts.get("_of") is not model:
                facts.clear()
                facts.update(model_facts(model, plan), _of=model)
            try:
                stats = model.stats
            except Exception:  # unloaded between the two reads
                stats = None
            if stats is not None:
                engine = {
                    "tokens_per_s": rate.update(stats.tokens_fed + stats.embeddings_fed),
                    "requests_done": stats.requests,
                    "cells_used": stats.cells_used,
                    "n_ctx": stats.n_ctx,
                    "cached_sequences": stats.cached_sequences,
                    "positions_reused": stats.positions_reused,
                }
        with state.lock:
            in_flight = state.in_flight
        return JSONResponse(
            {
                "model": state.model_id,
                "aliases": list(state.aliases),
                **{k: v for k, v in facts.items() if k != "_of"},
                "plan": None if plan is None else {"lines": plan.explain(), **plan.to_dict()},
                "parallel": state.parallel,
                "max_queue": state.max_queue,
                "busy": min(in_flight, state.parallel),
                "queued": max(0, in_flight - state.parallel),
                "sessions": state.sessions,
                "max_sessions": state.max_sessions,
                "engine": engine,
                **residency(resident),
            }
        )

    return route
