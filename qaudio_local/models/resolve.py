"""From a model name to local GGUF files and load options: plan, pull if needed.

``qaudio run talk.wav`` goes through here: the registry entry is resolved, the planner
picks the quant, projector and offload for this machine, and the hub makes sure the two
files are present and verified (downloading them once, never touching the network when
they are already there or when offline mode is on).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .catalog import find_projector, find_quant
from .registry import load_catalog

if TYPE_CHECKING:
    from .hub import ProgressCallback
    from .planner_memory import Plan


@dataclass(frozen=True)
class ResolvedModel:
    """Local files and the plan that chose them.

    Attributes:
        spec: ``model:quant`` actually used.
        model_path: The text-model GGUF.
        mmproj_path: The projector GGUF.
        plan: The planner's decision (``n_gpu_layers``, ``mmproj_on_gpu``, ``n_ctx``,
            ``kv_type``, reasons and warnings).
        prompt_format: The registry entry's: ``"chat"`` or ``"base"``.
    """

    spec: str
    model_path: Path
    mmproj_path: Path
    plan: Plan
    prompt_format: str = "chat"


def resolve_model(
    name: str | None = None,
    *,
    quant: str | None = None,
    n_ctx: int = 4096,
    kv_type: str = "f16",
    vram_gb: float | None = None,
    ram_gb: float | None = None,
    force: bool = False,
    progress: ProgressCallback | None = None,
) -> ResolvedModel:
    """Plan for this machine and return local paths of the chosen files, pulling if needed.

    Args:
        name: ``model[:quant]`` (default: the registry's default model).
        quant: Overrides the quant in ``name``; ``None``/``"auto"`` lets the planner choose.
        n_ctx: Context window to plan for.
        kv_type: KV cache type to plan for.
        vram_gb: Override the free GPU memory detected.
        ram_gb: Override the free RAM detected.
        force: Accept a forced quant that does not fit (the plan says so in its warnings).
        progress: Download progress callback.

    Raises:
        UnknownModelError: Unknown model or quant.
        PlanError: A forced quant that does not fit, or nothing fits.
        OfflineModelMissingError: Offline and the files are not pulled yet.
        RemoteFileNotFoundError, HubUnreachableError, DiskFullError, IntegrityError: From the
            download.
    """
    from . import hub
    from .hardware import detect
    from .planner import plan

    entry, named = load_catalog().resolve(name)
    wanted = quant or named
    p = plan(
        entry,
        detect(vram_gb=vram_gb, ram_gb=ram_gb),
        n_ctx=n_ctx,
        kv_type=kv_type,
        quant=wanted,
        force=force,
    )
    q, pr = find_quant(entry, p.quant), find_projector(entry, p.projector)
    spec = f"{entry.name}:{q.name}"
    remote = [x.file for x in (q, pr) if x.local_path is None]
    got = {lf.file: lf.path for lf in hub.ensure(remote, progress=progress, name_hint=spec)}
    model_path = q.local_path or got[q.file]
    mmproj_path = pr.local_path or got[pr.file]
    return ResolvedModel(
        spec=spec,
        model_path=Path(model_path),
        mmproj_path=Path(mmproj_path),
        plan=p,
        prompt_format=entry.prompt_format,
    )
