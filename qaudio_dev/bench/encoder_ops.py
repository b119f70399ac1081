"""Where a window's time goes in the ggml encoder: each kind of op timed on its own.

One encoder layer is a handful of op kinds at fixed shapes (d_model x positions): four
d x d projections, the feed-forward up and down products, the attention, a GELU, two
layer norms and the residual adds; the convolution stem runs once per window. Each kind is
built as a small ggml graph of ``reps`` independent copies (so thread start-up is spread
over them), computed on the CPU backend with random weights of the type asked for (Q8_0
on the matrix units where the CPU-kernel plan would put the encoder's weights there), and
timed best of ``rounds``. The window's estimate is 32 layers of the sum plus the stem;
``scripts/profile_encoder.py`` prints it beside the rate torch gets on the same products.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from qaudio_local.engine.bindings.ggml_api import (
    GGML_TYPE_F32,
    extra_buffer_types,
    ggml,
    ggml_init_params,
)

TYPES = {"F32": 0, "F16": 1, "Q8_0": 8, "BF16": 30}
GRAPH = 4096


@dataclass(frozen=True)
class Dims:
    d_model: int = 1280
    heads: int = 20
    ffn: int = 5120
    layers: int = 32
    mels: int = 128


@dataclass(frozen=True)
class Op:
    """One op kind: its name, copies per layer, and FLOPs of one copy."""

    name: str
    per_layer: int
    flops: float
    # (g, ctx, weights ctx) -> (tensors to fill, out); a product's weight goes in the second
    build: Callable[[Any, Any, Any], tuple[list[Any], Any]]
    has_weights: bool = False


def _fill(g: Any, t: Any) -> None:
    """Random values of the tensor's type (Q8_0 as real blocks, so scales are sane)."""
    rng = np.random.default_rng(0)
    ttype = t.contents.type
    n = int(np.prod([t.contents.ne[i] for i in range(4)]))
    x = (rng.standard_normal(n) * 0.05).astype(np.float32)
    if ttype == TYPES["F16"]:
        data: np.ndarray = x.astype(np.float16)
    elif ttype == TYPES["BF16"]:
        data = (x.view(np.uint32) >> 16).astype(np.uint16)
    elif ttype == TYPES["Q8_0"]:
        import gguf.quants

        data = gguf.quants.quantize(
            x.reshape(-1, int(t.contents.ne[0])), gguf.GGMLQuantizationType.Q8_0
        )
    else:
        data = x
    data = np.ascontiguousarray(data)
    g.ggml_backend_tensor_set(t, data.ctypes.data, 0, data.nbytes)


def ops(d: Dims, positions: int, wtype: int) -> list[Op]:
    """The op kinds of one layer (and the stem) at ``positions`` encoder positions."""
    n, hd = positions, d.d_model // d.heads

    def matmul(k: int, m: int) -> Callable[[Any, Any, Any], tuple[list[Any], Any]]:
        def build(g: Any, ctx: Any, wctx: Any) -> tuple[list[Any], Any]:
            w = g.ggml_new_tensor_2d(wctx, wtype, k, m)
            x = g.ggml_new_tensor_2d(ctx, GGML_TYPE_F32, k, n)
            return [w, x], g.ggml_mul_mat(ctx, w, x)

        return build

    def attention(g: Any, ctx: Any, _w: Any) -> tuple[list[Any], Any]:
        q, k, v = (g.ggml_new_tensor_3d(ctx, GGML_TYPE_F32, hd, n, d.heads) for _ in range(3))
        return [q, k, v], g.ggml_flash_attn_ext(ctx, q, k, v, None, hd**-0.5, 0.0, 0.0)

    def gelu(g: Any, ctx: Any, _w: Any) -> tuple[list[Any], Any]:
        x = g.ggml_new_tensor_2d(ctx, GGML_TYPE_F32, d.ffn, n)
        return [x], g.ggml_gelu_erf(ctx, x)

    def norm_adds(g: Any, ctx: Any, _w: Any) -> tuple[list[Any], Any]:
        x, w, b = (g.ggml_new_tensor_2d(ctx, GGML_TYPE_F32, d.d_model, k) for k in (n, 1, 1))
        y = g.ggml_add(ctx, g.ggml_mul(ctx, g.ggml_norm(ctx, x, 1e-5), w), b)
        return [x, w, b], g.ggml_add(ctx, y, x)  # a norm with its scale and shift, a residual

    def stem(g: Any, ctx: Any, _w: Any) -> tuple[list[Any], Any]:
        w1 = g.ggml_new_tensor_3d(ctx, TYPES["F16"], 3, d.mels, d.d_model)
        w2 = g.ggml_new_tensor_3d(ctx, TYPES["F16"], 3, d.d_model, d.d_model)
        x = g.ggml_new_tensor_2d(ctx, GGML_TYPE_F32, 2 * n, d.mels)
        y = g.ggml_gelu_erf(ctx, g.ggml_conv_1d(ctx, w1, x, 1, 1, 1))
        return [w1, w2, x], g.ggml_gelu_erf(ctx, g.ggml_conv_1d(ctx, w2, y, 2, 1, 1))

    dm, f = d.d_model, d.ffn
    return [
        Op("q/k/v/out projections", 4, 2.0 * dm * dm * n, matmul(dm, dm), True),
        Op("ffn up", 1, 2.0 * dm * f * n, matmul(dm, f), True),
        Op("ffn down", 1, 2.0 * f * dm * n, matmul(f, dm), True),
        Op("attention (flash, F32)", 1, 4.0 * n * n * dm, attention),
        Op("GELU", 1, 0.0, gelu),
        Op("layer norms + residual adds", 2, 0.0, norm_adds),
        Op("convolution stem (per window)", 0, 2.0 * 3 * n * dm * (2 * d.mels + dm), stem),
    ]


def time_op(op: Op, *, threads: int, amx: bool, reps: int = 4, rounds: int = 3) -> float:
    """Best seconds of one copy of ``op`` on the CPU backend."""
    g = ggml()
    backend = g.ggml_backend_init_by_type(0, None)
    g.ggml_backend_cpu_set_n_threads(backend, threads)
    mem = g.ggml_tensor_overhead() * GRAPH + g.ggml_graph_overhead_custom(GRAPH, False)
    params = ggml_init_params(mem_size=mem, mem_buffer=None, no_alloc=True)
    ctx, wctx = g.ggml_init(params), g.ggml_init(params)
    graph = g.ggml_new_graph_custom(ctx, GRAPH, False)
    bufs, tensors = [], []
    try:
        for _ in range(reps):
            made, out = op.build(g, ctx, wctx)
            tensors += made
            g.ggml_build_forward_expand(graph, out)
        if op.has_weights:  # the products' weights: in the AMX buffer type where asked
            buft = extra_buffer_types(g, backend).get("AMX") if amx else None
            if buft:
                bufs.append(g.ggml_backend_alloc_ctx_tensors_from_buft(wctx, buft))
            else:
                bufs.append(g.ggml_backend_alloc_ctx_tensors(wctx, backend))
        bufs.append(g.ggml_backend_alloc_ctx_tensors(ctx, backend))
        if not all(bufs):
            raise MemoryError(f"ggml could not allocate the tensors of {op.name}")
        for t in tensors:
            _fill(g, t)
        best = float("inf")
        for _ in range(rounds):
            t0 = time.perf_counter()
            if g.ggml_backend_graph_compute(backend, graph) != 0:
                raise RuntimeError(f"ggml could not compute {op.name}")
            best = min(best, time.perf_counter() - t0)
        return best / reps
    finally:
        for b in bufs:
            g.ggml_backend_buffer_free(b)
        g.ggml_free(ctx)
        g.ggml_free(wctx)
        g.ggml_backend_free(backend)
