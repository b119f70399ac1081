"""A runtime over llama.cpp (libllama, libggml and libmtmd as llama-cpp-python ships them).

Audio in, streamed text out::

    with AudioModel("model.gguf", "mmproj.gguf", ModelOptions(n_parallel=4)) as model:
        gen = model.stream("What is said?", [samples])
        for chunk in gen:
            print(chunk.text, end="")
        print(gen.result.usage)

By default the audio takes the reference-exact path (:mod:`.prefill`). ``stream`` may be
called from any number of threads: up to ``n_parallel`` generations decode together in
one batch (:mod:`.batch`), and a prompt that starts like an earlier one reuses its
computed KV cells and audio encodings. ``close()`` or the ``with`` block frees
everything deterministically.
"""

from __future__ import annotations

import contextlib
import ctypes
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..config import BASE_DEFAULT_PROMPT, DEFAULT_PROMPT, DEFAULT_SYSTEM_PROMPT, SAMPLE_RATE
from ..errors import OptionError, RuntimeBackendError
from .batch.request import Request
from .batch.scheduler import Scheduler
from .bindings.backend import give_back_heap, llama_modules, log_mark, log_since, recent_errors
from .gguf import ProjectorInfo, TextModelInfo, check_pair, check_projector, check_text_model
from .options import FLASH_ATTN, KV_TYPES, ModelOptions, SamplingOptions
from .prefill import EncodingCache, FaithfulPrefill, Llama, MtmdPrefill, tokenize
from .prompt import TOKENS_MARKER, Message, render, render_base, user
from .results import Chunk, EngineStats, Generation, Result, Timings, Usage, check_audio

__all__ = [
    "AudioModel",
    "Chunk",
    "Generation",
    "ModelOptions",
    "Result",
    "SamplingOptions",
    "Timings",
    "Usage",
]


class AudioModel:
    """Qwen2-Audio loaded through llama.cpp.

    Args:
        model_path: The text-model GGUF.
        mmproj_path: The audio projector GGUF.
        options: Loading options (including which audio path to use).

    Raises:
        ModelFileNotFoundError: A file is missing.
        ModelFileError: A file is truncated, of the wrong kind, or the pair does not match.
        RuntimeBackendError: llama.cpp failed to load them.
    """

    def __init__(
        self, model_path: str | Path, mmproj_path: str | Path, options: ModelOptions | None = None
    ) -> None:
        self.options = options or ModelOptions()
        self._model: Any = None
        self._ctx: Any = None
        self._mctx: Any = None
        self._encoder: Any = None
        self._scheduler: Scheduler | None = None
        self.notices: tuple[str, ...] = ()
        self.extra_bufts = True
        self.weight_buffers: tuple[str, ...] = ()  # llama.cpp's, e.g. ("CPU_Mapped", "CPU_REPACK")
        self.model_info: TextModelInfo = check_text_model(model_path)
        self.projector_info: ProjectorInfo = check_projector(mmproj_path)
        check_pair(self.model_info, self.projector_info, self.options)  # + a cached trial load
        trained = self.model_info.n_ctx_train
        if trained and self.options.n_ctx > trained and not self.options.allow_long_context:
            raise OptionError(
                f"--n-ctx {self.options.n_ctx} is beyond the {trained} tokens "
                f"{self.model_info.path.name} was trained for, where answers get worse; use "
                f"--n-ctx {trained} or less, or pass --allow-long-context to accept that",
                option="--n-ctx",
            )
        self._llama, self._mtmd = llama_modules()
        try:
            self._load()
        except BaseException:
            self.close()
            raise

    def _load(self) -> None:
        from .cpu_probe import fast_kernel_seam, kernel_plan
        from .threads import default_threads

        llama, opts = self._llama, self.options
        threads = opts.n_threads or default_threads()
        kernels = kernel_plan(
            opts.cpu_kernels, self.model_info.quantized, self.projector_info.quantized
        )
        if opts.audio_path == "mtmd" and kernels.mtmd_fault:
            raise RuntimeBackendError(kernels.mtmd_fault)
        self.notices = kernels.notices
        self.extra_bufts = kernels.extra_bufts
        mparams = llama.llama_model_default_params()
        mparams.use_extra_bufts = kernels.extra_bufts
        if not self.model_info.mappable:  # read into buffers: llama.cpp aborts on a mapped one
            mparams.load_mode = llama.LLAMA_LOAD_MODE_NONE
        mparams.n_gpu_layers = (
            self.model_info.n_layer + 1 if opts.n_gpu_layers < 0 else opts.n_gpu_layers
        )
        fast_kernel_seam(self.model_info.quantized, kernels.extra_bufts)
        mark = log_mark()
        self._model = llama.llama_model_load_from_file(str(self.model_info.path).encode(), mparams)
        self.weight_buffers = tuple(
            m.group(1)
            for line in log_since(mark)
            if (m := re.search(r"load_tensors:\s+(\S+) model buffer size", line))
        )
        if not self._model:
            raise RuntimeBackendError(
                f"llama.cpp could not load {self.model_info.path}: "
                f"{recent_errors() or 'no details'}"
            )
        cparams = llama.llama_context_default_params()
        cparams.n_ctx = opts.n_ctx
        cparams.n_batch = cparams.n_ubatch = opts.n_batch
        cparams.n_threads = cparams.n_threads_batch = threads
        cparams.type_k = cparams.type_v = KV_TYPES[opts.kv_type]
        cparams.flash_attn_type = FLASH_ATTN[opts.resolved_flash_attn]
        cparams.n_seq_max = opts.n_parallel + opts.prefix_cache + 1
        cparams.kv_unified = True  # one pool of n_ctx cells; shared prefixes share cells
        self._ctx = llama.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            raise RuntimeBackendError(
                f"llama.cpp could not create a context of {opts.n_ctx} "
                f"tokens: {recent_errors() or 'out of memory?'}; "
                "try a smaller --n-ctx"
            )
        self._vocab = llama.llama_model_get_vocab(self._model)
        self.n_ctx = int(llama.llama_n_ctx(self._ctx))
        lm = Llama(
            lib=llama,
            ctx=self._ctx,
            vocab=self._vocab,
            n_ctx=self.n_ctx,
            n_batch=opts.n_batch,
            n_embd=self.model_info.n_embd,
            n_ctx_train=self.model_info.n_ctx_train,
        )
        cache = EncodingCache(int(opts.encoder_cache_mb * (1 << 20)))
        st = self.projector_info.path.stat()
        salt = f"{opts.audio_path}:{self.projector_info.path}:{st.st_size}:{st.st_mtime_ns}"
        if opts.audio_path == "mtmd":
            self._prefill: FaithfulPrefill | MtmdPrefill = MtmdPrefill(
                lm, self._mtmd, self._load_mtmd(threads), cache, salt
            )
        else:
            from .encoder import AudioEncoder

            self._encoder = AudioEncoder(
                self.projector_info.path,
                use_gpu=opts.mmproj_on_gpu,
                n_threads=threads,
                widen_quantized=kernels.widen_encoder,
                extra_bufts=kernels.encoder_extra_bufts,
            )
            salt += f":widen={kernels.widen_encoder}:amx={self._encoder.amx_weights}"
            self._prefill = FaithfulPrefill(lm, self._encoder, cache, salt)
        self._encodings = cache
        self._lm = lm
        self._scheduler = Scheduler(
            lm,
            n_parallel=opts.n_parallel,
            n_seq_max=int(llama.llama_n_seq_max(self._ctx)),
            piece=self._piece,
            is_eog=lambda t: bool(llama.llama_vocab_is_eog(self._vocab, t)),
        )

    def _load_mtmd(self, threads: int) -> Any:
        mtmd = self._mtmd
        mp = mtmd.mtmd_context_params_default()
        mp.use_gpu = self.options.mmproj_on_gpu
        mp.n_threads = threads
        mp.print_timings = False
        mp.warmup = False
        self._mctx = mtmd.mtmd_init_from_file(
            str(self.projector_info.path).encode(), self._model, mp
        )
        if not self._mctx:
            raise RuntimeBackendError(
                f"llama.cpp could not load the projector "
                f"{self.projector_info.path}: "
                f"{recent_errors() or 'no details'}"
            )
        if not mtmd.mtmd_support_audio(self._mctx):
            raise RuntimeBackendError(f"{self.projector_info.path} does not support audio input")
        return self._mctx

    # -- lifetime ------------------------------------------------------------------------

    def close(self) -> None:
        """Stop running generations, free the encoder, projector, context and model, and
        give their memory back to the system.

        Idempotent. Generations still running end with a :class:`RuntimeBackendError`.
        """
        if self._scheduler is not None:
            self._scheduler.close()
            self._scheduler = None
        if self._encoder is not None:
            self._encoder.close()
            self._encoder = None
        if self._mctx:
            self._mtmd.mtmd_free(self._mctx)
            self._mctx = None
        if self._ctx:
            self._llama.llama_free(self._ctx)
            self._ctx = None
        if self._model:
            self._llama.llama_model_free(self._model)
            self._model = None
            give_back_heap()  # the KV cache and weights' pages are the system's again

    def __enter__(self) -> AudioModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def _require_open(self) -> Scheduler:
        if self._scheduler is None:
            raise RuntimeBackendError("the model is closed; create a new AudioModel")
        return self._scheduler

    # -- tokens ---------------------------------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` (special tokens such as ``<|im_end|>`` are parsed)."""
        self._require_open()
        return tokenize(self._lm, text)

    def detokenize(self, tokens: Sequence[int]) -> str:
        """The text of ``tokens`` (special tokens render as nothing)."""
        return b"".join(self._piece(t) for t in tokens).decode("utf-8", errors="replace")

    def _piece(self, token: int) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = self._llama.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._llama.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        return buf.raw[: max(n, 0)]

    # -- generation -----------------------------------------------------------------------

    def _rendered(
        self,
        prompt: str | None,
        audio: Sequence[np.ndarray],
        messages: Sequence[Message] | None,
        system_prompt: str,
    ) -> tuple[str, list[np.ndarray], list[tuple[int, ...]]]:
        self._require_open()
        if messages is None:
            default = BASE_DEFAULT_PROMPT if self.prompt_format == "base" else DEFAULT_PROMPT
            text = default if prompt is None and audio else (prompt or "")
            parts: list[str | np.ndarray] = list(audio)
            if text:
                parts.append(text)
            messages = [user(*parts)]
        if self.prompt_format == "base":
            rendered = render_base(messages, self._prefill.marker)
        else:
            rendered = render(messages, self._prefill.marker, system_prompt)
        audios = [check_audio(a, i + 1) for i, a in enumerate(rendered.audios)]
        text, runs = rendered.text, [r.ids for r in rendered.token_runs]
        if isinstance(self._prefill, MtmdPrefill) and runs:  # libmtmd tokenizes text only
            for run in rendered.token_runs:
                text = text.replace(TOKENS_MARKER, run.text or self.detokenize(run.ids), 1)
            runs = []
        return text, audios, runs

    def prompt_tokens(
        self,
        prompt: str | None = None,
        audio: Sequence[np.ndarray] = (),
        *,
        messages: Sequence[Message] | None = None,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
    ) -> int:
        """How many context positions the prompt takes (text and audio), without encoding."""
        from ..audio.windows import audio_token_count

        text, audios, runs = self._rendered(prompt, audio, messages, system_prompt)
        if isinstance(self._prefill, MtmdPrefill):  # 750 per started 30 s window
            audio_n = sum(750 * (a.size // 480_000 + 1) for a in audios)
        else:
            audio_n = sum(audio_token_count(a.size) for a in audios)
        pieces = text.split(TOKENS_MARKER)
        n_text = sum(len(self.tokenize(p)) for p in pieces) - len(audios)
        return n_text + sum(len(r) for r in runs) + audio_n

    def stream(
        self,
        prompt: str | None = None,
        audio: Sequence[np.ndarray] = (),
        *,
        messages: Sequence[Message] | None = None,
        sampling: SamplingOptions | None = None,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        keep_cache: bool = True,
        cold: bool = False,
    ) -> Generation:
        """Start a generation and stream its tokens (safe to call from many threads).

        Either ``prompt``/``audio`` (one user turn: each audio, then the prompt) or
        ``messages`` (a whole conversation) is given. ``prompt=None`` with audio uses
        the default question; ``prompt=""`` makes a voice-chat turn of audio only.
        The work starts when the first chunk is asked for; leaving the loop early or
        ``Generation.cancel()`` stops it within one step. ``keep_cache=False`` frees the
        sequence's cells when it ends, and keeps no encoding of its audio, instead of
        keeping them for a later prompt (for one-off prompts such as long-form segments,
        so that they do not push out others). ``cold=True`` starts it from an empty cache
        once no other sequence runs (cached prefixes are dropped first): on a model of one
        sequence with flash attention off, its tokens are then exactly those of the first
        request of a freshly loaded model, whatever ran before or waits behind it.

        Raises:
            ContextOverflowError: The prompt does not fit the context (on first iteration).
            InvalidAudioError: An audio array is empty, not 1-D float, or not finite.
            RuntimeBackendError: llama.cpp failed, or the model was closed.
        """
        text, audios, runs = self._rendered(prompt, audio, messages, system_prompt)
        run = _Run(
            self, text, audios, runs, sampling or SamplingOptions(), keep=keep_cache, cold=cold
        )
        return Generation(run, cancel=run.cancel, start=run.start)

    def generate(
        self, prompt: str | None = None, audio: Sequence[np.ndarray] = (), **kwargs: Any
    ) -> Result:
        """Like :meth:`stream`, but wait for and return the whole result."""
        return self.stream(prompt, audio, **kwargs).wait()

    def prompt_logits(
        self,
        prompt: str | None = None,
        audio: Sequence[np.ndarray] = (),
        *,
        messages: Sequence[Message] | None = None,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
    ) -> np.ndarray:
        """The next-token logits after the prompt (float32, one per vocabulary entry).

        Takes the same prompt arguments as :meth:`stream`; used to compare against the
        reference implementation.
        """
        text, audios, runs = self._rendered(prompt, audio, messages, system_prompt)
        run = _Run(self, text, audios, runs, SamplingOptions(max_tokens=1), logits_only=True)
        for _ in run:
            pass
        assert run.req is not None and run.req.logits is not None
        return run.req.logits

    @property
    def prompt_format(self) -> str:
        """``"chat"`` (the Instruct model's template) or ``"base"`` (audio, then a task
        prompt): ``ModelOptions.prompt_format``, or what the text GGUF says."""
        chosen = self.options.prompt_format
        return self.model_info.prompt_format if chosen == "auto" else chosen

    @property
    def stats(self) -> EngineStats:
        """Counts of what was fed to llama.cpp and encoded so far (for tests and /stats)."""
        return self._require_open().stats()

    @property
    def encoder_calls(self) -> int:
        """Audio encoder runs so far (windows on the faithful path, chunks on mtmd)."""
        return int(self._prefill.encoder_calls)

    def clear_cache(self) -> None:
        """Forget cached prefixes and audio encodings (the next request starts cold)."""
        sched = self._require_open()
        sched.drop_cached()
        self._encodings.clear()


class _Run:
    """One request's life on the consumer's side: build the prompt, submit, read chunks."""

    def __init__(
        self,
        model: AudioModel,
        text: str,
        audios: list[np.ndarray],
        runs: list[tuple[int, ...]],
        sampling: SamplingOptions,
        logits_only: bool = False,
        keep: bool = True,
        cold: bool = False,
    ) -> None:
        self.model, self.text, self.audios, self.runs = model, text, audios, runs
        self.keep, self.cold = keep, cold
        self.sampling, self.logits_only = sampling, logits_only
        self.req: Request | None = None
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        sched = self.model._scheduler
        if self.req is not None and sched is not None and not self.req.done:
            sched.cancel(self.req)

    def start(self) -> None:
        """Build the prompt (encoding the audio, in this thread) and queue the request."""
        if self.req is not None:
            return
        sched = self.model._require_open()
        prefill = self.model._prefill  # encodes here, in the caller's thread
        prompt = prefill.build(self.text, self.audios, self.runs, store=self.keep)
        seconds = round(sum(a.size for a in self.audios) / SAMPLE_RATE, 3)
        self.req = Request(
            prompt,
            self.sampling,
            audio_seconds=seconds,
            logits_only=self.logits_only,
            keep=self.keep,
            cold=self.cold,
        )
        if not self.cancelled:
            sched.submit(self.req)

    def __iter__(self) -> Iterator[Chunk | Result]:
        self.start()
        req, sched = self.req, self.model._scheduler
        assert req is not None
        if self.cancelled:
            return
        try:
            while True:
                item = req.out.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, Result):
                    return
        finally:
            if not req.done and sched is not None:
                sched.cancel(req)
