"""What the engine gives back: streamed chunks, a generation's result, the engine's counts.

:class:`Generation` streams :class:`Chunk` objects and holds the :class:`Result` (with
:class:`Usage` and :class:`Timings`) once exhausted; :class:`EngineStats` counts what the
engine has fed to llama.cpp; :func:`check_audio` checks the arrays a prompt brings. How a
model is loaded and how tokens are chosen are :mod:`.options`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..audio.validate import model_samples


@dataclass(frozen=True)
class Chunk:
    """One generated token.

    Attributes:
        text: The text it adds (may be empty while a UTF-8 character is incomplete).
        token: The token id (-1 for the text left over at the end).
        logprob: Its log-probability under the model (with ``SamplingOptions(logprobs=True)``).
    """

    text: str
    token: int
    logprob: float | None = None


@dataclass(frozen=True)
class Usage:
    """Token and audio accounting of one generation.

    Attributes:
        audio_seconds: Length of the audio in the prompt.
        audio_tokens: Audio positions in the prompt.
        prompt_tokens: Prompt positions in all (text and audio).
        completion_tokens: Tokens generated.
        cached_tokens: Prompt positions whose KV cells were reused from an earlier request
            rather than computed (a conversation's earlier turns, a repeated clip).
    """

    audio_seconds: float
    audio_tokens: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0


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
        finish_reason: ``"stop"`` (end of turn or a stop string), ``"length"`` (max_tokens
            or the context is full), ``"loop"`` (it had turned into a loop; only with
            ``SamplingOptions(stop_loops=True)``) or ``"cancelled"``.
        tokens: The generated token ids.
        logprobs: Their log-probabilities (with ``SamplingOptions(logprobs=True)``).
    """

    text: str
    finish_reason: str
    usage: Usage
    timings: Timings
    tokens: tuple[int, ...] = field(default=())
    logprobs: tuple[float, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with ``text``, ``finish_reason``, ``usage`` and ``timings``."""
        return {
            "text": self.text,
            "finish_reason": self.finish_reason,
            "usage": self.usage.__dict__.copy(),
            "timings": {k: round(v, 3) for k, v in self.timings.__dict__.items()},
        }


@dataclass(frozen=True)
class EngineStats:
    """What the engine has fed to llama.cpp since it was loaded (counts, not timings).

    Attributes:
        requests: Requests finished (any reason).
        tokens_fed: Text tokens fed (prompt and generated).
        embeddings_fed: Audio embedding rows fed.
        positions_reused: Prompt positions whose cells were reused instead of fed.
        decode_calls: ``llama_decode`` calls.
        max_batch_sequences: The most sequences one ``llama_decode`` call has carried.
        evictions: Cached sequences dropped to make room.
        cells_used: Cells of the KV cache in use now (cached prefixes included).
        n_ctx: Cells in all.
        cached_sequences: Finished sequences whose cells are kept for reuse.
    """

    requests: int
    tokens_fed: int
    embeddings_fed: int
    positions_reused: int
    decode_calls: int
    max_batch_sequences: int
    evictions: int
    cells_used: int
    n_ctx: int
    cached_sequences: int


class Generation:
    """An iterator of :class:`Chunk`; ``result`` is set once it is exhausted.

    Nothing runs until the first chunk is asked for. Leaving the loop early (``break``,
    an exception, or dropping the generation) or calling :meth:`cancel` from any thread
    stops the sequence within one decoding step.
    """

    def __init__(
        self,
        chunks: Iterable[Chunk | Result],
        cancel: Callable[[], None] | None = None,
        start: Callable[[], None] | None = None,
    ) -> None:
        self._chunks = iter(chunks)
        self._cancel = cancel
        self._start = start
        self.result: Result | None = None

    def start(self) -> Generation:
        """Do the prompt's work now (encode the audio, in this thread) and queue it,
        without waiting for tokens; returns the generation itself."""
        if self._start is not None:
            self._start()
        return self

    def __iter__(self) -> Iterator[Chunk]:
        try:
            for item in self._chunks:
                if isinstance(item, Result):
                    self.result = item
                else:
                    yield item
        finally:
            if self.result is None:
                self.cancel()

    def cancel(self) -> None:
        """Stop generating (safe from any thread; the result says ``"cancelled"``)."""
        if self._cancel is not None:
            self._cancel()

    def wait(self) -> Result:
        """Consume the rest of the stream and return the result."""
        for _ in self:
            pass
        assert self.result is not None
        return self.result


def check_audio(audio: np.ndarray, index: int) -> np.ndarray:
    """Audio ``index`` (from 1) of a prompt, checked as every way audio comes in is.

    Raises:
        InvalidAudioError: See :func:`qaudio_local.audio.validate.model_samples`.
    """
    return model_samples(audio, f"audio {index}")
