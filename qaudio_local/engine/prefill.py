"""Putting the prompt (text + audio) into the text model's context: two ways.

``FaithfulPrefill`` (the default) does what the reference Qwen2-Audio does: the
project's own log-mel per <= 30 s window, the masked-equivalent encoder (see
:mod:`.encoder`), and only the valid audio tokens (25 per second) spliced into the
token sequence in place of ``<|AUDIO|>``, fed to libllama as an embedding batch.

``MtmdPrefill`` uses llama.cpp's libmtmd, which pads every clip to 30 s windows
(750 tokens each); kept selectable so the two can be compared.
"""

from __future__ import annotations

import ctypes
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import N_FFT
from ..errors import ContextOverflowError, RuntimeBackendError
from .backend import recent_errors

AUDIO_PLACEHOLDER = "<|audio_bos|><|AUDIO|><|audio_eos|>"
CHUNK_TYPE_AUDIO = 2  # mtmd_input_chunk_type
# libmtmd aborts the process on a 1-sample buffer and zero-pads anything shorter than
# n_fft/2 + 1 samples itself; padding here to that length changes nothing else.
MIN_MTMD_SAMPLES = N_FFT // 2 + 1  # 201


@dataclass(frozen=True)
class PrefillStats:
    """What a prefill did: context position reached, audio tokens, and its timings."""

    n_past: int
    n_prompt: int
    audio_tokens: int
    encode_ms: float
    prefill_ms: float


@dataclass(frozen=True)
class Llama:
    """The libllama handles a prefill needs."""

    lib: Any
    ctx: Any
    vocab: Any
    n_ctx: int
    n_batch: int
    n_embd: int
    n_ctx_train: int = 0


def _fail(what: str, rc: int) -> RuntimeBackendError:
    return RuntimeBackendError(f"{what} (code {rc}): {recent_errors() or 'no details'}")


def tokenize(lm: Llama, text: str) -> list[int]:
    """Token ids of ``text`` with special tokens parsed."""
    raw = text.encode("utf-8")
    n_max = len(raw) + 8
    buf = (lm.lib.llama_token * n_max)()
    n = lm.lib.llama_tokenize(lm.vocab, raw, len(raw), buf, n_max, False, True)
    if n < 0:  # pragma: no cover - byte-level BPE never yields more tokens than bytes
        raise RuntimeBackendError(f"tokenization needs {-n} tokens")
    return list(buf[:n])


class _Batch:
    """A reusable llama_batch for tokens or embeddings."""

    def __init__(self, lm: Llama, embd: bool) -> None:
        self.lm = lm
        self.size = lm.n_batch
        self.embd = embd
        self.batch = lm.lib.llama_batch_init(self.size, lm.n_embd if embd else 0, 1)

    def free(self) -> None:
        self.lm.lib.llama_batch_free(self.batch)

    def decode(self, items: np.ndarray | list[int], pos: int, logits_last: bool) -> int:
        """Decode tokens (list) or embeddings (rows) from ``pos``; return the next position."""
        n = len(items)
        for start in range(0, n, self.size):
            part = items[start : start + self.size]
            b = self.batch
            b.n_tokens = len(part)
            if self.embd:
                rows = np.ascontiguousarray(part, dtype=np.float32)
                ctypes.memmove(b.embd, rows.ctypes.data, rows.nbytes)
            for i in range(len(part)):
                if not self.embd:
                    b.token[i] = int(part[i])
                b.pos[i] = pos + start + i
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = 0
                b.logits[i] = logits_last and start + i == n - 1
            rc = self.lm.lib.llama_decode(self.lm.ctx, b)
            if rc != 0:
                raise _fail("llama.cpp failed to evaluate the prompt", rc)
        return pos + n


class FaithfulPrefill:
    """Reference-exact audio: own features and encoder, valid tokens only."""

    def __init__(self, lm: Llama, encoder: Any) -> None:
        self.lm, self.encoder = lm, encoder
        self.marker = AUDIO_PLACEHOLDER
        self.audio_id = tokenize(lm, "<|AUDIO|>")[0]

    def run(self, text: str, audios: list[np.ndarray]) -> PrefillStats:
        from ..audio.features import log_mel
        from ..audio.windows import audio_token_count, split_windows

        ids = tokenize(self.lm, text)
        if ids.count(self.audio_id) != len(audios):
            raise ValueError("the prompt text may not contain the <|AUDIO|> token")
        counts = [audio_token_count(a.size) for a in audios]  # known before any feature
        n_prompt = len(ids) - len(audios) + sum(counts)
        if n_prompt + 1 > self.lm.n_ctx:
            raise ContextOverflowError(n_prompt, self.lm.n_ctx, self.lm.n_ctx_train)
        windows = [[log_mel(w) for w in split_windows(a)] for a in audios]
        t0 = time.perf_counter()
        embeds = [self._encode(ws) for ws in windows]
        enc_ms = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        pos = self._decode(ids, embeds)
        return PrefillStats(
            n_past=pos,
            n_prompt=n_prompt,
            audio_tokens=sum(counts),
            encode_ms=enc_ms,
            prefill_ms=(time.perf_counter() - t0) * 1e3,
        )

    def _encode(self, feats: list[Any]) -> np.ndarray:
        parts = [self.encoder.encode(f.mel, f.n_valid_frames) for f in feats]
        parts = [p for p in parts if len(p)]
        return np.concatenate(parts) if parts else np.zeros((0, self.lm.n_embd), np.float32)

    def _decode(self, ids: list[int], embeds: list[np.ndarray]) -> int:
        lm = self.lm
        lm.lib.llama_memory_clear(lm.lib.llama_get_memory(lm.ctx), True)
        tokens, emb = _Batch(lm, embd=False), _Batch(lm, embd=True)
        try:
            pos, start, k = 0, 0, 0
            for i, tok in enumerate(ids):
                if tok != self.audio_id:
                    continue
                pos = tokens.decode(ids[start:i], pos, False)
                if len(embeds[k]):
                    pos = emb.decode(embeds[k], pos, False)
                start, k = i + 1, k + 1
            return tokens.decode(ids[start:], pos, True)
        finally:
            tokens.free()
            emb.free()


class MtmdPrefill:
    """llama.cpp's own audio path through libmtmd."""

    def __init__(self, lm: Llama, mtmd: Any, mctx: Any) -> None:
        self.lm, self.mtmd, self.mctx = lm, mtmd, mctx
        self.marker = mtmd.mtmd_default_marker().decode()

    def run(self, text: str, audios: list[np.ndarray]) -> PrefillStats:
        chunks = self._tokenize(text, audios)
        try:
            n_prompt = int(self.mtmd.mtmd_helper_get_n_tokens(chunks))
            if n_prompt + 1 > self.lm.n_ctx:
                raise ContextOverflowError(n_prompt, self.lm.n_ctx, self.lm.n_ctx_train)
            return self._eval(chunks, n_prompt)
        finally:
            self.mtmd.mtmd_input_chunks_free(chunks)

    def _tokenize(self, text: str, audios: list[np.ndarray]) -> Any:
        mtmd = self.mtmd
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
            rc = mtmd.mtmd_tokenize(self.mctx, chunks, ctypes.byref(inp), arr_t, len(bitmaps))
        finally:
            for bmp in bitmaps:
                mtmd.mtmd_bitmap_free(bmp)
        if rc != 0:
            mtmd.mtmd_input_chunks_free(chunks)
            raise _fail("llama.cpp could not tokenize the prompt", rc)
        return chunks

    def _eval(self, chunks: Any, n_prompt: int) -> PrefillStats:
        lib, mtmd, lm = self.lm.lib, self.mtmd, self.lm
        lib.llama_memory_clear(lib.llama_get_memory(lm.ctx), True)
        n_past, audio_tokens, enc_s, pre_s = 0, 0, 0.0, 0.0
        n_chunks = mtmd.mtmd_input_chunks_size(chunks)
        new_past = lib.llama_pos(0)
        for i in range(n_chunks):
            chunk = mtmd.mtmd_input_chunks_get(chunks, i)
            if mtmd.mtmd_input_chunk_get_type(chunk) == CHUNK_TYPE_AUDIO:
                audio_tokens += mtmd.mtmd_input_chunk_get_n_tokens(chunk)
                t0 = time.perf_counter()
                rc = mtmd.mtmd_encode_chunk(self.mctx, chunk)
                enc_s += time.perf_counter() - t0
                if rc != 0:
                    raise _fail("audio encoding failed", rc)
                embd = mtmd.mtmd_get_output_embd(self.mctx)
                t0 = time.perf_counter()
                rc = mtmd.mtmd_helper_decode_image_chunk(
                    self.mctx,
                    lm.ctx,
                    chunk,
                    embd,
                    n_past,
                    0,
                    lm.n_batch,
                    ctypes.byref(new_past),
                    mtmd.mtmd_helper_post_decode_callback(),
                    None,
                )
            else:
                t0 = time.perf_counter()
                rc = mtmd.mtmd_helper_eval_chunk_single(
                    self.mctx,
                    lm.ctx,
                    chunk,
                    n_past,
                    0,
                    lm.n_batch,
                    i == n_chunks - 1,
                    ctypes.byref(new_past),
                )
            pre_s += time.perf_counter() - t0
            if rc != 0:
                raise _fail("llama.cpp failed to evaluate the prompt", rc)
            n_past = int(new_past.value)
        return PrefillStats(
            n_past=n_past,
            n_prompt=n_prompt,
            audio_tokens=audio_tokens,
            encode_ms=enc_s * 1e3,
            prefill_ms=pre_s * 1e3,
        )
