"""Which quantization, how many GPU layers, where the projector runs: pure functions, no I/O.

The arithmetic is in :mod:`qaudio_local.planner_memory`. The policy (``quant="auto"``):

1. **Full offload.** The best quant that fits entirely on the GPU (weights, projector, KV
   cache, compute buffers, context, margin), among quants from the *partial ceiling* up. For
   each quant the projector variants are tried on the GPU in preference order, then on the CPU.
2. **Partial offload.** If none fits, the best quant up to the partial ceiling that keeps at
   least half of its layers on the GPU (the rest, and their KV cache, in RAM). The ceiling is
   the largest quant of at most 5 bits per weight (Q4_K_M): with layers on the CPU, every
   extra byte per weight costs speed, so Q4_K_M partly offloaded is preferred to Q8_0. The
   projector moves to the CPU when that lets at least one more layer onto the GPU.
3. **CPU.** Otherwise (no GPU, a CPU-only llama.cpp build, or a GPU too small for half the
   layers), the best quant whose whole model fits in RAM; on a small GPU, as many of its
   layers as fit are offloaded as a bonus. With no usable GPU the audio encoder runs on the
   CPU too: where llama.cpp's AMX kernels run (``Hardware.cpu_matrix_units``), the q8_0
   projector comes first, its matrix weights on the matrix units (measured
   :data:`AMX_ENCODER`); elsewhere f16 stays first (a q8_0 projector on the plain kernels
   is no faster and less exact, :data:`PLAIN_ENCODER`), and the plan says so.

Apple Silicon (unified memory): the GPU may use 70% of RAM (or ``--vram``); the best quant
that fits entirely there, everything on the GPU.

So with more free memory the chosen quant never gets worse, within a kind of machine; going
from no usable GPU to one trades quality for speed on purpose (a Q4_K_M fully on a GPU is
many times faster than a Q8_0 on the CPU). A forced quant (``quant=``) that cannot fit at all
raises :class:`PlanError` with both numbers and the best alternative, unless ``force``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from ..errors import PlanError
from .catalog import ModelEntry, Projector, Quant, find_projector, find_quant
from .hardware import Hardware, cpu_only_build_warning
from .planner_memory import (
    KV_BYTES_PER_ELEMENT,
    UNIFIED_GPU_FRACTION,
    Candidate,
    DeviceUse,
    Plan,
    Setting,
    device_uses,
    fmt_bytes,
    placement_of,
)

PARTIAL_CEILING_BPW = 5.0
# The audio encoder on the CPU, measured at real size on an Intel Xeon VM with AMX, 2
# threads, a 30 s window (README, "The encoder against what a CPU user would otherwise
# run"): seconds with the f16 projector, seconds with q8_0 on the matrix units, and the
# cosine of the q8_0 embeddings to the f16 ones (one 29.9 s window through a random encoder
# of the real shape; q8_0 on the plain kernels gives the same 0.99982)
AMX_ENCODER = {"f16_s": 14.14, "q8_0_s": 7.16, "cosine": 0.99982}
# The same on the plain CPU kernels (no matrix units llama.cpp can use), measured at real
# size on an AMD EPYC VM with AVX2, 2 threads (the same README section): q8_0 no faster
PLAIN_ENCODER = {"f16_s": 20.29, "q8_0_s": 22.06, "cosine": 0.99982}
MIN_PARTIAL_FRACTION = 0.5
KvType = Literal["f16", "q8_0"]

__all__ = ["PARTIAL_CEILING_BPW", "Plan", "plan"]


def _setting(
    entry: ModelEntry, hw: Hardware, n_ctx: int, kv_type: str, n_parallel: int = 1
) -> Setting:
    gpu = hw.best_gpu if hw.llama_gpu_offload else None
    if gpu is not None and gpu.unified:
        budget = hw.vram_override
        if budget is None:
            budget = int(gpu.total_bytes * UNIFIED_GPU_FRACTION)
        return Setting(entry, n_ctx, kv_type, gpu, budget, 0, True, n_parallel)
    if gpu is not None and gpu.free_bytes <= 0:
        gpu = None
    gpu_budget = gpu.free_bytes if gpu else 0
    return Setting(entry, n_ctx, kv_type, gpu, gpu_budget, hw.ram_available, False, n_parallel)


def _fits(s: Setting, c: Candidate) -> bool:
    return all(d.fits for d in device_uses(s, c))


def _gpu_fits(s: Setting, c: Candidate) -> bool:
    return all(d.fits for d in device_uses(s, c) if d.kind != "ram")


def _full(s: Setting, q: Quant, projs: tuple[Projector, ...]) -> Candidate | None:
    """``q`` entirely on the GPU, projector variants on the GPU first, then on the CPU."""
    places = (True,) if s.unified else (True, False)
    for on_gpu in places:
        for p in projs:
            c = Candidate(q, p, s.n_layers + 1, on_gpu)
            if _fits(s, c):
                return c
    return None


def _max_layers(s: Setting, q: Quant, p: Projector, proj_gpu: bool) -> int:
    """Most layers of ``q`` the GPU holds with the projector placed so; -1 if not even 0/1."""
    lowest = 1 if proj_gpu else 0
    for layers in range(s.n_layers + 1, lowest - 1, -1):
        if _gpu_fits(s, Candidate(q, p, layers, proj_gpu)):
            return layers
    return -1


def _partial(s: Setting, q: Quant, p: Projector) -> Candidate:
    """``q`` with as many layers on the GPU as fit; the projector leaves if that adds one."""
    on_gpu, on_cpu = _max_layers(s, q, p, True), _max_layers(s, q, p, False)
    if on_gpu >= on_cpu and on_gpu > 0:
        return Candidate(q, p, on_gpu, True)
    return Candidate(q, p, max(on_cpu, 0), False)


def _ceiling(quants: tuple[Quant, ...]) -> int:
    """Index of the partial ceiling: the largest quant of at most 5 bits per weight."""
    small = [i for i, q in enumerate(quants) if q.bits_per_weight <= PARTIAL_CEILING_BPW]
    return small[-1] if small else 0


def _auto(s: Setting, quants: tuple[Quant, ...], projs: tuple[Projector, ...]) -> Candidate | None:
    """The policy of the module docstring; ``None`` when nothing fits."""
    if s.unified:
        return next((c for q in reversed(quants) if (c := _full(s, q, projs))), None)
    if s.gpu is not None:
        top = _ceiling(quants)
        for q in reversed(quants[top:]):
            if c := _full(s, q, projs):
                return c
        for q in reversed(quants[: top + 1]):
            for p in projs:
                c = _partial(s, q, p)
                if c.layers >= s.n_layers * MIN_PARTIAL_FRACTION and _fits(s, c):
                    return c
    for q in reversed(quants):
        for p in projs:
            c = Candidate(q, p, 0, False)
            if _fits(s, c):
                return _partial(s, q, p) if s.gpu is not None else c
    return None


def _forced(s: Setting, q: Quant, projs: tuple[Projector, ...]) -> Candidate | None:
    """``q`` placed as well as it fits: fully on the GPU, else partly, else on the CPU."""
    if (s.unified or s.gpu is not None) and (c := _full(s, q, projs)):
        return c
    if s.unified:
        return None
    for p in projs:
        c = _partial(s, q, p) if s.gpu is not None else Candidate(q, p, 0, False)
        if _fits(s, c):
            return c
    return None


def _attempt(s: Setting, q: Quant, projs: tuple[Projector, ...]) -> Candidate:
    """The closest miss for ``q``: smallest projector, as much on the GPU as fits."""
    p = min(projs, key=lambda x: x.file.size)
    if s.unified:
        return Candidate(q, p, s.n_layers + 1, True)
    return _partial(s, q, p) if s.gpu is not None else Candidate(q, p, 0, False)


def _make_plan(
    s: Setting, c: Candidate, reasons: list[str], warnings: list[str], fits: bool = True
) -> Plan:
    return Plan(
        model=s.entry.name,
        quant=c.quant.name,
        projector=c.projector.name,
        n_gpu_layers=c.layers,
        n_layers=s.n_layers,
        mmproj_on_gpu=c.proj_gpu or s.unified,
        n_ctx=s.n_ctx,
        kv_type=s.kv_type,
        where=placement_of(s, c),
        devices=device_uses(s, c),
        fits=fits,
        reasons=tuple(reasons),
        warnings=tuple(warnings),
        n_parallel=s.n_parallel,
    )


def _describe(s: Setting, c: Candidate) -> str:
    """``"Q4_K_M with 20 of 32 layers on the GPU"``, for messages."""
    if placement_of(s, c) == "gpu":
        return f"{c.quant.name} entirely on the GPU"
    if c.layers == 0:
        return f"{c.quant.name} on the CPU"
    return f"{c.quant.name} with {c.layers} of {s.n_layers} layers on the GPU"


def _shortfall(s: Setting, c: Candidate) -> tuple[DeviceUse, str]:
    """The first device ``c`` overflows (or the largest), and a phrase for it."""
    devices = device_uses(s, c)
    d = next((d for d in devices if not d.fits), devices[0])
    what = {"gpu": f"on the GPU ({d.name})", "ram": "of RAM", "unified": "of unified memory"}
    need, avail = fmt_bytes(d.needed), fmt_bytes(d.available)
    return d, f"needs {need} {what[d.kind]} but {avail} is available"


def _need(s: Setting, c: Candidate, kind: str) -> str:
    return next((fmt_bytes(d.needed) for d in device_uses(s, c) if d.kind == kind), "0 B")


def _matrix_units_first(projs: tuple[Projector, ...]) -> tuple[Projector, ...]:
    """The q8_0 projector first (if there is one), the others in their order."""
    q8 = tuple(p for p in projs if p.name.casefold() == "q8_0")
    return q8 + tuple(p for p in projs if p not in q8)


def _encoder_figures(measured: dict[str, float], against: str) -> tuple[str, str]:
    """The measured window times and embedding cosine of q8_0 against ``against`` (f16),
    as the phrases the projector reasons share."""
    window = (
        f"a 30 s window in ~{measured['q8_0_s']:.1f} s against ~{measured['f16_s']:.1f} s "
        f"with {against}"
    )
    return window, f"embeddings at cosine {measured['cosine']:.5f} to {against}'s"


def _why_projector(projs: tuple[Projector, ...], default: tuple[Projector, ...]) -> list[str]:
    """Why the projector order changed, with the measured arithmetic."""
    if not projs or not default or projs[0] == default[0]:
        return []
    window, embeddings = _encoder_figures(AMX_ENCODER, default[0].name)
    speedup = AMX_ENCODER["f16_s"] / AMX_ENCODER["q8_0_s"]
    return [
        f"the {projs[0].name} projector first: its matrix weights run on this CPU's matrix "
        f"units (AMX), {window} ({speedup:.1f}x, measured at real size on 2 threads), "
        f"{embeddings}"
    ]


def _why_plain_kernels(
    s: Setting, c: Candidate, projs: tuple[Projector, ...], hw: Hardware
) -> list[str]:
    """Why an encoder on a CPU without usable matrix units keeps the f16 projector when
    a q8_0 one was on offer, with the measured arithmetic."""
    if s.gpu is not None or s.unified or c.proj_gpu or hw.cpu_matrix_units:
        return []
    names = [p.name.casefold() for p in projs]
    if c.projector.name.casefold() != "f16" or "q8_0" not in names:
        return []
    window, embeddings = _encoder_figures(PLAIN_ENCODER, "f16")
    return [
        f"the {c.projector.name} projector: llama.cpp's AMX kernels do not run here, and on "
        f"the plain CPU kernels q8_0 is no faster ({window}, measured at real size on 2 "
        f"threads) and less exact ({embeddings})"
    ]


def _why_setting(s: Setting, hw: Hardware) -> list[str]:
    if s.unified:
        source = "--vram" if hw.vram_override is not None else "70% of unified memory"
        return [f"Apple unified memory: the GPU may use {fmt_bytes(s.gpu_budget)} ({source})"]
    if s.gpu is None:
        if not hw.gpus:
            return ["no GPU found, so the model runs on the CPU"]
        if not hw.llama_gpu_offload:
            return ["the installed llama.cpp build cannot offload to a GPU"]
        return ["the GPU has no free memory"]
    if len(hw.gpus) > 1:
        return [
            f"planning for {s.gpu.name} (most free memory of {len(hw.gpus)} GPUs; "
            "llama.cpp may spread layers over all of them)"
        ]
    return []


def _why_choice(s: Setting, c: Candidate, projs: tuple[Projector, ...]) -> list[str]:
    quants, q = s.entry.quants, c.quant
    better = quants[quants.index(q) + 1] if q != quants[-1] else None
    top = quants[_ceiling(quants)]
    kind = "unified" if s.unified else "gpu"
    where, out = placement_of(s, c), []
    if where == "gpu":
        out.append(f"{q.name} is the best quant that fits entirely on the GPU")
        if better is not None and (s.unified or s.gpu is not None):
            need = _need(s, _attempt(s, better, projs) if s.unified else _min_full(s, better), kind)
            out.append(f"{better.name} would need {need} there")
        if not c.proj_gpu and not s.unified:
            out.append("the projector runs on the CPU, which leaves the GPU room for the model")
        return out
    if s.gpu is not None and c.layers >= s.n_layers * MIN_PARTIAL_FRACTION:
        out = [
            f"no quant from {top.name} up fits entirely on the GPU ({top.name} needs "
            f"{_need(s, _min_full(s, top), 'gpu')})",
            f"{_describe(s, c)}; quants above {top.name} are not offloaded partly, because "
            "the layers left on the CPU slow down every token",
        ]
        if not c.proj_gpu:
            out.append("the projector runs on the CPU, which makes room for more layers")
        return out
    if s.gpu is not None:
        out.append(
            f"the GPU holds fewer than half the layers of any quant up to {top.name}, "
            "so the quant is sized by RAM"
        )
    out.append(f"{q.name} is the best quant that fits in RAM")
    if better is not None:
        need = _need(s, Candidate(better, min(projs, key=lambda p: p.file.size), 0, False), "ram")
        out.append(f"{better.name} would need {need} of RAM")
    if c.layers > 0:
        out.append(f"{c.layers} of its layers also fit on the GPU, which speeds it up")
    return out


def _min_full(s: Setting, q: Quant) -> Candidate:
    """``q`` fully on the GPU with the projector on the CPU (its smallest GPU need)."""
    return Candidate(q, s.entry.projectors[0], s.n_layers + 1, False)


def _suggestion(s: Setting, projs: tuple[Projector, ...]) -> str:
    """Settings that would make some plan fit: a q8_0 KV cache and/or a smaller context."""
    n_ctx = s.n_ctx
    while n_ctx >= 256:
        for kv in dict.fromkeys((s.kv_type, "q8_0")):
            if (n_ctx, kv) == (s.n_ctx, s.kv_type):
                continue
            trial = replace(s, n_ctx=n_ctx, kv_type=kv)
            if _auto(trial, s.entry.quants, projs) is not None:
                ctx = f"--n-ctx {n_ctx} " if n_ctx != s.n_ctx else ""
                return f"try {ctx}--kv-type {kv}"
        n_ctx //= 2
    return "free some memory"


def _check_inputs(entry: ModelEntry, n_ctx: int, kv_type: str) -> None:
    if kv_type not in KV_BYTES_PER_ELEMENT:
        raise PlanError(
            f"unknown KV cache type {kv_type!r}; valid: {', '.join(KV_BYTES_PER_ELEMENT)}"
        )
    if not 1 <= n_ctx <= entry.dims.max_context:
        raise PlanError(
            f"context {n_ctx} is outside 1..{entry.dims.max_context} for {entry.name}; "
            f"pass --n-ctx {min(max(n_ctx, 1), entry.dims.max_context)} or less"
        )


def plan(
    entry: ModelEntry,
    hw: Hardware,
    n_ctx: int = 4096,
    kv_type: KvType | str = "f16",
    quant: str = "auto",
    projector: str = "auto",
    force: bool = False,
    n_parallel: int = 1,
) -> Plan:
    """Choose how to run ``entry`` on ``hw`` (the policy is in the module docstring).

    Args:
        entry: The registry entry (only its dimensions, quants and file sizes are used).
        hw: The machine, e.g. from :func:`qaudio_local.hardware.detect`.
        n_ctx: Context window in tokens.
        kv_type: KV cache type: ``"f16"`` or ``"q8_0"``.
        quant: ``"auto"`` or a quant name (case-insensitive) to use.
        projector: ``"auto"`` or a projector name to use.
        force: Return a plan for a forced ``quant`` (or, with ``"auto"``, the smallest) even
            if it does not fit; the plan then has ``fits=False`` and a warning.
        n_parallel: Sequences to decode at once (they share the ``n_ctx`` cells).

    Raises:
        PlanError: Bad ``n_ctx``/``kv_type``; a forced quant that does not fit (with both
            numbers and the best alternative); nothing fits at all. Not raised with ``force``
            for the last two.
        UnknownModelError: ``quant`` or ``projector`` is not in ``entry``.
    """
    _check_inputs(entry, n_ctx, kv_type)
    if not 1 <= n_parallel <= 64:
        raise PlanError(f"--parallel {n_parallel} is outside 1..64")
    s = _setting(entry, hw, n_ctx, kv_type, n_parallel)
    projs = entry.projectors if projector == "auto" else (find_projector(entry, projector),)
    if projector == "auto" and s.gpu is None and not s.unified and hw.cpu_matrix_units:
        projs = _matrix_units_first(projs)
    warnings = [w] if (w := cpu_only_build_warning(hw)) else []
    reasons = _why_setting(s, hw) + _why_projector(projs, entry.projectors)
    if quant.strip().casefold() != "auto":
        return _plan_forced(s, find_quant(entry, quant), projs, force, reasons, warnings, hw)
    c = _auto(s, entry.quants, projs)
    if c is not None:
        why = _why_choice(s, c, projs) + _why_plain_kernels(s, c, projs, hw)
        return _make_plan(s, c, reasons + why, warnings)
    c = _attempt(s, entry.quants[0], projs)
    _, phrase = _shortfall(s, c)
    message = f"nothing fits: even {_describe(s, c)} {phrase}; {_suggestion(s, projs)}"
    if not force:
        raise PlanError(f"{message}, or pass --force to try anyway", quant=c.quant.name)
    warnings.append(f"{message}; forced, so llama.cpp may swap heavily or fail to load")
    return _make_plan(s, c, reasons, warnings, fits=False)


def _plan_forced(
    s: Setting,
    q: Quant,
    projs: tuple[Projector, ...],
    force: bool,
    reasons: list[str],
    warnings: list[str],
    hw: Hardware,
) -> Plan:
    c = _forced(s, q, projs)
    if c is not None:
        asked = f"{q.name} was asked for: {_describe(s, c)}"
        return _make_plan(s, c, [*reasons, asked, *_why_plain_kernels(s, c, projs, hw)], warnings)
    c = _attempt(s, q, projs)
    device, phrase = _shortfall(s, c)
    alt = _auto(s, s.entry.quants, s.entry.projectors)
    alt_text = f"the best that fits is {_describe(s, alt)}" if alt else "nothing else fits either"
    if not force:
        raise PlanError(
            f"{q.name} does not fit: {_describe(s, c)} {phrase}; {alt_text} (drop --quant), "
            f"or pass --force to use {q.name} anyway",
            needed=device.needed,
            available=device.available,
            quant=q.name,
            alternative=_describe(s, alt) if alt else None,
        )
    warnings.append(f"{q.name} was forced although it does not fit: it {phrase}; {alt_text}")
    return _make_plan(s, c, [*reasons, f"{q.name} was forced"], warnings, fits=False)
