"""One generation as the scheduler runs it (see :mod:`.scheduler`).

A :class:`Request` holds what was asked (the prompt, the sampling options), the queue its
consumer reads (:class:`~.results.Chunk` items, then one :class:`~.results.Result` or an
exception) and the state of its sequence that the scheduler's thread keeps: the slot it
occupies, positions fed and reused, its sampler, stop strings, loop watch and UTF-8
decoder, and when its prompt was done, from which :meth:`Request.result` reports usage
and timings.
"""

from __future__ import annotations

import codecs
import queue
import time

import numpy as np

from ..loops import LoopWatch
from ..options import SamplingOptions
from ..prefill import Piece, Prompt
from ..results import Chunk, Result, Timings, Usage
from .kv import Slot
from .sampling import StopText, TokenSampler


class Request:
    """One generation: its prompt and options, and a queue its consumer reads.

    The consumer reads :class:`Chunk` items, then one :class:`Result` (or an exception).
    Everything else is the scheduler thread's own state.
    """

    def __init__(
        self,
        prompt: Prompt,
        sampling: SamplingOptions,
        *,
        audio_seconds: float = 0.0,
        logits_only: bool = False,
        keep: bool = True,
        cold: bool = False,
    ) -> None:
        self.prompt, self.sampling, self.logits_only = prompt, sampling, logits_only
        self.keep = keep  # leave the cells cached for a later prompt that starts the same
        self.cold = cold  # start alone from an empty cache (see Scheduler._admit)
        self.audio_seconds = audio_seconds
        self.out: queue.SimpleQueue[Chunk | Result | BaseException] = queue.SimpleQueue()
        self.cancelled = False
        self.done = False
        self.logits: np.ndarray | None = None
        # the scheduler thread's state
        self.slot: Slot | None = None
        self.order = 0
        self.fed = 0  # prompt positions in cells (reused ones included)
        self.reused = 0
        self.pending: int | None = None  # sampled, not yet fed
        self.tokens: list[int] = []
        self.logprobs: list[float] = []
        self.texts: list[str] = []
        self.sampler: TokenSampler | None = None
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.stops = StopText(sampling.stop)
        self.loops = LoopWatch() if sampling.stop_loops else None
        self.t_submit = time.perf_counter()
        self.t_prompt = 0.0

    def piece_at(self, pos: int) -> tuple[Piece, int]:
        """The prompt piece holding position ``pos`` and the offset in it."""
        for piece in self.prompt.pieces:
            if pos < len(piece):
                return piece, pos
            pos -= len(piece)
        raise IndexError(pos)

    def result(self, reason: str) -> Result:
        """The finished generation: its text, ``reason``, usage and timings (as of now)."""
        now = time.perf_counter()
        t_prompt = self.t_prompt or now
        n_dec = len(self.tokens)
        dec_s = now - t_prompt
        return Result(
            text="".join(self.texts),
            finish_reason=reason,
            usage=Usage(
                audio_seconds=self.audio_seconds,
                audio_tokens=self.prompt.audio_tokens,
                prompt_tokens=self.prompt.n_tokens,
                completion_tokens=n_dec,
                cached_tokens=self.reused,
            ),
            timings=Timings(
                encode_ms=self.prompt.encode_ms,
                prefill_ms=(t_prompt - self.t_submit) * 1e3,
                decode_ms=dec_s * 1e3,
                decode_tokens_per_s=n_dec / dec_s if dec_s > 0 and n_dec else 0.0,
            ),
            tokens=tuple(self.tokens),
            logprobs=tuple(self.logprobs),
        )
