"""Many sequences in one llama.cpp context: one batch per step, prefixes computed once.

One background thread owns the context. Each step it puts the next token of every
decoding sequence into one ``llama_batch`` (decoding is bound by memory bandwidth, so a
batch of N costs little more than one), adds a bounded run of prompt tokens of the
sequences still prefilling (so a long prompt never stalls the others for more than a
batch), then runs a second batch for a run of audio embeddings if one is due (a batch
holds tokens or embeddings, not both). Each sequence has its own sampler, stop strings,
seed and token budget.

A finished sequence keeps its cells (:class:`~.kv.SlotState.CACHED`). A new request is
placed where the longest prefix of its prompt keys (token ids, and audio digests per row)
is already computed: it takes over a cached sequence, or shares the prefix of an active
one (``llama_memory_seq_cp``: the unified cache shares cells), and only the rest is fed.
When cells run short, the least recently used cached sequences are dropped. Results
equal a cold run's: positions, tokens and the model are the same; only which cells hold
them differs (and so, with some kernels, the float rounding). A *cold* request makes that
exact: it waits until no other sequence runs, every cached sequence is dropped and the
cache cleared, so it starts as the first request of a fresh model would.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ...errors import ContextOverflowError, RuntimeBackendError
from ..bindings.backend import recent_errors
from ..prefill import Llama
from ..results import Chunk, EngineStats
from .kv import CellLedger, Slot, SlotState, common_prefix
from .request import Request
from .sampling import TokenSampler


class Scheduler:
    """Runs :class:`Request` s on one context (see the module docstring).

    Args:
        lm: The context and its sizes.
        n_parallel: Sequences decoded at once; more requests wait, first come first served.
        n_seq_max: Sequence ids of the context (``n_parallel`` + cached prefixes).
        piece: Token id -> its bytes.
        is_eog: Whether a token ends the turn.
    """

    def __init__(
        self,
        lm: Llama,
        *,
        n_parallel: int,
        n_seq_max: int,
        piece: Callable[[int], bytes],
        is_eog: Callable[[int], bool],
    ) -> None:
        self.lm, self.n_parallel = lm, n_parallel
        self._lib = lm.lib
        self._mem = lm.lib.llama_get_memory(lm.ctx)
        self._piece, self._is_eog = piece, is_eog
        self.slots = [Slot(i) for i in range(n_seq_max)]
        self.ledger = CellLedger(lm.n_ctx)
        self._n_vocab = int(lm.lib.llama_vocab_n_tokens(lm.vocab))
        self._cv = threading.Condition()
        self._waiting: deque[Request] = deque()
        self._active: list[Request] = []
        self._closed = False
        self._drop = False
        self._hold = False
        self._thread: threading.Thread | None = None
        self._clock = itertools.count(1)
        self._counts = dict.fromkeys(
            (
                "requests",
                "tokens_fed",
                "embeddings_fed",
                "positions_reused",
                "decode_calls",
                "max_batch_sequences",
                "evictions",
            ),
            0,
        )
        self._tok = lm.lib.llama_batch_init(lm.n_batch, 0, 1)
        self._emb = lm.lib.llama_batch_init(lm.n_batch, lm.n_embd, 1)

    # -- the consumer's side --------------------------------------------------------------

    def submit(self, req: Request) -> None:
        """Queue ``req``; its consumer then reads ``req.out``.

        Raises:
            RuntimeBackendError: The model is closed.
        """
        with self._cv:
            if self._closed:
                raise RuntimeBackendError("the model is closed; create a new AudioModel")
            self._waiting.append(req)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="qaudio-engine")
                self._thread.daemon = True
                self._thread.start()
            self._cv.notify()

    def cancel(self, req: Request) -> None:
        """Stop ``req`` at the next step (its consumer then gets a "cancelled" result)."""
        req.cancelled = True
        with self._cv:
            self._cv.notify()

    def stats(self) -> EngineStats:
        cached = sum(s.state is SlotState.CACHED for s in self.slots)
        return EngineStats(
            **self._counts,
            cells_used=self.ledger.used,
            n_ctx=self.lm.n_ctx,
            cached_sequences=cached,
        )

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Queue requests without starting them until the block ends (then all together).

        For benchmarks and tests that need N sequences to start in the same step.
        """
        with self._cv:
            self._hold = True
        try:
            yield
        finally:
            with self._cv:
                self._hold = False
                self._cv.notify()

    @property
    def queued(self) -> int:
        """Requests waiting for a sequence."""
        with self._cv:
            return len(self._waiting)

    def drop_cached(self) -> None:
        """Forget every cached prefix (at the next step; running requests are untouched)."""
        with self._cv:
            self._drop = True
            self._cv.notify()

    def close(self) -> None:
        """Stop the thread, fail what is queued or running, free the batches (idempotent)."""
        with self._cv:
            if self._closed:
                return
            self._closed = True
            self._cv.notify()
        if self._thread is not None:
            self._thread.join()
        closed = RuntimeBackendError("the model was closed while this request ran")
        for req in [*self._waiting, *self._active]:
            self._abandon(req, closed)
        self._waiting.clear()
        self._lib.llama_batch_free(self._tok)
        self._lib.llama_batch_free(self._emb)

    # -- the loop ---------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._closed and (
                    self._hold or not (self._waiting or self._active or self._drop)
                ):
                    self._cv.wait()
                if self._closed:
                    return
            before = (self._counts["decode_calls"], self._counts["requests"], len(self._active))
            try:
                self._step()
            except Exception as exc:  # never leave a consumer waiting forever
                self._reset(RuntimeBackendError(f"the engine failed: {exc}"))
            after = (self._counts["decode_calls"], self._counts["requests"], len(self._active))
            if before == after:  # nothing could move (waiting for cells): do not spin
                with self._cv:
                    self._cv.wait(0.01)

    def _step(self) -> None:
        if self._drop:
            self._drop = False
            for slot in self.slots:
                if slot.state is SlotState.CACHED:
                    self._evict(slot)
            if not self._active:  # also puts llama.cpp's search for free cells back at 0,
                self._lib.llama_memory_clear(self._mem, True)  # so a cold run is a cold run
        for req in [r for r in self._active if r.cancelled]:
            self._finish(req, "cancelled")
        self._admit()
        decoders = [r for r in self._active if r.pending is not None]
        prefill = [r for r in self._active if r.pending is None and r.fed < r.prompt.n_tokens]
        self._make_room(len(decoders), keep=set())
        while decoders and self.ledger.free < len(decoders):  # the context is full
            newest = max(decoders, key=lambda r: r.order)
            decoders.remove(newest)
            self._finish(newest, "length")
        self._run_batches(decoders, prefill)

    # -- placing a request ------------------------------------------------------------------

    def _admit(self) -> None:
        while len(self._active) < self.n_parallel:
            with self._cv:
                if not self._waiting:
                    return
                req = self._waiting[0]
            if req.cancelled:
                self._pop_waiting()
                self._emit_result(req, "cancelled")
                continue
            if req.cold:
                if self._active:
                    return  # it starts alone: wait for the running ones to end
                for slot in self.slots:
                    if slot.state is SlotState.CACHED:
                        self._evict(slot)
                self._lib.llama_memory_clear(self._mem, True)  # free-cell search back at 0
            if not self._place(req):
                if self._active:
                    return  # wait for cells to be freed
                self._pop_waiting()
                self._abandon(req, ContextOverflowError(req.prompt.n_tokens, self.lm.n_ctx))
                continue
            self._pop_waiting()
            req.order = next(self._clock)
            if not req.logits_only:
                req.sampler = TokenSampler(self._lib, self.lm.vocab, req.sampling)
            self._active.append(req)

    def _pop_waiting(self) -> None:
        with self._cv:
            self._waiting.popleft()

    def _place(self, req: Request) -> bool:
        """Give ``req`` a sequence holding the longest computed prefix of its prompt."""
        keys = req.prompt.keys
        limit = len(keys) - 1  # the last prompt position is always fed: its logits are needed
        best, n_best = None, 0
        for slot in self.slots:
            if slot.state is SlotState.FREE or not slot.keys:
                continue
            n = min(common_prefix(slot.keys, keys), limit)
            prefer = best is not None and best.state is SlotState.ACTIVE
            if n > n_best or (n == n_best > 0 and prefer and slot.state is SlotState.CACHED):
                best, n_best = slot, n
        if best is not None and best.state is SlotState.CACHED and n_best == len(best.keys):
            slot = best  # the prompt continues this one (a conversation's next turn): take it
        else:  # branch: share the prefix, keep the cached sequence for whoever needs it next
            slot = self._free_slot(exclude=best)
            if best is not None and n_best:
                self._lib.llama_memory_seq_cp(self._mem, best.seq, slot.seq, 0, n_best)
                self.ledger.copy_prefix(best.seq, slot.seq, n_best)
                slot.keys = best.keys[:n_best]
        slot.state = SlotState.ACTIVE  # not evictable while room is made
        reserved = sum(r.prompt.n_tokens - r.fed for r in self._active)
        if not self._make_room(len(keys) - n_best + reserved + 1, keep=set()):
            slot.state = SlotState.CACHED if slot.keys else SlotState.FREE
            slot.last_used = next(self._clock)
            return False
        req.slot, req.fed, req.reused = slot, n_best, n_best
        self._counts["positions_reused"] += n_best
        return True

    def _make_room(self, need: int, keep: set[Slot | None]) -> bool:
        """Drop least recently used cached sequences until ``need`` cells are free."""
        while self.ledger.free < need:
            cached = [s for s in self.slots if s.state is SlotState.CACHED and s not in keep]
            if not cached:
                return False
            self._evict(min(cached, key=lambda s: s.last_used))
        return True

    def _free_slot(self, exclude: Slot | None) -> Slot:
        free = [s for s in self.slots if s.state is SlotState.FREE]
        if free:
            return free[0]
        cached = [s for s in self.slots if s.state is SlotState.CACHED and s is not exclude]
        slot = min(cached, key=lambda s: s.last_used)  # n_seq_max > n_parallel: one exists
        self._evict(slot)
        return slot

    def _evict(self, slot: Slot) -> None:
        self._counts["evictions"] += slot.state is SlotState.CACHED
        self._lib.llama_memory_seq_rm(self._mem, slot.seq, -1, -1)
        self.ledger.clear(slot.seq)
        slot.keys, slot.state = [], SlotState.FREE

    # -- one step's batches -----------------------------------------------------------------

    def _run_batches(self, decoders: list[Request], prefill: list[Request]) -> None:
        lm, b = self.lm, self._tok
        n, outputs, feeds = 0, [], []
        for req in decoders:
            self._put(b, n, req.pending, req, len(req.slot.keys), True)  # type: ignore[arg-type,union-attr]
            outputs.append((req, n))
            n += 1
        if prefill:  # best effort: admission reserved these cells, caches may have grown
            wanted = min(sum(r.prompt.n_tokens - r.fed for r in prefill), lm.n_batch)
            self._make_room(n + wanted, keep=set())
        room, cells = lm.n_batch - n, self.ledger.free - n  # token batch size, free cells
        emb_job = None
        for req in sorted(prefill, key=lambda r: r.order):
            if cells <= 0:
                break
            piece, off = req.piece_at(req.fed)
            if piece.embd is not None:
                if emb_job is None:
                    k = min(len(piece) - off, lm.n_batch, cells)
                    emb_job = (req, piece.embd[off : off + k])
                    cells -= k
                continue
            k = min(len(piece) - off, room, cells)
            if k <= 0:
                continue
            ends = req.fed + k == req.prompt.n_tokens
            pos = len(req.slot.keys)  # type: ignore[union-attr]
            for j in range(k):
                self._put(b, n + j, piece.tokens[off + j], req, pos + j, ends and j == k - 1)
            if ends:
                outputs.append((req, n + k - 1))
            feeds.append((req, k))
            n += k
            room -= k
            cells -= k
        if n:
            b.n_tokens = n
            batch_reqs = [*decoders, *(r for r, _ in feeds)]
            most = max(self._counts["max_batch_sequences"], len(batch_reqs))
            self._counts["max_batch_sequences"] = most
            if self._decode(b, batch_reqs):
                for req in decoders:
                    self._commit(req, [req.pending], tokens=1)
                    req.pending = None
                for req, k in feeds:
                    self._commit(req, req.prompt.keys[req.fed : req.fed + k], tokens=k)
                    req.fed += k
                self._sample(outputs)
        if emb_job is not None and not emb_job[0].done:
            self._feed_embeddings(*emb_job)

    def _put(self, b: Any, i: int, token: int, req: Request, pos: int, logits: bool) -> None:
        b.token[i], b.pos[i], b.n_seq_id[i] = token, pos, 1
        b.seq_id[i][0] = req.slot.seq  # type: ignore[union-attr]
        b.logits[i] = logits

    def _feed_embeddings(self, req: Request, rows: np.ndarray) -> None:
        b, k = self._emb, len(rows)
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        ctypes.memmove(b.embd, rows.ctypes.data, rows.nbytes)
        pos = len(req.slot.keys)  # type: ignore[union-attr]
        ends = req.fed + k == req.prompt.n_tokens
        for j in range(k):
            b.pos[j], b.n_seq_id[j] = pos + j, 1
            b.seq_id[j][0] = req.slot.seq  # type: ignore[union-attr]
            b.logits[j] = ends and j == k - 1
        b.n_tokens = k
        if self._decode(b, [req]):
            self._commit(req, req.prompt.keys[req.fed : req.fed + k], embeddings=k)
            req.fed += k
            if ends:
                self._sample([(req, k - 1)])

    def _decode(self, batch: Any, reqs: list[Request]) -> bool:
        """``llama_decode``; on failure, the requests in the batch fail and lose their cells."""
        self._counts["decode_calls"] += 1
        rc = self._lib.llama_decode(self.lm.ctx, batch)
        if rc == 0:
            return True
        err = RuntimeBackendError(
            f"llama.cpp failed to decode (code {rc}): {recent_errors() or 'no details'}"
        )
        for req in reqs:
            if req.slot is not None:
                self._evict(req.slot)
            self._abandon(req, err)
        return False

    def _commit(self, req: Request, keys: list[Any], tokens: int = 0, embeddings: int = 0) -> None:
        slot = req.slot
        assert slot is not None
        slot.keys.extend(keys)
        self.ledger.append(slot.seq, len(keys))
        self._counts["tokens_fed"] += tokens
        self._counts["embeddings_fed"] += embeddings
        if req.fed + len(keys) >= req.prompt.n_tokens and not req.t_prompt and req.pending is None:
            req.t_prompt = time.perf_counter()

    def _sample(self, outputs: list[tuple[Request, int]]) -> None:
        for req, i in outputs:
            if req.done:
                continue
            if req.logits_only:
                ptr = self._lib.llama_get_logits_ith(self.lm.ctx, i)
                req.logits = np.ctypeslib.as_array(ptr, shape=(self._n_vocab,)).copy()
                self._finish(req, "length")
            else:
                tok = req.sampler.sample(self.lm.ctx, i)  # type: ignore[union-attr]
                self._on_token(req, tok, self._logprob(i, tok) if req.sampling.logprobs else None)

    def _logprob(self, i: int, tok: int) -> float:
        """log p(tok) under the model at batch position ``i`` (before any sampler)."""
        ptr = self._lib.llama_get_logits_ith(self.lm.ctx, i)
        logits = np.ctypeslib.as_array(ptr, shape=(self._n_vocab,)).astype(np.float64)
        top = logits.max()
        return float(logits[tok] - top - np.log(np.exp(logits - top).sum()))

    # -- tokens out -----------------------------------------------------------------------

    def _on_token(self, req: Request, tok: int, logprob: float | None = None) -> None:
        s = req.sampling
        if s.stop_at_end_of_turn and self._is_eog(tok):
            self._finish(req, "stop")
            return
        req.tokens.append(tok)
        if logprob is not None:
            req.logprobs.append(logprob)
        shown, stopped = req.stops.feed(req.utf8.decode(self._piece(tok)))
        req.texts.append(shown)
        req.out.put(Chunk(text=shown, token=tok, logprob=logprob))
        if stopped:
            self._finish(req, "stop", flush=False)
        elif req.loops is not None and req.loops.feed(tok):
            self._finish(req, "loop")
        elif len(req.tokens) >= s.max_tokens or len(req.slot.keys) + 1 >= self.lm.n_ctx:  # type: ignore[union-attr]
            self._finish(req, "length")
        else:
            req.pending = tok

    def _finish(self, req: Request, reason: str, flush: bool = True) -> None:
        if flush:
            tail, _ = req.stops.feed(req.utf8.decode(b"", final=True))
            tail += req.stops.flush()
            if tail:
                req.texts.append(tail)
                req.out.put(Chunk(text=tail, token=-1))
        self._release(req)
        self._emit_result(req, reason)

    def _release(self, req: Request) -> None:
        if req in self._active:
            self._active.remove(req)
        if req.slot is not None and req.slot.state is SlotState.ACTIVE:
            req.slot.state = SlotState.CACHED if req.slot.keys else SlotState.FREE
            req.slot.last_used = next(self._clock)
            if not req.keep:
                self._evict(req.slot)
        if req.sampler is not None:
            req.sampler.free()
            req.sampler = None

    def _emit_result(self, req: Request, reason: str) -> None:
        req.done = True
        self._counts["requests"] += 1
        req.out.put(req.result(reason))

    def _abandon(self, req: Request, exc: BaseException) -> None:
        self._release(req)
        if not req.done:
            req.done = True
            req.out.put(exc)

    def _reset(self, exc: RuntimeBackendError) -> None:
        """After an unexpected failure: fail what runs, forget every cached prefix."""
        for req in list(self._active):
            self._abandon(req, exc)
        self._lib.llama_memory_clear(self._mem, True)
        for slot in self.slots:
            self.ledger.clear(slot.seq)
            slot.keys, slot.state = [], SlotState.FREE
