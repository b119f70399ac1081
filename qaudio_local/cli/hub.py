"""The model-store subcommands: pull, list, rm, verify.

Names are ``model[:quant]`` from the registry (``qaudio list``); a missing quant means the one
the planner picks for this machine (``qaudio plan``). Progress bars and notes go to stderr,
results to stdout.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .main import handle_errors, main
from .options import vram_ram_options
from .progress import DownloadBars, decimal_size

if TYPE_CHECKING:
    from ..models.catalog import Catalog, HubFile, ModelEntry, Projector, Quant
    from ..models.manifest import ManifestRecord


@dataclass(frozen=True)
class _Label:
    """What a registry file is, for messages: ``model:quant`` or ``model`` + projector."""

    entry: ModelEntry
    kind: str  # "text" or "projector"
    variant: str  # quant or projector name

    @property
    def spec(self) -> str:
        return f"{self.entry.name}:{self.variant}" if self.kind == "text" else self.entry.name

    @property
    def pull_command(self) -> str:
        if self.kind == "text":
            return f"qaudio pull {self.spec}"
        return f"qaudio pull {self.entry.name} --projector {self.variant}"


def _labels(catalog: Catalog) -> dict[tuple[str, str], _Label]:
    """(repo, filename) -> what the registry calls that file (the first mention wins)."""
    out: dict[tuple[str, str], _Label] = {}
    for m in catalog.models:
        for q in m.quants:
            out.setdefault((q.file.repo, q.file.filename), _Label(m, "text", q.name))
        for p in m.projectors:
            out.setdefault((p.file.repo, p.file.filename), _Label(m, "projector", p.name))
    return out


def _choose(
    entry: ModelEntry, quant: str, projector: str | None, opts: dict[str, Any]
) -> tuple[Quant, Projector, list[str]]:
    """The quant and projector to pull: asked for, or what the planner picks here."""
    from ..models.catalog import find_projector, find_quant

    if quant != "auto" and projector is not None:
        return find_quant(entry, quant), find_projector(entry, projector), []
    from ..models.hardware import detect
    from ..models.planner import plan

    hw = detect(vram_gb=opts["vram"], ram_gb=opts["ram"])
    n_ctx = opts["n_ctx"] or min(4096, entry.dims.max_context)
    # force: a quant that does not fit this machine may still be pulled (with a warning)
    p = plan(
        entry,
        hw,
        n_ctx=n_ctx,
        kv_type=opts["kv_type"],
        quant=quant,
        projector=projector or "auto",
        force=True,
    )
    return find_quant(entry, p.quant), find_projector(entry, p.projector), list(p.warnings)


def _quant_arg(named: str, option: str | None) -> str:
    """The quant from ``NAME[:QUANT]`` and ``--quant``, which must agree when both are given."""
    if option and named != "auto" and option.casefold() != named.casefold():
        raise click.UsageError(f"NAME says :{named} but --quant says {option}; pick one")
    return option or named


def _check_pair(text: Path, projector: Path) -> str:
    """Make sure the files are the GGUF kinds the registry says; a one-line summary."""
    from ..engine.gguf import check_pair, check_projector, check_text_model

    t, p = check_text_model(text), check_projector(projector)
    check_pair(t, p)
    return f"{t.architecture}, {t.n_layer} layers, audio projector {p.projector_type}"


@main.command()
@click.argument("name", required=False)
@click.option("--quant", default=None, help="Quantization, e.g. Q4_K_M (default: the plan's).")
@click.option("--projector", default=None, help="Audio projector variant (default: the plan's).")
@click.option(
    "--n-ctx",
    type=click.IntRange(min=256),
    default=None,
    help="Context window the plan is for (default: 4096, or the model's maximum if less).",
)
@click.option(
    "--kv-type",
    type=click.Choice(["f16", "q8_0"]),
    default="f16",
    show_default=True,
    help="KV cache type the plan is for.",
)
@vram_ram_options
@click.option("--force", is_flag=True, help="Download again even if an identical copy exists.")
@handle_errors
def pull(
    name: str | None,
    quant: str | None,
    projector: str | None,
    force: bool,
    **plan_opts: Any,
) -> None:
    """Download a model and its audio projector, verified, for offline use.

    NAME is model[:quant] (default: the registry's default model). Without a quant, the one
    `qaudio plan` picks for this machine is pulled (--n-ctx, --kv-type, --vram and --ram as
    for `qaudio plan`); a quant too big for this machine is pulled anyway, with a note.

    \b
    Examples:
      qaudio pull
      qaudio pull qwen2-audio:Q5_K_M --projector q8_0
      qaudio pull --vram 8GB
    """
    from ..models import hub
    from ..models.registry import load_catalog

    entry, qname = load_catalog().resolve(name)
    q, p, warnings = _choose(entry, _quant_arg(qname, quant), projector, plan_opts)
    for w in warnings:
        click.echo(f"note: {w}", err=True)
    spec = f"{entry.name}:{q.name}"
    wanted: list[HubFile] = [x.file for x in (q, p) if x.local_path is None]
    bars = DownloadBars()
    with bars.active():
        got = {lf.file: lf for lf in hub.pull(wanted, progress=bars, name_hint=spec, force=force)}
    paths = [x.local_path or got[x.file].path for x in (q, p)]
    summary = _check_pair(paths[0], paths[1])
    fetched = sum(lf.transferred for lf in got.values())
    click.echo(f"{spec} with projector {p.name}: ready ({summary})")
    click.echo(f"  model:  {paths[0]}")
    click.echo(f"  mmproj: {paths[1]}")
    click.echo(f"  downloaded {decimal_size(fetched)}" if fetched else "  already up to date")


def _status(f: HubFile, rec: ManifestRecord | None, local: Path | None) -> str:
    from ..models import hub
    from ..paths import partial_files

    if local is not None:
        return "local file"
    if rec is not None:
        if hub.local_path(f) is None:
            return "damaged or deleted; run `qaudio verify`"
        return f"pulled, verified {rec.verified_at[:10]}"
    partial = sum(x.stat().st_size for x in partial_files(f.repo, f.filename))
    if partial:
        return (
            f"incomplete ({decimal_size(partial)} of {decimal_size(f.size)}; pull again to resume)"
        )
    return "available"


@main.command(name="list")
@handle_errors
def list_models() -> None:
    """Show every model in the registry: what is pulled (and verified when) and what is not.

    \b
    Examples:
      qaudio list
      QAUDIO_MODELS=./my-models.toml qaudio list
    """
    from ..models import hub
    from ..models.registry import load_catalog
    from ..paths import models_dir

    catalog = load_catalog()
    records = {r.key: r for r in hub.list_local()}
    for m in catalog.models:
        aliases = f" (also: {', '.join(m.aliases)})" if m.aliases else ""
        default = " [default]" if m.name == catalog.default else ""
        click.echo(f"{m.name}{aliases}{default}: {m.description}")
        rows = [("text", q.name, q.file, q.local_path) for q in m.quants]
        rows += [("projector", p.name, p.file, p.local_path) for p in m.projectors]
        for kind, variant, f, local in rows:
            rec = records.pop((f.repo, f.filename), None)
            size = rec.size if rec else f.size
            status = _status(f, rec, local)
            if rec is not None and rec.location:
                status += f", in the Hugging Face cache: {rec.path}"
            click.echo(f"  {variant:<10} {kind:<9} {decimal_size(size):>9}  {status}")
    if records:
        click.echo("pulled but no longer in the registry (delete a file to free its space):")
        for r in records.values():
            click.echo(f"  {r.repo}/{r.filename}  {decimal_size(r.size)}  {r.path}")
    pulled = hub.list_local()
    total = sum(r.size for r in pulled)
    click.echo(f"{len(pulled)} file(s) pulled, {decimal_size(total)} in {models_dir()}")


def _files_of(entry: ModelEntry, quant: str) -> list[HubFile]:
    """The downloadable files of ``entry``: one quant (and its projectors when no other quant
    stays pulled), or everything for ``"auto"``."""
    from ..models import hub
    from ..models.catalog import find_quant

    projectors = [p.file for p in entry.projectors if p.local_path is None]
    if quant == "auto":
        return [q.file for q in entry.quants if q.local_path is None] + projectors
    q = find_quant(entry, quant)
    others = [x for x in entry.quants if x is not q and x.local_path is None]
    keep_projectors = any(hub.local_path(x.file) for x in others)
    return ([] if q.local_path else [q.file]) + ([] if keep_projectors else projectors)


@main.command()
@click.argument("name")
@click.option("--quant", default=None, help="Remove only this quantization.")
@handle_errors
def rm(name: str, quant: str | None) -> None:
    """Delete a pulled model (NAME[:quant]; without a quant, all of it) and free the space.

    The audio projector goes too once no quantization of the model is left. Files given by
    path in your own models TOML are never deleted.

    \b
    Examples:
      qaudio rm qwen2-audio:Q8_0
      qaudio rm qwen2-audio
    """
    from ..models import hub
    from ..models.catalog import find_quant
    from ..models.registry import load_catalog

    entry, qname = load_catalog().resolve(name)
    qname = _quant_arg(qname, quant)
    files = _files_of(entry, qname)
    records = {r.key: r for r in hub.list_local()}
    shared = [r for f in files if (r := records.get((f.repo, f.filename))) and r.location]
    freed = hub.remove(files)
    what = entry.name if qname == "auto" else f"{entry.name}:{find_quant(entry, qname).name}"
    if freed:
        click.echo(f"removed {what}: freed {decimal_size(freed)}")
    for r in shared:
        click.echo(
            f"forgot {r.filename}, which stays in the Hugging Face cache at {r.path} "
            "(`huggingface-cli delete-cache` deletes it there)"
        )
    if not freed and not shared:
        click.echo(f"nothing to remove: {what} is not pulled")


@main.command()
@click.argument("name", required=False)
@handle_errors
def verify(name: str | None) -> None:
    """Re-hash pulled files against the sha256 recorded at download (works offline).

    NAME limits it to one model (or model:quant). A corrupt file is deleted, so that it is
    never loaded, and the command to fetch it again is printed. Exits 1 if any file is bad.

    \b
    Examples:
      qaudio verify
      qaudio verify qwen2-audio:Q4_K_M
    """
    from ..models import hub
    from ..models.catalog import find_quant
    from ..models.registry import load_catalog

    catalog = load_catalog()
    labels = _labels(catalog)
    pulled = {r.key for r in hub.list_local()}
    files = None
    if name:
        entry, qname = catalog.resolve(name)
        files = [f for f in _files_of(entry, "auto") if (f.repo, f.filename) in pulled]
        if qname != "auto":
            q = find_quant(entry, qname).file
            files = [q] + [f for f in files if labels[(f.repo, f.filename)].kind == "projector"]
    results = hub.verify(files)
    bad = 0
    for r in results:
        label = labels.get(r.file.key)
        what = f"{label.spec} {label.kind}" if label else r.file.repo
        what += f" {r.file.filename}"
        fix = label.pull_command if label else "qaudio pull NAME"
        if r.status == "ok":
            click.echo(f"OK       {what}")
        elif r.status == "not-pulled":
            click.echo(f"MISSING  {what}: not pulled; run `{fix}`")
            bad += 1
        else:
            why = "gone from disk" if r.status == "missing" else "sha256 does not match"
            gone = "; deleted" if r.removed else ""
            click.echo(f"CORRUPT  {what}: {why}{gone}; run `{fix}`")
            bad += 1
    if not results:
        click.echo("nothing pulled yet; run `qaudio pull`")
    if bad:
        sys.exit(1)
