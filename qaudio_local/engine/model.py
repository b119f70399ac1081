"""A thin runtime over llama.cpp (libllama, libggml and libmtmd as llama-cpp-python ships them).

Audio in, streamed text out::

    with AudioModel("model.gguf", "mmproj.gguf") as model:
        gen = model.stream("What is said?", [samples])
        for chunk in gen:
            print(chunk.text, end="")
        print(gen.result.usage)

By default the audio takes the reference-exact path (:mod:`.prefill`); one
generation runs at a time per model; ``close()`` or the ``with`` block frees
everything deterministically.
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import os
import re
import threading
import time
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..config import DEFAULT_PROMPT, DEFAULT_SYSTEM_PROMPT, SAMPLE_RATE
from ..errors import RuntimeBackendError
from .backend import llama_modules, log_mark, log_since, recent_errors
from .gguf_check import ProjectorInfo, TextModelInfo, check_pair, check_projector, check_text_model
from .prefill import FaithfulPrefill, Llama, MtmdPrefill, PrefillStats, tokenize
from .prompt import Message, render, user
from .results import (
    FLASH_ATTN,
    KV_TYPES,
    Chunk,
    Generation,
    ModelOptions,
    Result,
    SamplingOptions,
    Timings,
    Usage,
    check_audio,
)

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
        self._lock = threading.Lock()
        self.notices: tuple[str, ...] = ()
        self.extra_bufts = True
        self.weight_buffers: tuple[str, ...] = ()  # llama.cpp's, e.g. ("CPU_Mapped", "CPU_REPACK")
        self.model_info: TextModelInfo = check_text_model(model_path)
        self.projector_info: ProjectorInfo = check_projector(mmproj_path)
        check_pair(self.model_info, self.projector_info)
        self._llama, self._mtmd = llama_modules()
        try:
            self._load()
        except BaseException:
            self.close()
            raise

    def _load(self) -> None:
        from .cpu_probe import kernel_plan

        llama, opts = self._llama, self.options
        threads = opts.n_threads or os.cpu_count() or 1
        kernels = kernel_plan(
            opts.cpu_kernels, self.model_info.quantized, self.projector_info.quantized
        )
        if opts.audio_path == "mtmd" and kernels.mtmd_fault:
            raise RuntimeBackendError(kernels.mtmd_fault)
        self.notices = kernels.notices
        self.extra_bufts = kernels.extra_bufts
        mparams = llama.llama_model_default_params()
        mparams.use_extra_bufts = kernels.extra_bufts
        mparams.n_gpu_layers = (
            self.model_info.n_layer + 1 if opts.n_gpu_layers < 0 else opts.n_gpu_layers
        )
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
        if opts.audio_path == "mtmd":
            self._prefill: FaithfulPrefill | MtmdPrefill = MtmdPrefill(
                lm, self._mtmd, self._load_mtmd(threads)
            )
        else:
            from .encoder import AudioEncoder

            self._encoder = AudioEncoder(
                self.projector_info.path,
                use_gpu=opts.mmproj_on_gpu,
                n_threads=threads,
                widen_quantized=kernels.widen_encoder,
            )
            self._prefill = FaithfulPrefill(lm, self._encoder)
        self._lm = lm

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
        """Free the encoder, projector, context and model (idempotent)."""
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

    def __enter__(self) -> AudioModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def _require_open(self) -> None:
        if self._ctx is None:
            raise RuntimeBackendError("the model is closed; create a new AudioModel")

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
    ) -> tuple[str, list[np.ndarray]]:
        self._require_open()
        if messages is None:
            text = DEFAULT_PROMPT if prompt is None and audio else (prompt or "")
            parts: list[str | np.ndarray] = list(audio)
            if text:
                parts.append(text)
            messages = [user(*parts)]
        rendered = render(messages, self._prefill.marker, system_prompt)
        return rendered.text, [check_audio(a, i + 1) for i, a in enumerate(rendered.audios)]

    def stream(
        self,
        prompt: str | None = None,
        audio: Sequence[np.ndarray] = (),
        *,
        messages: Sequence[Message] | None = None,
        sampling: SamplingOptions | None = None,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
    ) -> Generation:
        """Start a generation and stream its tokens.

        Either ``prompt``/``audio`` (one user turn: each audio, then the prompt) or
        ``messages`` (a whole conversation) is given. ``prompt=None`` with audio uses
        the default question; ``prompt=""`` makes a voice-chat turn of audio only.

        Raises:
            ContextOverflowError: The prompt does not fit the context (on first iteration).
            InvalidAudioError: An audio array is empty, not 1-D float, or not finite.
            RuntimeBackendError: llama.cpp failed.
        """
        text, audios = self._rendered(prompt, audio, messages, system_prompt)
        return Generation(self._run(text, audios, sampling or SamplingOptions()))

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
        text, audios = self._rendered(prompt, audio, messages, system_prompt)
        with self._lock:
            self._prefill.run(text, audios)
            n_vocab = int(self._llama.llama_vocab_n_tokens(self._vocab))
            ptr = self._llama.llama_get_logits_ith(self._ctx, -1)
            return np.ctypeslib.as_array(ptr, shape=(n_vocab,)).copy()

    def _sampler(self, s: SamplingOptions) -> Any:
        llama = self._llama
        chain = llama.llama_sampler_chain_init(llama.llama_sampler_chain_default_params())
        add = llama.llama_sampler_chain_add
        if s.repetition_penalty != 1.0:
            add(
                chain,
                llama.llama_sampler_init_penalties(
                    llama.llama_vocab_n_tokens(self._vocab), 64, s.repetition_penalty, 0.0, 0.0
                ),
            )
        if s.temperature <= 0:
            add(chain, llama.llama_sampler_init_greedy())
            return chain
        if s.top_k > 0:
            add(chain, llama.llama_sampler_init_top_k(s.top_k))
        if s.top_p < 1.0:
            add(chain, llama.llama_sampler_init_top_p(s.top_p, 1))
        add(chain, llama.llama_sampler_init_temp(s.temperature))
        add(chain, llama.llama_sampler_init_dist(s.seed & 0xFFFFFFFF))
        return chain

    def _run(
        self, text: str, audios: list[np.ndarray], s: SamplingOptions
    ) -> Iterator[Chunk | Result]:
        with self._lock:
            stats = self._prefill.run(text, audios)
            tokens: list[int] = []
            pieces: list[str] = []
            t_start = time.perf_counter()
            finish = yield from self._decode_loop(stats.n_past, s, tokens, pieces)
            dec_s = time.perf_counter() - t_start
        yield self._result(stats, audios, tokens, pieces, finish, dec_s)

    def _decode_loop(
        self, n_past: int, s: SamplingOptions, tokens: list[int], pieces: list[str]
    ) -> Generator[Chunk, None, str]:
        llama = self._llama
        sampler = self._sampler(s)
        batch = llama.llama_batch_init(1, 0, 1)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        finish = "length"
        try:
            while len(tokens) < s.max_tokens:
                tok = int(llama.llama_sampler_sample(sampler, self._ctx, -1))
                if s.stop_at_end_of_turn and llama.llama_vocab_is_eog(self._vocab, tok):
                    finish = "stop"
                    break
                tokens.append(tok)
                piece = decoder.decode(self._piece(tok))
                pieces.append(piece)
                yield Chunk(text=piece, token=tok)
                if n_past + 1 >= self.n_ctx or len(tokens) >= s.max_tokens:
                    break
                batch.n_tokens = 1
                batch.token[0], batch.pos[0], batch.n_seq_id[0] = tok, n_past, 1
                batch.seq_id[0][0] = 0
                batch.logits[0] = True
                if llama.llama_decode(self._ctx, batch) != 0:
                    raise RuntimeBackendError(
                        f"llama.cpp failed to decode: {recent_errors() or 'no details'}"
                    )
                n_past += 1
        finally:
            llama.llama_batch_free(batch)
            llama.llama_sampler_free(sampler)
        tail = decoder.decode(b"", final=True)
        if tail:
            pieces.append(tail)
            yield Chunk(text=tail, token=-1)
        return finish

    @staticmethod
    def _result(
        stats: PrefillStats,
        audios: list[np.ndarray],
        tokens: list[int],
        pieces: list[str],
        finish: str,
        dec_s: float,
    ) -> Result:
        return Result(
            text="".join(pieces),
            finish_reason=finish,
            usage=Usage(
                audio_seconds=round(sum(a.size for a in audios) / SAMPLE_RATE, 3),
                audio_tokens=stats.audio_tokens,
                prompt_tokens=stats.n_prompt,
                completion_tokens=len(tokens),
            ),
            timings=Timings(
                encode_ms=stats.encode_ms,
                prefill_ms=stats.prefill_ms,
                decode_ms=dec_s * 1e3,
                decode_tokens_per_s=len(tokens) / dec_s if dec_s > 0 else 0.0,
            ),
            tokens=tuple(tokens),
        )
