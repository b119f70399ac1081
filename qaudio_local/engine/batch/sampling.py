"""Per-sequence token choice: a llama.cpp sampler chain, and stop strings over the text."""

from __future__ import annotations

from typing import Any

from ..options import SamplingOptions


class TokenSampler:
    """A llama.cpp sampler chain built from :class:`SamplingOptions` (one per sequence).

    Greedy when ``temperature`` is 0; otherwise top-k, top-p, temperature and a seeded
    distribution, in llama.cpp's usual order. Free it with :meth:`free`.
    """

    def __init__(self, lib: Any, vocab: Any, s: SamplingOptions) -> None:
        self._lib = lib
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        add = lib.llama_sampler_chain_add
        if s.repetition_penalty != 1.0:
            n_vocab = lib.llama_vocab_n_tokens(vocab)
            add(chain, lib.llama_sampler_init_penalties(n_vocab, 64, s.repetition_penalty, 0, 0))
        if s.temperature <= 0:
            add(chain, lib.llama_sampler_init_greedy())
        else:
            if s.top_k > 0:
                add(chain, lib.llama_sampler_init_top_k(s.top_k))
            if s.top_p < 1.0:
                add(chain, lib.llama_sampler_init_top_p(s.top_p, 1))
            add(chain, lib.llama_sampler_init_temp(s.temperature))
            add(chain, lib.llama_sampler_init_dist(s.seed & 0xFFFFFFFF))
        self._chain = chain

    def sample(self, ctx: Any, index: int) -> int:
        """The token chosen from the logits at batch position ``index`` (and accepted)."""
        return int(self._lib.llama_sampler_sample(self._chain, ctx, index))

    def free(self) -> None:
        """Release the chain (idempotent)."""
        if self._chain is not None:
            self._lib.llama_sampler_free(self._chain)
            self._chain = None


class StopText:
    """Find stop strings in streamed text, holding back only what could start one.

    ``feed`` returns the text that is safe to show now and whether a stop string was
    reached (the text before it is returned; the stop string and anything after are not).
    """

    def __init__(self, stops: tuple[str, ...]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._buf = ""

    def feed(self, text: str) -> tuple[str, bool]:
        if not self._stops:
            return text, False
        self._buf += text
        hits = [i for i in (self._buf.find(s) for s in self._stops) if i >= 0]
        if hits:
            out, self._buf = self._buf[: min(hits)], ""
            return out, True
        hold = 0  # the longest end of the text that could begin a stop string
        for stop in self._stops:
            for n in range(min(len(stop) - 1, len(self._buf)), hold, -1):
                if self._buf.endswith(stop[:n]):
                    hold = n
                    break
        cut = len(self._buf) - hold
        out, self._buf = self._buf[:cut], self._buf[cut:]
        return out, False

    def flush(self) -> str:
        """What was held back, at the end of the answer."""
        out, self._buf = self._buf, ""
        return out
