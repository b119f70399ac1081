"""Options several commands share: which model and how it is loaded, how tokens are chosen.

Every number is bounded to what llama.cpp and the machine can take (no silent
wrap-around, no NaN or inf), and sizes are read the way people type them.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from ..engine import AudioModel
    from ..models.planner_memory import Plan
    from ..models.resolve import ResolvedModel

F = TypeVar("F", bound=Callable[..., Any])
_PATH = click.Path(path_type=Path)
_UNITS = {"": 1.0, "k": 2**-20, "m": 2**-10, "g": 1.0, "t": 2**10}  # -> GiB
MAX_CTX = 1 << 20  # far above any Qwen2 context; llama.cpp's counters are 32-bit
MAX_TOKENS = 1 << 20


class Size(click.ParamType):
    """A memory size in GiB: ``8``, ``8G``, ``8GB``, ``8GiB``, ``8192M``, ``0.5T``.

    A bare number is GiB. G, GB and GiB all mean 2**30 bytes (what a "16 GB" GPU holds).
    """

    name = "SIZE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, int | float):
            return float(value)
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(?:i?b)?\s*", str(value), re.I)
        if not m:
            self.fail(
                f"{value!r} is not a size; write it like 8, 8G, 8GB, 8GiB or 8192M", param, ctx
            )
        gib = float(m.group(1)) * _UNITS[m.group(2).lower()]
        if not math.isfinite(gib) or gib > 1 << 20:
            self.fail(f"{value!r} is not a usable size", param, ctx)
        return gib


class Finite(click.FloatRange):
    """A float range that also refuses NaN and infinity."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        out = super().convert(value, param, ctx)
        if not math.isfinite(out):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return out


def max_threads() -> int:
    """The most CPU threads worth asking for: 4 per core (more only thrash)."""
    return 4 * (os.cpu_count() or 1)


_VRAM_HELP = (
    "GPU memory to plan for instead of the free memory found (shared GPUs), e.g. 8, 8GB, 6.5G."
)
_RAM_HELP = "RAM to plan for instead of the available RAM found, e.g. 16, 16GB, 12000M."


def vram_ram_options(func: F) -> F:
    """The --vram / --ram overrides shared by the commands that plan."""
    func = click.option("--ram", type=Size(), default=None, help=_RAM_HELP)(func)
    return click.option("--vram", type=Size(), default=None, help=_VRAM_HELP)(func)


_MODEL_OPTIONS = [
    click.option(
        "-m",
        "--model",
        "model_name",
        default=None,
        help="Registry model as NAME[:QUANT] (default: the registry's default model, quant "
        "planned for this machine); pulled once, then used offline. See `qaudio plan`.",
    ),
    click.option("--quant", default=None, help="Quantization to use instead of the planned one."),
    click.option("--model-file", type=_PATH, default=None, help="Use this text-model GGUF."),
    click.option("--mmproj-file", type=_PATH, default=None, help="Use this projector GGUF."),
    click.option(
        "--n-ctx",
        default=4096,
        show_default=True,
        type=click.IntRange(256, MAX_CTX),
        help="Context window in tokens (30 s of audio takes 750).",
    ),
    click.option(
        "--allow-long-context",
        is_flag=True,
        help="Accept an --n-ctx beyond the context the model was trained for (answers get "
        "worse past it).",
    ),
    click.option(
        "--n-gpu-layers",
        default=None,
        type=click.IntRange(-1, 4096),
        help="Text-model layers on the GPU; -1 = all (default: the plan's choice for a "
        "registry model, 0 for --model-file).",
    ),
    click.option(
        "--kv-type",
        type=click.Choice(["f16", "q8_0", "f32"]),
        default="f16",
        show_default=True,
        help="KV cache type: q8_0 halves its memory; f32 is exact (with --model-file only).",
    ),
    vram_ram_options,
    click.option("--force", is_flag=True, help="Use --quant even if the plan says it won't fit."),
    click.option(
        "--threads",
        default=None,
        type=click.IntRange(1, max_threads()),
        help=f"CPU threads (default: one per physical core; at most {max_threads()} here).",
    ),
    click.option("--no-mmproj-gpu", is_flag=True, help="Keep the audio encoder on the CPU."),
    click.option(
        "--cpu-kernels",
        type=click.Choice(["auto", "fast", "portable"]),
        default="auto",
        show_default=True,
        help="Kernels for quantized weights on the CPU: auto uses llama.cpp's fast "
        "(repacked/AMX) ones unless a one-time probe found that they crash this machine; "
        "fast or portable force either way.",
    ),
    click.option(
        "--audio-path",
        type=click.Choice(["faithful", "mtmd"]),
        default="faithful",
        show_default=True,
        help="faithful: reference-exact audio (25 tokens/s, padding masked); "
        "mtmd: llama.cpp's own path (every clip padded to 30 s windows), for comparison.",
    ),
]

_SAMPLING_OPTIONS = [
    click.option(
        "--max-tokens",
        default=256,
        show_default=True,
        type=click.IntRange(1, MAX_TOKENS),
        help="Most tokens to generate.",
    ),
    click.option(
        "--temperature",
        default=0.0,
        show_default=True,
        type=Finite(0, 100),
        help="0 = greedy decoding (deterministic).",
    ),
    click.option(
        "--top-p",
        default=1.0,
        show_default=True,
        type=Finite(0, 1, min_open=True),
        help="Nucleus sampling; 1 = off.",
    ),
    click.option(
        "--top-k", default=0, show_default=True, type=click.IntRange(0, 1 << 20), help="0 = off."
    ),
    click.option(
        "--repetition-penalty",
        default=1.0,
        show_default=True,
        type=Finite(0, 100, min_open=True),
        help=">1 discourages repeats.",
    ),
    click.option(
        "--seed",
        default=0,
        show_default=True,
        type=click.IntRange(0, 2**32 - 1),
        help="Random seed when --temperature > 0.",
    ),
]


def model_options(func: F) -> F:
    """The options that choose and load a model (registry name, or local files)."""
    for option in reversed(_MODEL_OPTIONS):
        func = option(func)
    return func


def sampling_options(func: F) -> F:
    """The options that choose tokens."""
    for option in reversed(_SAMPLING_OPTIONS):
        func = option(func)
    return func


def sampling_from(opts: dict[str, Any], **extra: Any) -> Any:
    """A :class:`SamplingOptions` from parsed options."""
    from ..engine.options import SamplingOptions

    keys = ("temperature", "top_p", "top_k", "repetition_penalty", "seed", "max_tokens")
    return SamplingOptions(**{k: opts[k] for k in keys}, **extra)


def check_model_options(opts: dict[str, Any]) -> None:
    """Usage errors in the model options, raised before anything slow happens.

    Also leaves ``opts["n_ctx"]`` at ``None`` unless the user gave ``--n-ctx``: the library
    then sizes the context for the sequences it loads (``models.load.context_for``).
    """
    from ..errors import OptionError
    from ..models.load import check_sources

    try:
        check_sources(
            opts["model_name"],
            opts["quant"],
            opts["model_file"],
            opts["mmproj_file"],
            opts["kv_type"],
        )
    except OptionError as exc:
        raise click.UsageError(str(exc)) from exc
    opts["n_ctx"] = given_n_ctx(click.get_current_context(silent=True), opts)


def given_n_ctx(ctx: click.Context | None, opts: dict[str, Any]) -> int | None:
    """``--n-ctx`` if the user gave it, else ``None`` (the library sizes the context)."""
    source = ctx.get_parameter_source("n_ctx") if ctx is not None else None
    if opts["n_ctx"] is None or source is click.core.ParameterSource.DEFAULT:
        return None
    return int(opts["n_ctx"])


def load_model(
    opts: dict[str, Any],
    *,
    parallel: int = 1,
    deterministic: bool = False,
    on_plan: Callable[[Plan], None] | None = None,
) -> AudioModel:
    """Load the model the options name through :func:`qaudio_local.models.load.load_model`:
    say which plan was chosen (and its warnings) on stderr, show download bars.

    The model's notices (kernels routed around a CPU fault) are not printed on every run:
    `qaudio hardware`, `plan` and `selftest` say them once; `--debug` shows them here.
    """
    from ..models.load import load_model as load
    from .progress import DownloadBars

    bars = DownloadBars()

    def chosen(r: ResolvedModel) -> None:
        bars.close()
        click.echo(f"using {r.spec}: {r.plan.placement()} (`qaudio plan` says why)", err=True)
        for warning in r.plan.warnings:
            click.echo(f"note: {warning}", err=True)
        if on_plan is not None:
            on_plan(r.plan)

    with bars.active():
        model = load(
            opts["model_name"],
            quant=opts["quant"],
            model_file=opts["model_file"],
            mmproj_file=opts["mmproj_file"],
            parallel=parallel,
            n_ctx=opts["n_ctx"],
            deterministic=deterministic,
            n_gpu_layers=opts["n_gpu_layers"],
            mmproj_on_gpu=False if opts["no_mmproj_gpu"] else None,
            kv_type=opts["kv_type"],
            n_threads=opts["threads"],
            cpu_kernels=opts["cpu_kernels"],
            audio_path=opts["audio_path"],
            allow_long_context=opts["allow_long_context"],
            vram_gb=opts["vram"],
            ram_gb=opts["ram"],
            force=opts["force"],
            progress=bars,
            on_resolved=chosen,
        )
    for notice in model.notices:
        logging.getLogger("qaudio_local.cli").debug("note: %s", notice)
    return model
