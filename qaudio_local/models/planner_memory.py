"""The memory arithmetic behind a plan, and the :class:`Plan` it produces. Pure; no I/O.

Every figure is in bytes. The formulas, for a text model with ``L`` layers, hidden size ``H``,
``A`` attention heads, ``K`` KV heads (head size ``H / A``), vocabulary ``V`` and context ``C``:

- weights: the GGUF's size; with ``n`` of ``L`` layers offloaded, ``size * n / L`` sits on the
  GPU (a conservative split: the embeddings, which stay on the CPU, are counted per layer).
  ``n_gpu_layers = L + 1`` is everything, the output layer included (llama.cpp's convention).
- KV cache: ``2 (K and V) * layers * C * K * (H / A) * bytes per element``, with 2 bytes per
  element for ``f16`` and 34/32 for ``q8_0`` (blocks of 32 one-byte values plus an f16 scale).
  For Qwen2-Audio-7B in f16 that is 0.5 MiB per token (4 GiB at 8192).
- compute buffers of the text model (an estimate of llama.cpp's graph scratch, per device that
  runs layers): ``4 B * U * (max(A * C, V) + 8 * H)`` with micro-batch ``U = min(512, C)``: the
  larger of the f32 attention scores and the f32 logits of one micro-batch, plus activations.
- compute buffers of the audio encoder, on the device that runs the projector: a constant for
  the Whisper-large-shaped encoder (20 heads, 1500 positions, width 1280, ffn 5120):
  ``4 B * (20 * 1500**2 + 1500 * (8 * 1280 + 5120))`` ~ 272 MB.
- backend context on a GPU (CUDA/Metal context, cuBLAS workspace): 256 MiB.
- safety margin on every device: ``max(5% of its budget, 300 MiB)``.

:class:`Setting` (the machine and request) and :class:`Candidate` (one placement) are the
planner's inputs to :func:`device_uses`, which writes these terms out per device.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any

from .catalog import ModelDims, ModelEntry, Projector, Quant
from .hardware import Gpu

MIB = 1 << 20
GIB = 1 << 30
KV_BYTES_PER_ELEMENT = {"f16": Fraction(2), "q8_0": Fraction(34, 32)}
N_UBATCH = 512  # llama.cpp's default micro-batch
GPU_CONTEXT_BYTES = 256 * MIB
MARGIN_FRACTION = Fraction(5, 100)
MARGIN_MIN_BYTES = 300 * MIB
UNIFIED_GPU_FRACTION = Fraction(70, 100)  # share of Apple unified memory the GPU may use
# The audio encoder (Whisper-large-v3 shaped, inside the projector GGUF); ModelDims has no
# encoder fields, and every Qwen2-Audio projector has these shapes.
ENCODER_HEADS, ENCODER_POSITIONS, ENCODER_WIDTH, ENCODER_FFN = 20, 1500, 1280, 5120
ENCODER_COMPUTE_BYTES = 4 * (
    ENCODER_HEADS * ENCODER_POSITIONS**2 + ENCODER_POSITIONS * (8 * ENCODER_WIDTH + ENCODER_FFN)
)


def head_dim(dims: ModelDims) -> int:
    """Size of one attention head."""
    return dims.hidden_size // dims.n_heads


def kv_cache_bytes(dims: ModelDims, n_ctx: int, kv_type: str, layers: int | None = None) -> int:
    """KV cache for ``layers`` layers (default all) at ``n_ctx`` tokens.

    Raises:
        KeyError: An unknown ``kv_type`` (callers validate it first).
    """
    n = dims.n_layers if layers is None else layers
    elements = 2 * n * n_ctx * dims.n_kv_heads * head_dim(dims)
    return int(elements * KV_BYTES_PER_ELEMENT[kv_type])


def compute_buffer_bytes(dims: ModelDims, n_ctx: int) -> int:
    """Estimated compute buffers of the text model on one device (see the module docstring)."""
    ubatch = min(N_UBATCH, n_ctx)
    return 4 * ubatch * (max(dims.n_heads * n_ctx, dims.vocab_size) + 8 * dims.hidden_size)


def margin_bytes(budget: int) -> int:
    """Safety margin kept free on a device with ``budget`` bytes available."""
    return max(int(budget * MARGIN_FRACTION), MARGIN_MIN_BYTES)


def weights_bytes(size: int, gpu_layers: int, n_layers: int) -> int:
    """Bytes of a ``size``-byte model on the GPU with ``gpu_layers`` offloaded."""
    if gpu_layers > n_layers:
        return size
    return size * gpu_layers // n_layers


def fmt_bytes(n: int) -> str:
    """Bytes as GiB (or MiB below 1 GiB), two decimals."""
    return f"{n / GIB:.2f} GiB" if abs(n) >= GIB else f"{n / MIB:.0f} MiB"


@dataclass(frozen=True)
class MemoryLine:
    """One term of a device's sum.

    Attributes:
        label: What it is, e.g. ``"KV cache"``.
        bytes: How much.
        formula: How it was computed, in words and numbers.
    """

    label: str
    bytes: int
    formula: str = ""


@dataclass(frozen=True)
class DeviceUse:
    """What a plan expects to use on one device.

    Attributes:
        kind: ``"gpu"``, ``"ram"`` or ``"unified"`` (Apple Silicon).
        name: e.g. ``"NVIDIA GeForce RTX 4070"`` or ``"RAM"``.
        available: The budget: free VRAM, available RAM, or the unified share.
        lines: The terms; their sum (``needed``) includes the safety margin.
    """

    kind: str
    name: str
    available: int
    lines: tuple[MemoryLine, ...]

    @property
    def needed(self) -> int:
        """The sum of the lines."""
        return sum(line.bytes for line in self.lines)

    @property
    def fits(self) -> bool:
        """Whether ``needed <= available``."""
        return self.needed <= self.available


@dataclass(frozen=True)
class Setting:
    """The fixed inputs of one planning problem (built by the planner from a Hardware).

    Attributes:
        entry: The model.
        n_ctx: Context window in tokens.
        kv_type: KV cache type.
        gpu: The GPU the build can offload to, else ``None``.
        gpu_budget: Bytes the GPU may use (free VRAM, or the unified share).
        ram_budget: Bytes of RAM available (0 for unified memory: it is all one pool).
        unified: Apple Silicon unified memory.
        n_parallel: Sequences decoded at once; they share the one KV cache of ``n_ctx``
            cells (llama.cpp's unified cache), so it does not grow with them.
    """

    entry: ModelEntry
    n_ctx: int
    kv_type: str
    gpu: Gpu | None  # a GPU the build can offload to, else None
    gpu_budget: int
    ram_budget: int
    unified: bool
    n_parallel: int = 1

    @property
    def n_layers(self) -> int:
        return self.entry.dims.n_layers


@dataclass(frozen=True)
class Candidate:
    """One way to run the model.

    Attributes:
        quant: The text-model quantization.
        projector: The projector variant.
        layers: Text layers on the GPU, 0..n_layers; ``n_layers + 1`` = all plus the output.
        proj_gpu: Whether the projector (audio encoder) runs on the GPU.
    """

    quant: Quant
    projector: Projector
    layers: int
    proj_gpu: bool


def _text_lines(s: Setting, c: Candidate, on_gpu: bool) -> list[MemoryLine]:
    """Weights, KV cache and compute buffers of the text layers on the GPU or on the CPU."""
    dims, n, size = s.entry.dims, s.n_layers, c.quant.file.size
    gpu_layers = min(c.layers, n)
    if on_gpu:
        weights, layers, runs = weights_bytes(size, c.layers, n), gpu_layers, c.layers > 0
    else:
        weights, layers = size - weights_bytes(size, c.layers, n), n - gpu_layers
        runs = c.layers <= n  # some layer, or the output layer, runs on the CPU
    bpe = KV_BYTES_PER_ELEMENT[s.kv_type]
    lines = [
        MemoryLine(f"weights {c.quant.name}", weights, f"{layers}/{n} layers of {size} B"),
        MemoryLine(
            f"KV cache {s.kv_type}",
            kv_cache_bytes(dims, s.n_ctx, s.kv_type, layers),
            f"2 x {layers} layers x {s.n_ctx} tokens x {dims.n_kv_heads} KV heads x "
            f"{head_dim(dims)} x {float(bpe):g} B"
            + (f"; one pool for {s.n_parallel} sequences" if s.n_parallel > 1 else ""),
        ),
    ]
    if runs:
        lines.append(
            MemoryLine(
                "compute buffers",
                compute_buffer_bytes(dims, s.n_ctx),
                "4 B x min(512, n_ctx) x (max(heads x n_ctx, vocab) + 8 x hidden)",
            )
        )
    return lines


def _projector_lines(c: Candidate) -> list[MemoryLine]:
    return [
        MemoryLine(f"projector {c.projector.name}", c.projector.file.size, "file size"),
        MemoryLine("audio encoder compute", ENCODER_COMPUTE_BYTES, "Whisper-large shapes"),
    ]


def device_uses(s: Setting, c: Candidate) -> tuple[DeviceUse, ...]:
    """The expected use of every device for candidate ``c``."""
    margin = MemoryLine("safety margin", 0, "max(5% of budget, 300 MiB)")
    ctx_line = MemoryLine("backend context", GPU_CONTEXT_BYTES, "CUDA/Metal context, workspace")
    if s.unified:
        assert s.gpu is not None
        lines = [*_text_lines(s, c, True), *_projector_lines(c), ctx_line]
        return (_device("unified", s.gpu.name, s.gpu_budget, lines, margin),)
    devices = []
    if s.gpu is not None and (c.layers > 0 or c.proj_gpu):
        lines = _text_lines(s, c, True) + (_projector_lines(c) if c.proj_gpu else [])
        devices.append(_device("gpu", s.gpu.name, s.gpu_budget, [*lines, ctx_line], margin))
    lines = [line for line in _text_lines(s, c, False) if line.bytes > 0]
    lines += [] if c.proj_gpu else _projector_lines(c)
    devices.append(_device("ram", "RAM", s.ram_budget, lines, margin))
    return tuple(devices)


def _device(
    kind: str, name: str, budget: int, lines: list[MemoryLine], margin: MemoryLine
) -> DeviceUse:
    margin = MemoryLine(margin.label, margin_bytes(budget), margin.formula)
    return DeviceUse(kind, name, budget, (*lines, margin))


def placement_of(s: Setting, c: Candidate) -> str:
    """``"gpu"`` (everything offloaded), ``"partial"`` or ``"cpu"``."""
    if s.unified or c.layers > s.n_layers:
        return "gpu"
    return "partial" if c.layers > 0 else "cpu"


@dataclass(frozen=True)
class Plan:
    """How to run a model on this machine, and why.

    Attributes:
        model: Canonical model name.
        quant: Quantization, e.g. ``"Q4_K_M"``.
        projector: Projector variant, e.g. ``"f16"``.
        n_gpu_layers: Text-model layers on the GPU; ``n_layers + 1`` means all of them and the
            output layer; 0 means none.
        n_layers: The model's layer count (to read ``n_gpu_layers``).
        mmproj_on_gpu: Whether the audio encoder/projector runs on the GPU.
        n_ctx: Context window in tokens.
        kv_type: KV cache type, ``"f16"`` or ``"q8_0"``.
        n_parallel: Sequences decoded at once, sharing the context's cells.
        where: ``"gpu"`` (everything offloaded), ``"partial"`` or ``"cpu"``.
        devices: Expected use per device, with the arithmetic.
        fits: Whether every device's need is within its budget (False only when forced).
        reasons: Why this plan, one sentence each.
        warnings: Things the user should know (a CPU-only build, a forced plan that overflows).
    """

    model: str
    quant: str
    projector: str
    n_gpu_layers: int
    n_layers: int
    mmproj_on_gpu: bool
    n_ctx: int
    kv_type: str
    where: str
    devices: tuple[DeviceUse, ...]
    fits: bool
    reasons: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    n_parallel: int = 1

    @property
    def expected_bytes(self) -> dict[str, int]:
        """Bytes expected per device kind, e.g. ``{"gpu": ..., "ram": ...}``."""
        return {d.kind: d.needed for d in self.devices}

    def placement(self) -> str:
        """``n_gpu_layers`` in words."""
        if self.n_gpu_layers > self.n_layers:
            return f"all {self.n_layers} layers and the output layer on the GPU"
        if self.n_gpu_layers == 0:
            return "all layers on the CPU"
        return f"{self.n_gpu_layers} of {self.n_layers} layers on the GPU, the rest on the CPU"

    def explain(self) -> list[str]:
        """The decision, the arithmetic and the reasons, as lines for people."""
        proj_where = "GPU" if self.mmproj_on_gpu else "CPU"
        out = [
            f"model {self.model}: quant {self.quant}, projector {self.projector} on the "
            f"{proj_where}, context {self.n_ctx} tokens, KV cache {self.kv_type}",
            f"placement: {self.placement()} (n_gpu_layers={self.n_gpu_layers})",
        ]
        if self.n_parallel > 1:
            share = self.n_ctx // self.n_parallel
            out.append(
                f"parallel: {self.n_parallel} sequences share the {self.n_ctx}-token KV cache "
                f"(about {share} tokens each when all are busy, {share / 25:.0f} s of audio; "
                "one alone may use it all)"
            )
        for d in self.devices:
            verdict = "fits" if d.fits else "DOES NOT FIT"
            out.append(
                f"{d.kind} ({d.name}): needs {fmt_bytes(d.needed)} of {fmt_bytes(d.available)} "
                f"available - {verdict}"
            )
            for line in d.lines:
                formula = f"  [{line.formula}]" if line.formula else ""
                out.append(f"  {line.label:<28} {fmt_bytes(line.bytes):>10}{formula}")
        out += [f"why: {r}" for r in self.reasons]
        out += [f"warning: {w}" for w in self.warnings]
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (bytes as integers; per-device ``needed`` included)."""
        data = asdict(self)
        for d, dev in zip(data["devices"], self.devices, strict=True):
            d["needed"] = dev.needed
            d["fits"] = dev.fits
        data["expected_bytes"] = self.expected_bytes
        return data
