"""Bookkeeping of llama.cpp's unified KV cache: which sequence holds which cells.

With ``kv_unified`` every sequence draws cells from one pool of ``n_ctx``, and
``llama_memory_seq_cp`` shares cells between sequences instead of copying them. The
:class:`CellLedger` mirrors what the scheduler asks of llama.cpp (append, truncate, share a
prefix, clear), so the number of free cells is known exactly before a batch is built,
without asking llama.cpp (which has no call for it).

A :class:`Slot` is one llama.cpp sequence id with the content of its cells: one key per
position (a text token id, or ``(audio digest, row)`` for an audio embedding), so a new
prompt can be matched against what is already computed.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from enum import Enum


@dataclass(eq=False)
class _Block:
    """A run of cells at consecutive positions, held by every sequence in ``seqs``."""

    n: int
    seqs: set[int]


class CellLedger:
    """Exact count of the cells in use, with prefixes shared between sequences.

    Args:
        n_cells: The context's size (``llama_n_ctx``).
    """

    def __init__(self, n_cells: int) -> None:
        self.n_cells = n_cells
        self._blocks: dict[int, list[_Block]] = {}

    @property
    def used(self) -> int:
        """Cells held by at least one sequence."""
        live = {id(b): b.n for blocks in self._blocks.values() for b in blocks}
        return sum(live.values())

    @property
    def free(self) -> int:
        """Cells no sequence holds."""
        return self.n_cells - self.used

    def length(self, seq: int) -> int:
        """Positions held by ``seq``."""
        return sum(b.n for b in self._blocks.get(seq, ()))

    def append(self, seq: int, n: int) -> None:
        """``seq`` got ``n`` new cells at its next positions (a decoded batch)."""
        if n > 0:
            self._blocks.setdefault(seq, []).append(_Block(n, {seq}))

    def truncate(self, seq: int, keep: int) -> None:
        """``seq`` keeps its first ``keep`` positions (``llama_memory_seq_rm(seq, keep, -1)``)."""
        blocks = self._blocks.get(seq, [])
        pos = 0
        for i, block in enumerate(blocks):
            if pos + block.n > keep:
                if keep > pos:
                    self._split(block, keep - pos)
                    i += 1
                for dropped in blocks[i:]:
                    dropped.seqs.discard(seq)
                del blocks[i:]
                break
            pos += block.n
        if not blocks:
            self._blocks.pop(seq, None)

    def copy_prefix(self, src: int, dst: int, n: int) -> None:
        """``dst`` (empty) shares the first ``n`` positions of ``src`` (``seq_cp``)."""
        self.clear(dst)
        taken: list[_Block] = []
        pos = 0
        for block in self._blocks.get(src, []):
            if pos >= n:
                break
            if pos + block.n > n:
                self._split(block, n - pos)
            block.seqs.add(dst)
            taken.append(block)
            pos += block.n
        if taken:
            self._blocks[dst] = taken

    def clear(self, seq: int) -> None:
        """``seq`` holds nothing any more (``llama_memory_seq_rm(seq, -1, -1)``)."""
        for block in self._blocks.pop(seq, []):
            block.seqs.discard(seq)

    def _split(self, block: _Block, k: int) -> None:
        """Cut ``block`` after ``k`` cells, in every sequence that holds it."""
        rest = _Block(block.n - k, set(block.seqs))
        block.n = k
        for seq in block.seqs:
            blocks = self._blocks[seq]
            at = next(i for i, b in enumerate(blocks) if b is block)
            blocks.insert(at + 1, rest)


class SlotState(Enum):
    FREE = "free"  # no cells
    ACTIVE = "active"  # serving a request
    CACHED = "cached"  # finished; its cells are kept for a prompt that starts the same way


@dataclass(eq=False)
class Slot:
    """One llama.cpp sequence id and what its cells hold."""

    seq: int
    state: SlotState = SlotState.FREE
    keys: list[Hashable] = field(default_factory=list)
    last_used: int = 0


def common_prefix(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """Length of the longest common prefix of two key lists."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
