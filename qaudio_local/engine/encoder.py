"""The Qwen2-Audio (Whisper-large-v3-shaped) audio encoder as a ggml graph.

Built here rather than through libmtmd because libmtmd always pads audio to 30 s and
lets the encoder attend to the padding; the reference masks the padding out and
passes only the valid tokens on. This graph reproduces the reference exactly:

    mel (128 x T)  -> conv1 (k3, s1, p1) + GELU -> conv2 (k3, s2, p1) + GELU
                   -> keep the L' = (L-1)//2+1 valid positions, + positions
                   -> N x [pre-LN self-attention, pre-LN GELU MLP]
                   -> average-pool (2) -> layer norm -> linear projector

The reference runs the convolutions over the whole padded window and masks padded
*keys* in attention; positions past L' never influence valid ones, so computing the
transformer on the valid positions only is the same computation. The convolutions
near the end of the valid region do read padded frames, so the graph is given the
valid frames plus :data:`CONV_CONTEXT` padded frames, exactly as the reference sees.

Weights come from the projector GGUF and run on the same ggml backends as llama.cpp
(the best available device: CUDA/Metal/... or the CPU). Convolution kernels are
widened to F32 so the convolution is computed in F32 like the reference.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..audio.features import audio_tokens, conv_frames
from ..errors import ModelFileError, RuntimeBackendError
from .bindings.ggml_api import (
    GGML_BACKEND_DEVICE_TYPE_CPU,
    GGML_OP_POOL_AVG,
    GGML_TYPE_F16,
    GGML_TYPE_F32,
    extra_buffer_types,
    ggml,
)
from .cpu_probe import fast_kernel_seam

CONV_CONTEXT = 3  # padded mel frames the two convolutions can reach past the valid ones
GRAPH_SIZE = 8192  # graph nodes: ~40 per layer, 32 layers, plus the stem and head
_WIDEN = ("a.conv1d.1.weight", "a.conv1d.2.weight", "a.position_embd.weight")
GGML_TYPE_Q8_0 = 8
# the matrix-product weights, each multiplied by a contiguous F32 activation
_LINEAR = ("attn_q", "attn_k", "attn_v", "attn_out", "ffn_up", "ffn_down", "mm.a.fc")
_AMX_TILE = 32  # ggml's AMX kernels take Q8_0 rows and columns in multiples of this


@dataclass(frozen=True)
class EncoderDims:
    """Hyper-parameters read from the projector GGUF."""

    n_mels: int
    d_model: int
    n_heads: int
    n_layers: int
    out_dim: int
    eps: float


class AudioEncoder:
    """Encode log-mel windows into text-model embeddings.

    Args:
        mmproj_path: The qwen2a projector GGUF (already validated by :mod:`.gguf`).
        use_gpu: Use the best ggml device (a GPU when the build has one).
        n_threads: CPU threads for the CPU backend.
        widen_quantized: Keep quantized weights as F32 copies (for a machine where the
            quantized kernels fault; see :mod:`.cpu_probe`).
        extra_bufts: Put Q8_0 matrix weights where the CPU backend runs them with its
            matrix units (llama.cpp's AMX buffer type, where the build and CPU have it), as
            llama.cpp does for text models; only where the CPU-kernel verdict says those
            kernels run (they fault when GCC 12 built them: :mod:`.build_compiler`).

    Raises:
        ModelFileError: A tensor the graph needs is missing.
        RuntimeBackendError: ggml could not start a backend or allocate the weights.
    """

    def __init__(
        self,
        mmproj_path: str | Path,
        *,
        use_gpu: bool = True,
        n_threads: int = 4,
        widen_quantized: bool = False,
        extra_bufts: bool = False,
    ) -> None:
        import gguf

        self._g = ggml()
        self._lock = threading.Lock()
        self._backend: Any = None
        self._wctx: Any = None
        self._wbuf: Any = None
        self._xctx: Any = None  # the weights in the AMX buffer type, if any
        self._xbuf: Any = None
        self._galloc: Any = None  # the compute buffers, kept and reused from window to window
        self._extra_bufts = extra_bufts and not widen_quantized
        self.amx_weights = 0  # how many weights the matrix units run
        self._flash = True  # fused F32 attention where the backend has it
        self._widen_quantized = widen_quantized
        reader = gguf.GGUFReader(mmproj_path)

        def meta(key: str) -> Any:
            return reader.fields[key].contents()

        self.dims = EncoderDims(
            n_mels=int(meta("clip.audio.num_mel_bins")),
            d_model=int(meta("clip.audio.embedding_length")),
            n_heads=int(meta("clip.audio.attention.head_count")),
            n_layers=int(meta("clip.audio.block_count")),
            out_dim=int(meta("clip.audio.projection_dim")),
            eps=float(meta("clip.audio.attention.layer_norm_epsilon")),
        )
        try:
            self._start_backend(use_gpu, n_threads)
            self._load_weights(reader, str(mmproj_path))
        except BaseException:
            self.close()
            raise

    # -- setup ---------------------------------------------------------------------------

    def _start_backend(self, use_gpu: bool, n_threads: int) -> None:
        g = self._g
        backend = g.ggml_backend_init_best() if use_gpu else None
        if not backend:
            backend = g.ggml_backend_init_by_type(GGML_BACKEND_DEVICE_TYPE_CPU, None)
        if not backend:
            raise RuntimeBackendError("ggml could not start a compute backend for the encoder")
        self._backend = backend
        if g.ggml_backend_is_cpu(backend):
            g.ggml_backend_cpu_set_n_threads(backend, n_threads)
        self.backend_name = (g.ggml_backend_name(backend) or b"?").decode()

    def _load_weights(self, reader: Any, path: str) -> None:
        g = self._g
        tensors = {t.name: t for t in reader.tensors}
        params = _init_params(g.ggml_tensor_overhead() * (len(tensors) + 8))
        self._wctx = g.ggml_init(params)
        amx = self._amx_buffer_type(tensors)
        if amx:
            self._xctx = g.ggml_init(_init_params(g.ggml_tensor_overhead() * (len(tensors) + 8)))
        self.w: dict[str, Any] = {}
        host: dict[str, np.ndarray] = {}
        for name, t in tensors.items():
            shape = [int(x) for x in t.shape]  # ggml order
            quantized = int(t.tensor_type) not in (GGML_TYPE_F32, GGML_TYPE_F16)
            if (
                name in _WIDEN
                or (t.tensor_type == GGML_TYPE_F16 and len(shape) == 1)
                or (quantized and self._widen_quantized)
            ):
                data, ttype = _as_f32(t), GGML_TYPE_F32
            else:
                data, ttype = np.asarray(t.data), int(t.tensor_type)
            new = {1: g.ggml_new_tensor_1d, 2: g.ggml_new_tensor_2d, 3: g.ggml_new_tensor_3d}[
                len(shape)
            ]
            on_amx = amx and _runs_on_amx(name, ttype, shape)
            self.w[name] = new(self._xctx if on_amx else self._wctx, ttype, *shape)
            self.amx_weights += bool(on_amx)
            host[name] = np.ascontiguousarray(data)
        self._wbuf = g.ggml_backend_alloc_ctx_tensors(self._wctx, self._backend)
        if self.amx_weights:
            self._xbuf = g.ggml_backend_alloc_ctx_tensors_from_buft(self._xctx, amx)
        if not self._wbuf or (self.amx_weights and not self._xbuf):
            raise RuntimeBackendError(
                f"not enough memory for the audio encoder of {path} on "
                f"{self.backend_name}; try --no-mmproj-gpu"
            )
        for name, arr in host.items():
            tensor = self.w[name]
            if g.ggml_nbytes(tensor) != arr.nbytes:
                raise ModelFileError(f"{path}: tensor {name} has an unexpected size", path=path)
            g.ggml_backend_tensor_set(tensor, arr.ctypes.data, 0, arr.nbytes)
        needed = [
            "a.conv1d.1.weight",
            "a.conv1d.1.bias",
            "a.conv1d.2.weight",
            "a.conv1d.2.bias",
            "a.position_embd.weight",
            "a.post_ln.weight",
            "a.post_ln.bias",
            "mm.a.fc.weight",
            "mm.a.fc.bias",
        ]
        for i in range(self.dims.n_layers):
            needed += [
                f"a.blk.{i}.{n}"
                for n in (
                    "ln1.weight",
                    "ln1.bias",
                    "attn_q.weight",
                    "attn_q.bias",
                    "attn_k.weight",
                    "attn_v.weight",
                    "attn_v.bias",
                    "attn_out.weight",
                    "attn_out.bias",
                    "ln2.weight",
                    "ln2.bias",
                    "ffn_up.weight",
                    "ffn_up.bias",
                    "ffn_down.weight",
                    "ffn_down.bias",
                )
            ]
        missing = [n for n in needed if n not in self.w]
        if missing:
            raise ModelFileError(
                f"{path} lacks {', '.join(missing[:3])}: not a Qwen2-Audio "
                "projector this encoder can run",
                path=path,
            )

    def _amx_buffer_type(self, tensors: dict[str, Any]) -> Any:
        """llama.cpp's AMX buffer type when the weights may go there, else ``None``."""
        g = self._g
        if not (self._extra_bufts and g.ggml_backend_is_cpu(self._backend)):
            return None
        if any(int(t.tensor_type) == GGML_TYPE_Q8_0 for t in tensors.values()):
            fast_kernel_seam(quantized=True, extra_bufts=True)  # tests: fault as AMX would
        return extra_buffer_types(g, self._backend).get("AMX")

    # -- lifetime ------------------------------------------------------------------------

    def close(self) -> None:
        """Free the weights and the backend (idempotent)."""
        g = self._g
        if self._galloc:
            g.ggml_gallocr_free(self._galloc)
            self._galloc = None
        for buf in ("_wbuf", "_xbuf"):
            if getattr(self, buf):
                g.ggml_backend_buffer_free(getattr(self, buf))
                setattr(self, buf, None)
        for ctx in ("_wctx", "_xctx"):
            if getattr(self, ctx):
                g.ggml_free(getattr(self, ctx))
                setattr(self, ctx, None)
        if self._backend:
            g.ggml_backend_free(self._backend)
            self._backend = None

    def __enter__(self) -> AudioEncoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- encoding ------------------------------------------------------------------------

    def encode(self, mel: np.ndarray, n_valid_frames: int) -> np.ndarray:
        """Embeddings for one window: float32 of shape (audio_tokens(L), out_dim).

        Args:
            mel: The window's log-mel, (n_mels, n_frames) as the reference computes it
                (padded frames included).
            n_valid_frames: L, the frames that hold audio.

        Raises:
            ValueError: Shapes that do not fit the encoder.
            RuntimeBackendError: ggml failed.
        """
        d = self.dims
        if mel.ndim != 2 or mel.shape[0] != d.n_mels:
            raise ValueError(f"mel must be ({d.n_mels}, frames), got {mel.shape}")
        if not 1 <= n_valid_frames <= mel.shape[1]:
            raise ValueError(f"n_valid_frames {n_valid_frames} out of range")
        n_out = audio_tokens(n_valid_frames)
        if n_out == 0:
            return np.zeros((0, d.out_dim), np.float32)
        n_in = min(mel.shape[1], n_valid_frames + CONV_CONTEXT)
        x = np.ascontiguousarray(mel[:, :n_in], dtype=np.float32)
        with self._lock:
            if self._backend is None:
                raise RuntimeBackendError("the audio encoder is closed")
            return self._run(x, conv_frames(n_valid_frames), n_out)

    def _run(self, mel: np.ndarray, n_pos: int, n_out: int) -> np.ndarray:
        g = self._g
        mem = g.ggml_tensor_overhead() * GRAPH_SIZE + g.ggml_graph_overhead_custom(
            GRAPH_SIZE, False
        )
        for flash in (True, False) if self._flash else (False,):
            ctx = g.ggml_init(_init_params(mem))
            try:
                graph = g.ggml_new_graph_custom(ctx, GRAPH_SIZE, False)
                inp = g.ggml_new_tensor_2d(ctx, GGML_TYPE_F32, mel.shape[1], mel.shape[0])
                g.ggml_set_input(inp)
                out = _Graph(g, ctx, self.w, self.dims, flash).build(inp, n_pos, n_out)
                g.ggml_set_output(out)
                g.ggml_build_forward_expand(graph, out)
                if all(
                    g.ggml_backend_supports_op(self._backend, g.ggml_graph_node(graph, i))
                    for i in range(g.ggml_graph_n_nodes(graph))
                ):
                    return self._compute(graph, inp, out, mel, n_out)
            finally:
                g.ggml_free(ctx)
            self._flash = False  # this backend lacks F32 flash attention: use plain ops
        raise RuntimeBackendError(
            f"the {self.backend_name} backend cannot run the audio encoder; use --no-mmproj-gpu"
        )

    def _compute(self, graph: Any, inp: Any, out: Any, mel: np.ndarray, n_out: int) -> np.ndarray:
        g = self._g
        if not self._galloc:
            self._galloc = g.ggml_gallocr_new(g.ggml_backend_get_default_buffer_type(self._backend))
        # the allocator keeps its buffer and grows it only for a longer window, so windows
        # after the first neither allocate nor fault in fresh pages
        if not g.ggml_gallocr_alloc_graph(self._galloc, graph):
            g.ggml_gallocr_free(self._galloc)
            self._galloc = None
            raise RuntimeBackendError("not enough memory for the audio encoder's buffers")
        g.ggml_backend_tensor_set(inp, mel.ctypes.data, 0, mel.nbytes)
        if g.ggml_backend_graph_compute(self._backend, graph) != 0:
            raise RuntimeBackendError("the audio encoder failed to compute")
        result = np.empty((n_out, self.dims.out_dim), np.float32)
        g.ggml_backend_tensor_get(out, result.ctypes.data, 0, result.nbytes)
        return result


def _runs_on_amx(name: str, ttype: int, shape: list[int]) -> bool:
    """A Q8_0 matrix weight whose products ggml's AMX kernels take (its shape tiles)."""
    return (
        ttype == GGML_TYPE_Q8_0
        and len(shape) == 2
        and name.endswith(".weight")
        and any(k in name for k in _LINEAR)
        and shape[0] % _AMX_TILE == 0
        and shape[1] % _AMX_TILE == 0
    )


def _as_f32(t: Any) -> np.ndarray:
    """A GGUF tensor widened to float32 (dequantized if it is stored quantized)."""
    import gguf.quants

    if t.tensor_type in (GGML_TYPE_F32, GGML_TYPE_F16):
        return np.asarray(t.data, dtype=np.float32)
    qtype = gguf.GGMLQuantizationType(int(t.tensor_type))
    return np.asarray(gguf.quants.dequantize(np.asarray(t.data), qtype), dtype=np.float32)


def _init_params(mem: int) -> Any:
    from .bindings.ggml_api import ggml_init_params

    return ggml_init_params(mem_size=mem, mem_buffer=None, no_alloc=True)


class _Graph:
    """Builds the encoder graph op by op (ggml shapes are written ne0-first)."""

    def __init__(self, g: Any, ctx: Any, w: dict[str, Any], dims: EncoderDims, flash: bool) -> None:
        self.g, self.ctx, self.w, self.d, self.flash = g, ctx, w, dims, flash

    def ln(self, x: Any, prefix: str) -> Any:
        g, ctx = self.g, self.ctx
        x = g.ggml_norm(ctx, x, self.d.eps)
        return g.ggml_add(
            ctx, g.ggml_mul(ctx, x, self.w[f"{prefix}.weight"]), self.w[f"{prefix}.bias"]
        )

    def linear(self, x: Any, prefix: str, bias: bool = True) -> Any:
        y = self.g.ggml_mul_mat(self.ctx, self.w[f"{prefix}.weight"], x)
        return self.g.ggml_add(self.ctx, y, self.w[f"{prefix}.bias"]) if bias else y

    def conv(self, x: Any, idx: int, stride: int) -> Any:
        g, ctx = self.g, self.ctx
        y = g.ggml_conv_1d(ctx, self.w[f"a.conv1d.{idx}.weight"], x, stride, 1, 1)
        return g.ggml_gelu_erf(ctx, g.ggml_add(ctx, y, self.w[f"a.conv1d.{idx}.bias"]))

    def attention(self, x: Any, i: int, n_pos: int) -> Any:
        g, ctx, d = self.g, self.ctx, self.d
        hd = d.d_model // d.n_heads
        p = f"a.blk.{i}"
        q = g.ggml_reshape_3d(ctx, self.linear(x, f"{p}.attn_q"), hd, d.n_heads, n_pos)
        k = g.ggml_reshape_3d(ctx, self.linear(x, f"{p}.attn_k", bias=False), hd, d.n_heads, n_pos)
        v = g.ggml_reshape_3d(ctx, self.linear(x, f"{p}.attn_v"), hd, d.n_heads, n_pos)
        if self.flash:
            # fused kernel on F32 q/k/v: no F16 rounding (llama.cpp casts K/V to F16 first)
            q, k, v = (g.ggml_permute(ctx, t, 0, 2, 1, 3) for t in (q, k, v))  # [hd, pos, head]
            o = g.ggml_flash_attn_ext(ctx, q, k, v, None, 1.0 / math.sqrt(hd), 0.0, 0.0)
            return self.linear(g.ggml_reshape_2d(ctx, o, d.d_model, n_pos), f"{p}.attn_out")
        q = g.ggml_cont(ctx, g.ggml_permute(ctx, q, 0, 2, 1, 3))  # [hd, pos, head]
        k = g.ggml_cont(ctx, g.ggml_permute(ctx, k, 0, 2, 1, 3))
        v = g.ggml_cont(ctx, g.ggml_permute(ctx, v, 1, 2, 0, 3))  # [pos, hd, head]
        kq = g.ggml_mul_mat(ctx, k, q)  # [key, query, head]
        kq = g.ggml_soft_max_ext(ctx, kq, None, 1.0 / math.sqrt(hd), 0.0)
        o = g.ggml_mul_mat(ctx, v, kq)  # [hd, query, head]
        o = g.ggml_cont(ctx, g.ggml_permute(ctx, o, 0, 2, 1, 3))  # [hd, head, query]
        o = g.ggml_reshape_2d(ctx, o, d.d_model, n_pos)
        return self.linear(o, f"{p}.attn_out")

    def mlp(self, x: Any, i: int) -> Any:
        h = self.g.ggml_gelu_erf(self.ctx, self.linear(x, f"a.blk.{i}.ffn_up"))
        return self.linear(h, f"a.blk.{i}.ffn_down")

    def build(self, mel: Any, n_pos: int, n_out: int) -> Any:
        g, ctx, d = self.g, self.ctx, self.d
        x = self.conv(self.conv(mel, 1, 1), 2, 2)  # [time, d_model]
        x = g.ggml_view_2d(ctx, x, n_pos, d.d_model, x.contents.nb[1], 0)
        x = g.ggml_cont(ctx, g.ggml_transpose(ctx, x))  # [d_model, pos]
        pos = self.w["a.position_embd.weight"]
        x = g.ggml_add(ctx, x, g.ggml_view_2d(ctx, pos, d.d_model, n_pos, pos.contents.nb[1], 0))
        for i in range(d.n_layers):
            x = g.ggml_add(ctx, x, self.attention(self.ln(x, f"a.blk.{i}.ln1"), i, n_pos))
            x = g.ggml_add(ctx, x, self.mlp(self.ln(x, f"a.blk.{i}.ln2"), i))
        x = g.ggml_view_2d(ctx, x, d.d_model, 2 * n_out, x.contents.nb[1], 0)
        x = g.ggml_cont(ctx, g.ggml_transpose(ctx, x))  # [pos, d_model]
        x = g.ggml_pool_1d(ctx, x, GGML_OP_POOL_AVG, 2, 2, 0)  # [n_out, d_model]
        x = g.ggml_cont(ctx, g.ggml_transpose(ctx, x))  # [d_model, n_out]
        return self.linear(self.ln(x, "a.post_ln"), "mm.a.fc")
