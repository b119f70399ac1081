"""The tools the schema in :mod:`.schema` is written with.

:class:`Meta` reads a scanned file's metadata by key with the GGUF type and range it must
have (remembering what was read, so that :meth:`Meta.closed` can refuse any key nobody
reads); :class:`TensorRule` and :func:`check_tensors` hold every tensor to its name, shape
and ggml types. Every refusal is a :class:`~qaudio_local.errors.ModelFileError` naming the
file, the key or tensor, and what to do.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ...errors import ModelFileError
from .scan import (
    ARRAY,
    BOOL,
    FLOAT32,
    INT32,
    STRING,
    TYPE_NAMES,
    UINT16,
    UINT32,
    GGUFScan,
    ggml_type_name,
)

ADVICE = (
    "the file is damaged or was not made for Qwen2-Audio; convert it again "
    "(`qaudio convert`) or download it again"
)


@dataclass(frozen=True)
class TensorRule:
    """A tensor the schema allows: its ggml shape, allowed types, and whether it must exist.

    ``min_last`` makes the last dimension a minimum instead of an exact size.
    """

    shape: tuple[int, ...]
    types: frozenset[int]
    required: bool = True
    min_last: bool = False

    def fits(self, shape: tuple[int, ...]) -> bool:
        if len(shape) != len(self.shape):
            return False
        if not self.min_last:
            return shape == self.shape
        return shape[:-1] == self.shape[:-1] and shape[-1] >= self.shape[-1]


class Meta:
    """Typed, range-checked reads of a scanned file's metadata; remembers what was read.

    Args:
        scan: The file's header.
        label: How the file is named in messages, e.g. ``"model file /m/x.gguf"``.
    """

    def __init__(self, scan: GGUFScan, label: str) -> None:
        self.scan, self.label = scan, label
        self.read: set[str] = set()

    def fail(self, problem: str, advice: str = ADVICE) -> ModelFileError:
        """The error to raise: the file, what is wrong with it, and what to do."""
        return ModelFileError(f"{self.label} {problem}; {advice}", path=str(self.scan.path))

    def get(self, key: str, vtype: int, required: bool, item: int | None = None) -> Any:
        """The raw value of ``key`` if it has type ``vtype`` (array of ``item``), else fail."""
        self.read.add(key)
        entry = self.scan.kv.get(key)
        if entry is None:
            if required:
                raise self.fail(f"lacks {key}")
            return None
        want = TYPE_NAMES[vtype] if item is None else f"ARRAY[{TYPE_NAMES[item]}]"
        if entry.type != vtype or entry.item_type != item:
            raise self.fail(f"stores {key} as {entry.type_name()}, but it must be {want}")
        return entry.value

    def uint(
        self, key: str, lo: int = 1, hi: int = 2**32 - 1, required: bool = True, vtype: int = UINT32
    ) -> int | None:
        value = self.get(key, vtype, required)
        if value is None:
            return None
        if not lo <= int(value) <= hi:
            bound = f"{lo}" if lo == hi else f"from {lo} to {hi}"
            raise self.fail(f"has {key} = {value}, but it must be {bound}")
        return int(value)

    def real(self, key: str, lo: float, hi: float, required: bool = True) -> float | None:
        """A FLOAT32 strictly between ``lo`` and ``hi`` (NaN and infinities refused)."""
        value = self.get(key, FLOAT32, required)
        if value is None:
            return None
        if not (math.isfinite(value) and lo < value < hi):
            raise self.fail(f"has {key} = {value!r}, but it must lie between {lo:g} and {hi:g}")
        return float(value)

    def text(self, key: str, required: bool = True, choices: Iterable[str] = ()) -> str | None:
        raw = self.get(key, STRING, required)
        if raw is None:
            return None
        try:
            value = str(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise self.fail(f"stores {key} as text that is not valid UTF-8") from None
        allowed = tuple(choices)
        if allowed and value not in allowed:
            raise self.fail(
                f"has {key} = {value[:60]!r}, but this runtime takes {' or '.join(allowed)}"
            )
        return value

    def flag(self, key: str, required: bool = False) -> bool | None:
        value = self.get(key, BOOL, required)
        return None if value is None else bool(value)

    def strings(self, key: str, required: bool = True) -> list[bytes] | None:
        value = self.get(key, ARRAY, required, item=STRING)
        return None if value is None else list(value)

    def numbers(self, key: str, items: tuple[int, ...], required: bool = False) -> Any:
        self.read.add(key)
        entry = self.scan.kv.get(key)
        if entry is None:
            if required:
                raise self.fail(f"lacks {key}")
            return None
        if entry.type != ARRAY or entry.item_type not in items:
            want = " or ".join(f"ARRAY[{TYPE_NAMES[i]}]" for i in items)
            raise self.fail(f"stores {key} as {entry.type_name()}, but it must be {want}")
        return entry.value

    def closed(self, prefixes: tuple[str, ...], what: str) -> None:
        """Refuse any key under ``prefixes`` that the schema did not read."""
        for key in self.scan.kv:
            if key.startswith(prefixes) and key not in self.read:
                raise self.fail(
                    f"holds {key}, a setting {what} does not have (llama.cpp would read it "
                    "and may abort)"
                )

    def general(self) -> None:
        """The general.* and split.* keys llama.cpp reads, for either file."""
        self.text("general.name", required=False)
        self.text("general.type", required=False, choices=("model", "mmproj"))
        self.uint("general.alignment", lo=1, hi=1 << 16, required=False)  # a power of 2 (scan)
        self.uint("general.file_type", lo=0, required=False)
        self.uint("general.quantization_version", lo=0, required=False)
        count = self.uint("split.count", lo=0, hi=1 << 16, required=False, vtype=UINT16)
        if count is not None and count > 1:
            raise self.fail(
                f"is one of {count} split parts (split.count)",
                "merge them first: `llama-gguf-split --merge`",
            )
        self.uint("split.no", lo=0, hi=0, required=False, vtype=UINT16)
        # INT32, as gguf-py's writer and llama-gguf-split write it (a merged file keeps it
        # with split.count = 0) and as llama.cpp reads it
        self.uint("split.tensors.count", lo=0, hi=1 << 20, required=False, vtype=INT32)
        self.closed(("split.",), "a single GGUF file")


def check_tensors(meta: Meta, rules: dict[str, TensorRule], what: str) -> None:
    """Every tensor must be one ``rules`` allows, with its shape and types; none missing."""
    for t in meta.scan.tensors:
        rule = rules.get(t.name)
        if rule is None:
            raise meta.fail(f"holds a tensor {t.name}, which {what} does not have")
        if not rule.fits(t.shape):
            dims = [str(x) for x in rule.shape]
            if rule.min_last:
                dims[-1] = f"at least {dims[-1]}"
            raise meta.fail(
                f"is inconsistent: tensor {t.name} has shape {t.shape} but its metadata "
                f"implies ({', '.join(dims)})"
            )
        if t.ggml_type not in rule.types:
            names = ", ".join(ggml_type_name(x) for x in sorted(rule.types)[:6])
            more = " ..." if len(rule.types) > 6 else ""
            raise meta.fail(
                f"stores tensor {t.name} as {t.type_name}, but llama.cpp needs {names}{more} there"
            )
    for name, rule in rules.items():
        if rule.required and name not in meta.scan.by_name:
            raise meta.fail(f"lacks tensor {name}; it is incomplete")
