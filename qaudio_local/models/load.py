"""One call from a model name (or two files) to a loaded model: :func:`load_model`.

It resolves the name in the registry, plans for this machine, pulls the files once
(verified; offline afterwards), turns the plan into :class:`~qaudio_local.engine.ModelOptions`
and loads the pair. Every decision a library user would otherwise repeat lives here: how
much context each parallel sequence gets, what "deterministic" means for loading, how a
plan's offload becomes load options. The CLI and the server only translate flags and
requests into this call::

    import qaudio_local as qa

    with qa.load_model("qwen2-audio:Q4_K_M", parallel=4) as model:
        for seg in qa.transcribe(model, "meeting.flac"):
            print(seg.start, seg.text)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import OptionError

if TYPE_CHECKING:
    from ..engine import AudioModel, ModelOptions
    from .hub import ProgressCallback
    from .resolve import ResolvedModel

DEFAULT_N_CTX = 4096
# context each parallel sequence needs: one 30 s window of audio (750 tokens), the
# instruction and a full answer; a model loaded for N sequences gets at least N times this
CTX_PER_SEQUENCE = 1100


def context_for(parallel: int, n_ctx: int | None = None) -> int:
    """The context window to load for ``parallel`` sequences.

    ``n_ctx`` given: exactly that. Otherwise :data:`DEFAULT_N_CTX`, raised to
    ``parallel * CTX_PER_SEQUENCE`` so that every sequence can hold a full window.
    """
    if n_ctx is not None:
        return n_ctx
    return max(DEFAULT_N_CTX, parallel * CTX_PER_SEQUENCE)


@dataclass(frozen=True)
class LoadSettings:
    """How a model pair is loaded, apart from where its files come from.

    Attributes:
        parallel: Sequences decoded together (requests served at once).
        n_ctx: Context window in tokens; ``None`` sizes it for ``parallel`` (see
            :func:`context_for`).
        deterministic: The same audio always gives the same tokens, whatever ran before:
            one sequence, and llama.cpp's flash attention off (its CPU kernels round
            differently with the cache's layout). What ``TranscribeOptions(deterministic=
            True)`` needs.
        n_gpu_layers: Text-model layers on the GPU (-1 all); ``None``: the plan's choice
            for a registry model, 0 for local files.
        mmproj_on_gpu: Run the audio encoder on the GPU; ``None``: the plan's choice for a
            registry model, on (where there is a GPU) for local files.
        kv_type: ``"f16"``, ``"q8_0"`` or ``"f32"`` (local files only).
        n_threads: CPU threads (``None``: one per physical core).
        cpu_kernels: ``"auto"``, ``"fast"`` or ``"portable"`` (see ``ModelOptions``).
        audio_path: ``"faithful"`` (reference-exact) or ``"mtmd"`` (llama.cpp's own).
        allow_long_context: Accept an ``n_ctx`` beyond what the model was trained for.
    """

    parallel: int = 1
    n_ctx: int | None = None
    deterministic: bool = False
    n_gpu_layers: int | None = None
    mmproj_on_gpu: bool | None = None
    kv_type: str = "f16"
    n_threads: int | None = None
    cpu_kernels: str = "auto"
    audio_path: str = "faithful"
    allow_long_context: bool = False

    @property
    def sequences(self) -> int:
        """Sequences the model is loaded with (one when deterministic)."""
        return 1 if self.deterministic else self.parallel

    @property
    def context(self) -> int:
        """The context window to load (see :func:`context_for`)."""
        return context_for(self.sequences, self.n_ctx)

    def model_options(
        self, *, n_gpu_layers: int, mmproj_on_gpu: bool, prompt_format: str = "auto"
    ) -> ModelOptions:
        """The engine's options, given where the plan (or the caller) puts the layers and
        the prompt format the registry names (``"auto"``: the file's metadata decides)."""
        from ..engine import ModelOptions

        extra = {"flash_attn": "off"} if self.deterministic else {}
        return ModelOptions(
            n_ctx=self.context,
            n_threads=self.n_threads,
            n_parallel=self.sequences,
            n_gpu_layers=n_gpu_layers,
            mmproj_on_gpu=mmproj_on_gpu,
            kv_type=self.kv_type,
            cpu_kernels=self.cpu_kernels,
            audio_path=self.audio_path,
            allow_long_context=self.allow_long_context,
            prompt_format=prompt_format,
            **extra,
        )


def load_model(
    model: str | None = None,
    *,
    quant: str | None = None,
    model_file: str | Path | None = None,
    mmproj_file: str | Path | None = None,
    parallel: int = 1,
    n_ctx: int | None = None,
    deterministic: bool = False,
    n_gpu_layers: int | None = None,
    mmproj_on_gpu: bool | None = None,
    kv_type: str = "f16",
    n_threads: int | None = None,
    cpu_kernels: str = "auto",
    audio_path: str = "faithful",
    allow_long_context: bool = False,
    vram_gb: float | None = None,
    ram_gb: float | None = None,
    force: bool = False,
    progress: ProgressCallback | None = None,
    on_resolved: Callable[[ResolvedModel], None] | None = None,
) -> AudioModel:
    """Resolve, plan, pull (once) and load a Qwen2-Audio model.

    Args:
        model: Registry name as ``"name[:QUANT]"`` (e.g. ``"qwen2-audio:Q4_K_M"``; any
            alias works); ``None`` is the registry's default model with the quant planned
            for this machine. Not with ``model_file``.
        quant: Overrides the quant in ``model`` (``None``/``"auto"``: planned).
        model_file: A text-model GGUF to load instead (with ``mmproj_file``); nothing is
            planned or downloaded then.
        mmproj_file: Its audio projector GGUF.
        parallel: Sequences decoded together (a server's requests at once, a long
            recording's segments in flight).
        n_ctx: Context window; ``None`` sizes it for ``parallel`` (:func:`context_for`).
        deterministic: One sequence and flash attention off, so that the same audio always
            gives the same tokens (see :class:`LoadSettings`).
        n_gpu_layers: Text-model layers on the GPU (-1 all); ``None``: the plan's.
        mmproj_on_gpu: Audio encoder on the GPU; ``None``: the plan's.
        kv_type: KV cache type (``"f32"`` with ``model_file`` only).
        n_threads: CPU threads (``None``: one per physical core).
        cpu_kernels: ``"auto"`` (probe once whether llama.cpp's fast kernels run on this
            CPU), ``"fast"`` or ``"portable"``.
        audio_path: ``"faithful"`` (default) or ``"mtmd"``.
        allow_long_context: Accept an ``n_ctx`` beyond the trained context.
        vram_gb: Plan for this much free GPU memory instead of what was detected.
        ram_gb: Plan for this much free RAM instead of what was detected.
        force: Accept a ``quant`` that the plan says does not fit.
        progress: Called with download progress.
        on_resolved: Called with the plan and files before the (slow) load, e.g. to say
            what was chosen; not called for ``model_file``.

    Returns:
        The loaded :class:`~qaudio_local.engine.AudioModel` (close it, or use ``with``).

    Raises:
        OptionError: Options that contradict each other.
        UnknownModelError, PlanError, OfflineModelMissingError, HubUnreachableError,
            IntegrityError, DiskFullError: Resolving, planning or downloading failed.
        ModelFileNotFoundError, ModelFileError, CpuKernelError, RuntimeBackendError:
            Loading failed.
    """
    from ..engine import AudioModel

    settings = LoadSettings(
        parallel=parallel,
        n_ctx=n_ctx,
        deterministic=deterministic,
        n_gpu_layers=n_gpu_layers,
        mmproj_on_gpu=mmproj_on_gpu,
        kv_type=kv_type,
        n_threads=n_threads,
        cpu_kernels=cpu_kernels,
        audio_path=audio_path,
        allow_long_context=allow_long_context,
    )
    check_sources(model, quant, model_file, mmproj_file, kv_type)
    if model_file is not None and mmproj_file is not None:
        options = settings.model_options(
            n_gpu_layers=n_gpu_layers or 0,
            mmproj_on_gpu=True if mmproj_on_gpu is None else mmproj_on_gpu,
        )
        return AudioModel(model_file, mmproj_file, options)
    from .resolve import resolve_model

    resolved = resolve_model(
        model,
        quant=quant,
        n_ctx=settings.context,
        kv_type=kv_type,
        vram_gb=vram_gb,
        ram_gb=ram_gb,
        force=force,
        progress=progress,
    )
    if on_resolved is not None:
        on_resolved(resolved)
    plan = resolved.plan
    options = settings.model_options(
        n_gpu_layers=plan.n_gpu_layers if n_gpu_layers is None else n_gpu_layers,
        mmproj_on_gpu=plan.mmproj_on_gpu if mmproj_on_gpu is None else mmproj_on_gpu,
        prompt_format=resolved.prompt_format,
    )
    return AudioModel(resolved.model_path, resolved.mmproj_path, options)


def check_sources(
    model: str | None,
    quant: str | None,
    model_file: str | Path | None,
    mmproj_file: str | Path | None,
    kv_type: str,
) -> None:
    """Refuse options that contradict each other, before anything slow happens.

    Raises:
        OptionError: Only one of the two files, files together with a registry name, or
            an f32 KV cache for a registry model.
    """
    if (model_file is None) != (mmproj_file is None):
        raise OptionError(
            "pass both --model-file and --mmproj-file, or neither (then the registry model "
            "is planned and pulled)",
            option="--mmproj-file" if mmproj_file is None else "--model-file",
        )
    if model_file is not None and (model or quant):
        raise OptionError(
            "--model/--quant choose from the registry; they cannot be combined with --model-file",
            option="--model",
        )
    if model_file is None and kv_type == "f32":
        raise OptionError(
            "--kv-type f32 is for exact comparisons with --model-file", option="--kv-type"
        )
