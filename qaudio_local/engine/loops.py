"""Answers that have turned into a loop: found while decoding, trimmed afterwards.

Whisper-style models now and then stop following the audio and say one phrase over and
over ("Thank you. Thank you. ...") until the token limit; on a CPU that is most of a
segment's time spent on text nobody wants. :class:`LoopWatch` sees it token by token (the
scheduler stops such a request with ``finish_reason="loop"`` when
``SamplingOptions.stop_loops`` is on), and :func:`collapse_repeats` keeps one copy of a
phrase repeated at the end of a text.

The test is on n-grams, not exact cycles, so that a loop whose copies differ now and then
is found too: in the last ``window`` tokens, at most ``max_distinct`` different
``ngram``-grams. Speech written out has nearly every 4-gram different (about 125 of 125);
a phrase of up to ``max_distinct`` tokens said over and over has at most that many.
"""

from __future__ import annotations

import re
from collections import Counter, deque

WINDOW = 128
NGRAM = 4
MAX_DISTINCT = 24
_SENTENCE_END = re.compile(r"[.!?\u3002\uff01\uff1f]+")


class LoopWatch:
    """Token by token: has the answer become a loop? (see the module's docstring)."""

    def __init__(
        self, window: int | None = None, ngram: int | None = None, max_distinct: int | None = None
    ) -> None:
        window = WINDOW if window is None else window  # the module's values as of now
        ngram = NGRAM if ngram is None else ngram
        max_distinct = MAX_DISTINCT if max_distinct is None else max_distinct
        if not 1 <= ngram <= window or max_distinct < 1:
            raise ValueError("need 1 <= ngram <= window and max_distinct >= 1")
        self.window, self.ngram, self.max_distinct = window, ngram, max_distinct
        self._last: deque[int] = deque(maxlen=ngram)
        self._grams: deque[tuple[int, ...]] = deque()
        self._counts: Counter[tuple[int, ...]] = Counter()

    def feed(self, token: int) -> bool:
        """Add the next token; True once the last ``window`` tokens are a loop."""
        self._last.append(token)
        if len(self._last) < self.ngram:
            return False
        gram = tuple(self._last)
        self._grams.append(gram)
        self._counts[gram] += 1
        if len(self._grams) > self.window - self.ngram + 1:
            old = self._grams.popleft()
            self._counts[old] -= 1
            if not self._counts[old]:
                del self._counts[old]
        full = len(self._grams) == self.window - self.ngram + 1
        return full and len(self._counts) <= self.max_distinct


def collapse_repeats(text: str, *, max_unit: int = 200, min_run: int = 24) -> str:
    """``text`` with a phrase repeated at its end kept once.

    The end of the text is a repeat when, for some unit length ``L`` (the shortest that
    works, at most ``max_unit`` characters), its last ``3 * L`` characters or more (and at
    least ``min_run``) read the same ``L`` characters apart; the text is cut one unit after
    the start of that run, or at the first sentence end within the next unit, so that the
    copy kept ends as a sentence does where it can. A last copy cut short (the token limit
    fell mid-phrase) is part of the run, so it goes too. What is left is looked at again,
    since a loop often drifts from one phrase to another. A text that does not end in a
    repeat comes back unchanged.
    """
    while True:
        n = len(text)
        for unit in range(1, min(max_unit, n // 3) + 1):
            i = n - unit - 1
            while i >= 0 and text[i] == text[i + unit]:
                i -= 1
            run = n - (i + 1)
            if run >= 3 * unit and run >= min_run:
                cut = i + 1 + unit
                end = _SENTENCE_END.search(text, cut, cut + unit)  # "...noon| Thank you."
                text = text[: end.end() if end else cut]
                break
        else:
            return text
