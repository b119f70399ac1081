"""A thin runtime over llama.cpp (libllama + libmtmd, as llama-cpp-python ships them).

Audio in, streamed text out::

    with AudioModel("model.gguf", "mmproj.gguf") as model:
        for chunk in (gen := model.stream(prompt="What is said?", audio=[samples])):
            print(chunk.text, end="")
        print(gen.result.usage)

One generation runs at a time per model; resources are freed by ``close()`` or the
``with`` block, deterministically.
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .backend import llama_modules, recent_errors
from .config import DEFAULT_PROMPT, DEFAULT_SYSTEM_PROMPT, N_FFT, SAMPLE_RATE
from .errors import ContextOverflowError, InvalidAudioError, RuntimeBackendError
from .gguf_check import ProjectorInfo, TextModelInfo, check_pair, check_projector, check_text_model
from .prompt import Message, render, user

CHUNK_TYPE_TEXT = 0  # mtmd_input_chunk_type
CHUNK_TYPE_AUDIO = 2
# libmtmd aborts the process on a 1-sample buffer and zero-pads anything shorter than
# n_fft/2 + 1 samples itself; padding here to that length changes nothing else.
MIN_MTMD_SAMPLES = N_FFT // 2 + 1


@dataclass(frozen=True)
class ModelOptions:
    """How the model is loaded.

    Attributes:
        n_gpu_layers: Text-model layers offloaded to the GPU; 0 = CPU only (default),
            -1 = all of them.
        n_ctx: Context window in tokens (default 4096; 30 s of audio takes 750).
        n_threads: CPU threads (default: all cores).
        n_batch: Prompt tokens per llama_decode call (default 512).
        mmproj_on_gpu: Run the audio encoder on the GPU when one is available (default True).
    """

    n_gpu_layers: int = 0
    n_ctx: int = 4096
    n_threads: int | None = None
    n_batch: int = 512
    mmproj_on_gpu: bool = True


@dataclass(frozen=True)
class SamplingOptions:
    """How tokens are chosen.

    Attributes:
        temperature: 0 (default) is greedy decoding, which is deterministic.
        top_p: Nucleus sampling mass (default 1.0 = off).
        top_k: Keep the k most likely tokens (default 0 = off).
        repetition_penalty: >1 discourages repeats (default 1.0 = off).
        seed: Random seed for sampling (default 0).
        max_tokens: Most tokens to generate (default 256).
        stop_at_end_of_turn: Stop at ``<|im_end|>`` and other end tokens (default True).
    """

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int = 0
    max_tokens: int = 256
    stop_at_end_of_turn: bool = True

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.top_k < 0:
            raise ValueError("top_k must be >= 0")
        if self.repetition_penalty <= 0:
            raise ValueError("repetition_penalty must be > 0")
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")


@dataclass(frozen=True)
class Chunk:
    """One generated token.

    Attributes:
        text: The text it adds (may be empty while a UTF-8 character is incomplete).
        token: The token id.
    """

    text: str
    token: int


@dataclass(frozen=True)
class Usage:
    """Token and audio accounting of one generation."""

    audio_seconds: float
    audio_tokens: int
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Timings:
    """Where the time went, in milliseconds (decode rate in tokens per second)."""

    encode_ms: float
    prefill_ms: float
    decode_ms: float
    decode_tokens_per_s: float


@dataclass(frozen=True)
class Result:
    """A finished generation.

    Attributes:
        text: The whole answer.
        finish_reason: ``"stop"`` (end of turn) or ``"length"`` (max_tokens or context full).
        tokens: The generated token ids.
    """

    text: str
    finish_reason: str
    usage: Usage
    timings: Timings
    tokens: tuple[int, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with ``text``, ``finish_reason``, ``usage`` and ``timings``."""
        return {
            "text": self.text,
            "finish_reason": self.finish_reason,
            "usage": self.usage.__dict__.copy(),
            "timings": {k: round(v, 3) for k, v in self.timings.__dict__.items()},
        }


class Generation:
    """An iterator of :class:`Chunk`; ``result`` is set once it is exhausted."""

    def __init__(self, chunks: Iterator[Chunk | Result]) -> None:
        self._chunks = chunks
        self.result: Result | None = None

    def __iter__(self) -> Iterator[Chunk]:
        for item in self._chunks:
            if isinstance(item, Result):
                self.result = item
            else:
                yield item

    def wait(self) -> Result:
        """Consume the rest of the stream and return the result."""
        for _ in self:
            pass
        assert self.result is not None
        return self.result


def _check_audio(audio: np.ndarray, index: int) -> np.ndarray:
    arr = np.asarray(audio)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.floating):
        raise InvalidAudioError(
            f"audio {index} must be a 1-D float array of 16 kHz samples "
            f"(got shape {arr.shape}, dtype {arr.dtype}); use "
            "qaudio_local.load_audio()",
            source="<array>",
        )
    if arr.size == 0:
        raise InvalidAudioError(f"audio {index} is empty", source="<array>")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise InvalidAudioError(f"audio {index} contains NaN or infinite samples", source="<array>")
    return arr


class AudioModel:
    """Qwen2-Audio loaded through llama.cpp.

    Args:
        model_path: The text-model GGUF.
        mmproj_path: The audio projector GGUF.
        options: Loading options.

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
        self._lock = threading.Lock()
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
        llama, mtmd, opts = self._llama, self._mtmd, self.options
        threads = opts.n_threads or os.cpu_count() or 1
        mparams = llama.llama_model_default_params()
        mparams.n_gpu_layers = (
            self.model_info.n_layer + 1 if opts.n_gpu_layers < 0 else opts.n_gpu_layers
        )
        self._model = llama.llama_model_load_from_file(str(self.model_info.path).encode(), mparams)
        if not self._model:
            raise RuntimeBackendError(
                f"llama.cpp could not load {self.model_info.path}: "
                f"{recent_errors() or 'no details'}"
            )
        cparams = llama.llama_context_default_params()
        cparams.n_ctx = opts.n_ctx
        cparams.n_batch = opts.n_batch
        cparams.n_ubatch = opts.n_batch
        cparams.n_threads = threads
        cparams.n_threads_batch = threads
        self._ctx = llama.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            raise RuntimeBackendError(
                f"llama.cpp could not create a context of {opts.n_ctx} "
                f"tokens: {recent_errors() or 'out of memory?'}; "
                "try a smaller --n-ctx"
            )
        mp = mtmd.mtmd_context_params_default()
        mp.use_gpu = opts.mmproj_on_gpu
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
        self._vocab = llama.llama_model_get_vocab(self._model)
        self.marker = mtmd.mtmd_default_marker().decode()
        self.n_ctx = int(llama.llama_n_ctx(self._ctx))

    # -- lifetime ------------------------------------------------------------------------

    def close(self) -> None:
        """Free the projector, context and model (idempotent)."""
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

    # -- tokens ---------------------------------------------------------------------------

    def tokenize(self, text: str, *, special: bool = True) -> list[int]:
        """Token ids of ``text`` (special tokens such as ``<|im_end|>`` parsed when ``special``)."""
        if self._ctx is None:
            raise RuntimeBackendError("the model is closed; create a new AudioModel")
        raw = text.encode("utf-8")
        n_max = len(raw) + 8
        buf = (self._llama.llama_token * n_max)()
        n = self._llama.llama_tokenize(self._vocab, raw, len(raw), buf, n_max, False, special)
        if n < 0:  # pragma: no cover - n_max always suffices for byte-level BPE
            raise RuntimeBackendError(f"tokenization needs {-n} tokens")
        return list(buf[:n])

    def detokenize(self, tokens: Sequence[int]) -> str:
        """The text of ``tokens`` (special tokens render as nothing)."""
        return b"".join(self._piece(t) for t in tokens).decode("utf-8", errors="replace")

    # -- generation -----------------------------------------------------------------------

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
            ContextOverflowError: The prompt does not fit the context.
            InvalidAudioError: An audio array is empty, not 1-D float, or not finite.
            RuntimeBackendError: llama.cpp failed.
        """
        if self._ctx is None:
            raise RuntimeBackendError("the model is closed; create a new AudioModel")
        rendered = render(self._messages(prompt, audio, messages), self.marker, system_prompt)
        audios = [_check_audio(a, i + 1) for i, a in enumerate(rendered.audios)]
        return Generation(self._run(rendered.text, audios, sampling or SamplingOptions()))

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

        Takes the same prompt arguments as :meth:`stream`; used to compare against a
        reference implementation.
        """
        if self._ctx is None:
            raise RuntimeBackendError("the model is closed; create a new AudioModel")
        rendered = render(self._messages(prompt, audio, messages), self.marker, system_prompt)
        audios = [_check_audio(a, i + 1) for i, a in enumerate(rendered.audios)]
        with self._lock:
            chunks = self._tokenize(rendered.text, audios)
            try:
                n_prompt = int(self._mtmd.mtmd_helper_get_n_tokens(chunks))
                if n_prompt + 1 > self.n_ctx:
                    raise ContextOverflowError(n_prompt, self.n_ctx)
                self._prefill(chunks)
            finally:
                self._mtmd.mtmd_input_chunks_free(chunks)
            n_vocab = int(self._llama.llama_vocab_n_tokens(self._vocab))
            ptr = self._llama.llama_get_logits_ith(self._ctx, -1)
            return np.ctypeslib.as_array(ptr, shape=(n_vocab,)).copy()

    @staticmethod
    def _messages(
        prompt: str | None, audio: Sequence[np.ndarray], messages: Sequence[Message] | None
    ) -> Sequence[Message]:
        if messages is not None:
            return messages
        text = DEFAULT_PROMPT if prompt is None and audio else (prompt or "")
        parts: list[str | np.ndarray] = list(audio)
        if text:
            parts.append(text)
        return [user(*parts)]

    def _tokenize(self, text: str, audios: list[np.ndarray]) -> Any:
        mtmd = self._mtmd
        bitmaps = []
        for clip in audios:
            arr = clip
            if arr.size < MIN_MTMD_SAMPLES:
                arr = np.zeros(MIN_MTMD_SAMPLES, np.float32)
                arr[: clip.size] = clip
            bmp = mtmd.mtmd_bitmap_init_from_audio(
                arr.size, arr.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            )
            if not bmp:
                raise RuntimeBackendError("llama.cpp could not take an audio buffer")
            bitmaps.append(bmp)
        chunks = mtmd.mtmd_input_chunks_init()
        try:
            raw = text.encode("utf-8")
            inp = mtmd.mtmd_input_text(raw, len(raw), False, True)
            arr_t = (mtmd.mtmd_bitmap_p_ctypes * max(1, len(bitmaps)))(*bitmaps)
            rc = mtmd.mtmd_tokenize(self._mctx, chunks, ctypes.byref(inp), arr_t, len(bitmaps))
        finally:
            for bmp in bitmaps:
                mtmd.mtmd_bitmap_free(bmp)
        if rc != 0:
            mtmd.mtmd_input_chunks_free(chunks)
            raise RuntimeBackendError(
                f"llama.cpp could not tokenize the prompt (code {rc}): "
                f"{recent_errors() or 'no details'}"
            )
        return chunks

    def _prefill(self, chunks: Any) -> tuple[int, int, float, float]:
        """Evaluate the prompt; return (n_past, audio tokens, encode ms, prefill ms)."""
        llama, mtmd = self._llama, self._mtmd
        llama.llama_memory_clear(llama.llama_get_memory(self._ctx), True)
        n_past, audio_tokens, enc_s, pre_s = 0, 0, 0.0, 0.0
        n_chunks = mtmd.mtmd_input_chunks_size(chunks)
        new_past = llama.llama_pos(0)
        for i in range(n_chunks):
            chunk = mtmd.mtmd_input_chunks_get(chunks, i)
            kind = mtmd.mtmd_input_chunk_get_type(chunk)
            if kind == CHUNK_TYPE_AUDIO:
                audio_tokens += mtmd.mtmd_input_chunk_get_n_tokens(chunk)
                t0 = time.perf_counter()
                rc = mtmd.mtmd_encode_chunk(self._mctx, chunk)
                enc_s += time.perf_counter() - t0
                if rc != 0:
                    raise RuntimeBackendError(
                        f"audio encoding failed (code {rc}): {recent_errors() or 'no details'}"
                    )
                embd = mtmd.mtmd_get_output_embd(self._mctx)
                t0 = time.perf_counter()
                rc = mtmd.mtmd_helper_decode_image_chunk(
                    self._mctx,
                    self._ctx,
                    chunk,
                    embd,
                    n_past,
                    0,
                    self.options.n_batch,
                    ctypes.byref(new_past),
                    mtmd.mtmd_helper_post_decode_callback(),
                    None,
                )
                pre_s += time.perf_counter() - t0
            else:
                t0 = time.perf_counter()
                rc = mtmd.mtmd_helper_eval_chunk_single(
                    self._mctx,
                    self._ctx,
                    chunk,
                    n_past,
                    0,
                    self.options.n_batch,
                    i == n_chunks - 1,
                    ctypes.byref(new_past),
                )
                pre_s += time.perf_counter() - t0
            if rc != 0:
                raise RuntimeBackendError(
                    f"llama.cpp failed to evaluate the prompt (code {rc}):"
                    f" {recent_errors() or 'no details'}"
                )
            n_past = int(new_past.value)
        return n_past, audio_tokens, enc_s * 1e3, pre_s * 1e3

    def _sampler(self, s: SamplingOptions) -> Any:
        llama = self._llama
        chain = llama.llama_sampler_chain_init(llama.llama_sampler_chain_default_params())
        if s.repetition_penalty != 1.0:
            llama.llama_sampler_chain_add(
                chain,
                llama.llama_sampler_init_penalties(
                    llama.llama_vocab_n_tokens(self._vocab), 64, s.repetition_penalty, 0.0, 0.0
                ),
            )
        if s.temperature <= 0:
            llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_greedy())
            return chain
        if s.top_k > 0:
            llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_top_k(s.top_k))
        if s.top_p < 1.0:
            llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_top_p(s.top_p, 1))
        llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_temp(s.temperature))
        llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_dist(s.seed & 0xFFFFFFFF))
        return chain

    def _piece(self, token: int) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = self._llama.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._llama.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        return buf.raw[: max(n, 0)]

    def _run(
        self, text: str, audios: list[np.ndarray], s: SamplingOptions
    ) -> Iterator[Chunk | Result]:
        with self._lock:
            llama, mtmd = self._llama, self._mtmd
            chunks = self._tokenize(text, audios)
            try:
                n_prompt = int(mtmd.mtmd_helper_get_n_tokens(chunks))
                if n_prompt + 1 > self.n_ctx:
                    raise ContextOverflowError(n_prompt, self.n_ctx)
                n_past, audio_tokens, enc_ms, pre_ms = self._prefill(chunks)
            finally:
                mtmd.mtmd_input_chunks_free(chunks)
            sampler = self._sampler(s)
            batch = llama.llama_batch_init(1, 0, 1)
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            tokens: list[int] = []
            pieces: list[str] = []
            finish = "length"
            t_start = time.perf_counter()
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
                    batch.token[0] = tok
                    batch.pos[0] = n_past
                    batch.n_seq_id[0] = 1
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
            dec_s = time.perf_counter() - t_start
            audio_s = sum(a.size for a in audios) / SAMPLE_RATE
            yield Result(
                text="".join(pieces),
                finish_reason=finish,
                usage=Usage(
                    audio_seconds=round(audio_s, 3),
                    audio_tokens=audio_tokens,
                    prompt_tokens=n_prompt,
                    completion_tokens=len(tokens),
                ),
                timings=Timings(
                    encode_ms=enc_ms,
                    prefill_ms=pre_ms,
                    decode_ms=dec_s * 1e3,
                    decode_tokens_per_s=len(tokens) / dec_s if dec_s > 0 else 0.0,
                ),
                tokens=tuple(tokens),
            )
