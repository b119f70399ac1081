"""Turning a rendered prompt and its audio into what the text model is fed: two ways.

``FaithfulPrefill`` (the default) does what the reference Qwen2-Audio does: the
project's own log-mel per <= 30 s window, the masked-equivalent encoder (see
:mod:`.encoder`), and only the valid audio tokens (25 per second), spliced into the
token sequence in place of ``<|AUDIO|>``.

``MtmdPrefill`` uses llama.cpp's libmtmd, which pads every clip to 30 s windows
(750 tokens each); kept selectable so the two can be compared.

Both run in the caller's thread (the encoder is the slow part) and return a
:class:`Prompt`: runs of text tokens and of audio embeddings, with one key per position
(the token id, or the clip's digest and the row) so that the scheduler can reuse cells
already computed for the same prefix. Encodings are cached by digest
(:class:`EncodingCache`), so a clip asked about twice is encoded once.
"""

from __future__ import annotations

import collections
import ctypes
import hashlib
import threading
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..config import N_FFT
from ..errors import ContextOverflowError, ModelFileError, RuntimeBackendError
from .bindings.backend import recent_errors
from .prompt import TOKENS_MARKER

AUDIO_PLACEHOLDER = "<|audio_bos|><|AUDIO|><|audio_eos|>"
CHUNK_TYPE_AUDIO = 2  # mtmd_input_chunk_type
# libmtmd aborts the process on a 1-sample buffer and zero-pads anything shorter than
# n_fft/2 + 1 samples itself; padding here to that length changes nothing else.
MIN_MTMD_SAMPLES = N_FFT // 2 + 1  # 201


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


@dataclass(frozen=True)
class Piece:
    """A run of prompt positions: text tokens, or the audio embeddings of one clip."""

    tokens: tuple[int, ...] = ()
    embd: np.ndarray | None = None  # (rows, n_embd) float32
    digest: str = ""

    def __len__(self) -> int:
        return len(self.tokens) if self.embd is None else int(self.embd.shape[0])

    def position_keys(self) -> list[Hashable]:
        if self.embd is None:
            return list(self.tokens)
        return [(self.digest, i) for i in range(len(self))]


@dataclass(frozen=True)
class Prompt:
    """Everything the scheduler feeds for one request, in position order."""

    pieces: tuple[Piece, ...]
    audio_tokens: int
    encode_ms: float
    keys: list[Hashable] = field(default_factory=list)

    @property
    def n_tokens(self) -> int:
        return len(self.keys)

    @classmethod
    def of(cls, pieces: list[Piece], audio_tokens: int, encode_ms: float) -> Prompt:
        pieces = [p for p in pieces if len(p)]
        keys = [k for p in pieces for k in p.position_keys()]
        return cls(tuple(pieces), audio_tokens, encode_ms, keys)


class EncodingCache:
    """Audio embeddings by digest, least recently used dropped first, bounded in bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: str) -> np.ndarray | None:
        with self._lock:
            arr = self._items.get(key)
            if arr is None:
                self.misses += 1
                return None
            self.hits += 1
            self._items.move_to_end(key)
            return arr

    def put(self, key: str, arr: np.ndarray) -> None:
        if arr.nbytes > self.max_bytes:
            return
        arr.setflags(write=False)
        with self._lock:
            if key in self._items:
                return
            self._items[key] = arr
            self._bytes += arr.nbytes
            while self._bytes > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self._bytes -= old.nbytes

    @property
    def nbytes(self) -> int:
        return self._bytes

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


def digest(samples: np.ndarray, salt: str) -> str:
    """Identity of a clip for one encoder: its float32 samples and the encoder settings."""
    h = hashlib.blake2b(salt.encode(), digest_size=16)
    h.update(np.ascontiguousarray(samples, dtype=np.float32).tobytes())
    return h.hexdigest()


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


def _check_fits(lm: Llama, n_prompt: int) -> None:
    if n_prompt + 1 > lm.n_ctx:
        raise ContextOverflowError(n_prompt, lm.n_ctx, lm.n_ctx_train)


class FaithfulPrefill:
    """Reference-exact audio: own features and encoder, valid tokens only."""

    def __init__(self, lm: Llama, encoder: Any, cache: EncodingCache, salt: str) -> None:
        self.lm, self.encoder, self.cache, self.salt = lm, encoder, cache, salt
        self.marker = AUDIO_PLACEHOLDER
        ids = tokenize(lm, "<|AUDIO|>")
        if len(ids) != 1:
            raise ModelFileError(
                "this text model has no <|AUDIO|> special token: it is not Qwen2-Audio's "
                "tokenizer (convert the model again with `qaudio convert`)",
                path="<model>",
            )
        self.audio_id = ids[0]
        self.encoder_calls = 0  # encoder runs (windows, or mtmd chunks)

    def build(
        self,
        text: str,
        audios: list[np.ndarray],
        runs: Sequence[Sequence[int]] = (),
        store: bool = True,
    ) -> Prompt:
        """The prompt's pieces: ``text`` tokenized, each clip encoded (or taken from the
        cache, where new encodings go unless ``store`` is False) in place of its
        ``<|AUDIO|>``, each of ``runs`` put verbatim where the text has a token-ids marker
        (see :mod:`.prompt`)."""
        from ..audio.features import log_mel
        from ..audio.windows import audio_token_count, split_windows

        parts = [tokenize(self.lm, t) for t in text.split(TOKENS_MARKER)]
        if len(parts) != len(runs) + 1:
            raise ValueError("the prompt's token-id markers do not match the runs given")
        if sum(p.count(self.audio_id) for p in parts) != len(audios):
            raise ValueError("the prompt text may not contain the <|AUDIO|> token")
        counts = [audio_token_count(a.size) for a in audios]  # known before any feature
        n_text = sum(len(p) for p in parts) - len(audios) + sum(len(r) for r in runs)
        _check_fits(self.lm, n_text + sum(counts))
        t0 = time.perf_counter()
        embeds = []
        for clip in audios:
            key = digest(clip, self.salt)
            embd = self.cache.get(key)
            if embd is None:
                embd = self._encode([log_mel(w) for w in split_windows(clip)])
                if store:
                    self.cache.put(key, embd)
            embeds.append(Piece(embd=embd, digest=key))
        enc_ms = (time.perf_counter() - t0) * 1e3
        pieces: list[Piece] = []
        k = 0
        for j, ids in enumerate(parts):
            start = 0
            for i, tok in enumerate(ids):
                if tok == self.audio_id:
                    pieces += [Piece(tokens=tuple(ids[start:i])), embeds[k]]
                    start, k = i + 1, k + 1
            pieces.append(Piece(tokens=tuple(ids[start:])))
            if j < len(runs):
                pieces.append(Piece(tokens=tuple(int(t) for t in runs[j])))
        return Prompt.of(pieces, sum(counts), enc_ms)

    def _encode(self, feats: list[Any]) -> np.ndarray:
        parts = [self.encoder.encode(f.mel, f.n_valid_frames) for f in feats]
        self.encoder_calls += len(feats)
        parts = [p for p in parts if len(p)]
        return np.concatenate(parts) if parts else np.zeros((0, self.lm.n_embd), np.float32)


class MtmdPrefill:
    """llama.cpp's own audio path through libmtmd (its tokenizer and its encoder)."""

    def __init__(self, lm: Llama, mtmd: Any, mctx: Any, cache: EncodingCache, salt: str) -> None:
        self.lm, self.mtmd, self.mctx, self.cache, self.salt = lm, mtmd, mctx, cache, salt
        self.marker = mtmd.mtmd_default_marker().decode()
        self._lock = threading.Lock()  # one libmtmd context: one encode at a time
        self.encoder_calls = 0  # encoder runs (windows, or mtmd chunks)

    def build(
        self,
        text: str,
        audios: list[np.ndarray],
        runs: Sequence[Sequence[int]] = (),
        store: bool = True,
    ) -> Prompt:
        """The prompt's pieces through libmtmd. It tokenizes the whole text itself, so
        token-id runs must have been replaced by their text (the model does that)."""
        if runs or TOKENS_MARKER in text:
            raise ValueError("the mtmd path takes token-id runs as text")
        with self._lock:
            chunks = self._tokenize(text, audios)
            try:
                _check_fits(self.lm, int(self.mtmd.mtmd_helper_get_n_tokens(chunks)))
                return self._pieces(chunks, audios, store)
            finally:
                self.mtmd.mtmd_input_chunks_free(chunks)

    def _tokenize(self, text: str, audios: list[np.ndarray]) -> Any:
        mtmd = self.mtmd
        bitmaps: list[Any] = []
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
            mtmd.mtmd_bitmap_set_id(bmp, str(len(bitmaps)).encode())  # chunk -> its clip
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

    def _pieces(self, chunks: Any, audios: list[np.ndarray], store: bool) -> Prompt:
        mtmd, lm = self.mtmd, self.lm
        pieces: list[Piece] = []
        audio_tokens, enc_s = 0, 0.0
        seen: dict[int, int] = {}  # clip -> its chunks so far (mtmd cuts a clip per 30 s)
        for i in range(mtmd.mtmd_input_chunks_size(chunks)):
            chunk = mtmd.mtmd_input_chunks_get(chunks, i)
            if mtmd.mtmd_input_chunk_get_type(chunk) != CHUNK_TYPE_AUDIO:
                n = ctypes.c_size_t(0)
                ptr = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
                pieces.append(Piece(tokens=tuple(ptr[: n.value]) if n.value else ()))
                continue
            n_tok = int(mtmd.mtmd_input_chunk_get_n_tokens(chunk))
            audio_tokens += n_tok
            clip = int((mtmd.mtmd_input_chunk_get_id(chunk) or b"0").decode())
            part = seen[clip] = seen.get(clip, -1) + 1
            key = f"{digest(audios[clip], self.salt)}#{part}"
            embd = self.cache.get(key)
            if embd is None or embd.shape[0] != n_tok:
                t0 = time.perf_counter()
                rc = mtmd.mtmd_encode_chunk(self.mctx, chunk)
                enc_s += time.perf_counter() - t0
                if rc != 0:
                    raise _fail("audio encoding failed", rc)
                self.encoder_calls += 1
                out = mtmd.mtmd_get_output_embd(self.mctx)
                embd = np.ctypeslib.as_array(out, shape=(n_tok * lm.n_embd,))
                embd = embd.reshape(n_tok, lm.n_embd).copy()
                if store:
                    self.cache.put(key, embd)
            pieces.append(Piece(embd=embd, digest=key))
        return Prompt.of(pieces, audio_tokens, enc_s * 1e3)
