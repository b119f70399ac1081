"""The ``qaudio plan`` and ``qaudio hardware`` subcommands: what this machine can run, and why."""

from __future__ import annotations

import json

import click

from ..models.hardware import Hardware
from ..models.planner_memory import fmt_bytes
from .main import handle_errors, main
from .options import vram_ram_options


def hardware_lines(hw: Hardware) -> list[str]:
    """What :func:`qaudio_local.hardware.detect` found, as lines for people."""
    lines = []
    for g in hw.gpus:
        extra = [f"compute {g.compute_capability}"] if g.compute_capability else []
        extra += [f"driver {g.driver}"] if g.driver else []
        free = "unified memory" if g.unified else f"{fmt_bytes(g.free_bytes)} free"
        if hw.vram_override is not None:
            free = f"{fmt_bytes(hw.vram_override)} usable (--vram)"
        details = ", ".join([f"{fmt_bytes(g.total_bytes)} total", free, *extra])
        vendor = f" ({g.vendor})" if g.vendor != "unknown" else ""
        lines.append(f"GPU {g.index}: {g.name}{vendor}, {details}")
    if not hw.gpus:
        lines.append("GPU: none found")
    physical = f" ({hw.physical_cores} physical)" if hw.physical_cores else ""
    ram_src = " (--ram)" if hw.ram_override is not None else ""
    lines.append(
        f"CPU: {hw.cpu_cores} logical cores{physical}; RAM {fmt_bytes(hw.ram_total)} total, "
        f"{fmt_bytes(hw.ram_available)} available{ram_src}"
    )
    version = f"llama-cpp-python {hw.llama_version}" if hw.llama_version else "llama.cpp"
    backends = f", backends {', '.join(hw.llama_backends)}" if hw.llama_backends else ""
    offload = "yes" if hw.llama_gpu_offload else "no"
    lines.append(f"{version}{backends}; GPU offload: {offload}")
    if hw.cpu_kernels:
        lines.append(hw.cpu_kernels)
    if hw.cpu_kernels_cause:
        lines.append(hw.cpu_kernels_cause)
    lines += [f"note: {n}" for n in hw.notes]
    return lines


@main.command("hardware")
@vram_ram_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@handle_errors
def hardware_cmd(vram: float | None, ram: float | None, as_json: bool) -> None:
    """Show the GPUs, CPU cores and RAM found, and whether llama.cpp can use the GPU.

    Also says whether this CPU runs llama.cpp's fast kernels for quantized weights.

    \b
    Examples:
      qaudio hardware
      qaudio hardware --json
    """
    from ..models.hardware import cpu_only_build_warning, detect

    hw = detect(vram_gb=vram, ram_gb=ram)
    if as_json:
        click.echo(json.dumps(hw.to_dict(), indent=2))
        return
    for line in hardware_lines(hw):
        click.echo(line)
    warning = cpu_only_build_warning(hw)
    if warning:
        click.echo(f"warning: {warning}", err=True)


@main.command("plan")
@click.argument("name", required=False)
@click.option("--quant", default=None, help="Use this quantization (e.g. Q5_K_M) instead of auto.")
@click.option("--projector", default=None, help="Use this projector variant (e.g. f16, q8_0).")
@click.option(
    "--n-ctx",
    default=4096,
    show_default=True,
    type=click.IntRange(min=256),
    help="Context window in tokens.",
)
@click.option(
    "--kv-type",
    type=click.Choice(["f16", "q8_0"]),
    default="f16",
    show_default=True,
    help="KV cache type; q8_0 halves its memory.",
)
@click.option(
    "--parallel",
    "n_parallel",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Sequences decoded at once (e.g. for `qaudio serve`); they share the context.",
)
@vram_ram_options
@click.option("--force", is_flag=True, help="Plan a --quant even if it does not fit.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@handle_errors
def plan_cmd(
    name: str | None,
    quant: str | None,
    projector: str | None,
    n_ctx: int,
    kv_type: str,
    n_parallel: int,
    vram: float | None,
    ram: float | None,
    force: bool,
    as_json: bool,
) -> None:
    """Show which quantization and how many GPU layers NAME[:QUANT] would use here, and why.

    NAME defaults to the registry's default model; the quant defaults to auto. Nothing is
    downloaded or loaded.

    \b
    Examples:
      qaudio plan
      qaudio plan qwen2-audio:Q5_K_M --vram 10
      qaudio plan --n-ctx 8192 --kv-type q8_0 --parallel 4
    """
    from ..models.hardware import detect
    from ..models.planner import plan
    from ..models.registry import load_catalog

    entry, named_quant = load_catalog().resolve(name)
    if quant and named_quant != "auto" and quant.casefold() != named_quant.casefold():
        raise click.UsageError(f"NAME says :{named_quant} but --quant says {quant}; pick one")
    hw = detect(vram_gb=vram, ram_gb=ram)
    result = plan(
        entry,
        hw,
        n_ctx=n_ctx,
        kv_type=kv_type,
        quant=quant or named_quant,
        projector=projector or "auto",
        force=force,
        n_parallel=n_parallel,
    )
    if as_json:
        click.echo(json.dumps({"hardware": hw.to_dict(), "plan": result.to_dict()}, indent=2))
        return
    for line in [*hardware_lines(hw), "", *result.explain()]:
        click.echo(line)
