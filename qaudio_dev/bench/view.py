"""Medians, ranges and ratios out of the raw records of one run, for the report."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from qaudio_dev.bench.settings import GIB


def median(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def show(x: float | None, fmt: str = ".2f", suffix: str = "") -> str:
    return "n/a" if x is None else f"{x:{fmt}}{suffix}"


def span(values: list[float], fmt: str = ".2f") -> str:
    """The median, and the range when there is more than one value: ``7.2 (6.9-7.5)``."""
    if not values:
        return "n/a"
    mid = f"{statistics.median(values):{fmt}}"
    return mid if len(values) < 2 else f"{mid} ({min(values):{fmt}}-{max(values):{fmt}})"


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


@dataclass
class View:
    """Medians out of the raw records of one run."""

    doc: dict[str, Any]

    @property
    def records(self) -> list[dict[str, Any]]:
        return [r for r in self.doc["records"] if "error" not in r]

    @property
    def quants(self) -> list[str]:
        return list(self.doc["meta"]["gguf"])

    def errors(self) -> list[str]:
        return [r["error"] for r in self.doc["records"] if "error" in r]

    def pick(self, kind: str, **tags: Any) -> list[dict[str, Any]]:
        return [
            r
            for r in self.records
            if r["kind"] == kind and all(r.get(k) == v for k, v in tags.items())
        ]

    def clips(self, side: str, seconds: float, key: str) -> list[float]:
        kind = "hf" if side.startswith("transformers") else "ttft"
        rows = [c for r in self.pick(kind, side=side) for c in r["clips"]]
        return [c[key] for c in rows if c["seconds"] == seconds and c.get(key) is not None]

    def clip(self, side: str, seconds: float, key: str) -> float | None:
        return median(self.clips(side, seconds, key))

    def values(self, kind: str, key: str, **tags: Any) -> list[float]:
        return [r[key] for r in self.pick(kind, **tags) if r.get(key) is not None]

    def rss(self, kind: str, **tags: Any) -> float | None:
        rows = self.pick(kind, **tags)
        return max(r["rss"] for r in rows) / GIB if rows else None

    def value(self, kind: str, key: str, **tags: Any) -> float | None:
        return median(r.get(key) for r in self.pick(kind, **tags))

    def paired(self, quant: str) -> list[float]:
        """engine / Llama of every turn taken in one process (all rounds)."""
        return [a / b for r in self.pick("pair", quant=quant) for a, b in r["pairs"] if b]

    def copy_bps(self) -> float | None:
        rows = self.pick("copy")
        return max(r["copy_bps"] for r in rows) if rows else None
