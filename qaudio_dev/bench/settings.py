"""What every part of the benchmark shares: its constants, the model's sizes, a run's
settings, the rotating order of the sides, and how a child process is started."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qaudio_dev.synthetic import SMALL_AUDIO

SMOKE_TEXT = {"hidden": 256, "heads": 4, "kv_heads": 4, "ffn": 512}
FULL_LAYERS = 32
QUANTS = ("F16", "Q8_0", "Q4_K_M")
PARALLEL = (1, 2, 4, 8)
ALTERNATIONS = 4  # turns of the engine and Llama in one process, per decode round
PROMPT = "Describe the audio."
AUDIO_MARKER = "<|audio_bos|><|AUDIO|><|audio_eos|>"  # what Qwen2AudioProcessor expands
N_BATCH = 512
PREFILL_CLIP_S = 30.0  # 750 audio tokens on the faithful path
BEGIN, END = "<!-- bench:start", "<!-- bench:end -->"
GIB = float(1 << 30)
SMOKE_AUDIO = SMALL_AUDIO  # the smoke run's encoder, and the stand-in projector's


@dataclass(frozen=True)
class Sizes:
    """The synthetic model's dimensions; ``vocab=None`` keeps the tiny tokenizer's own."""

    audio: dict[str, int]
    text: dict[str, int]
    vocab: int | None

    @property
    def name(self) -> str:
        a, t = self.audio, self.text
        return f"a{a['d_model']}x{a['layers']}-t{t['hidden']}x{t['layers']}-v{self.vocab or 0}"


@dataclass(frozen=True)
class Settings:
    work: Path
    layers: int
    threads: int
    repeats: int
    decode_repeats: int
    tokens: int
    answer: int
    clips: tuple[float, ...]
    quants: tuple[str, ...]
    e2e_quant: str
    parallel_quant: str
    hf: bool
    smoke: bool
    copy_mib: int


def rotated(items: list[Any], r: int) -> list[Any]:
    """The sides in another order each repeat, so that none always runs first."""
    k = r % len(items)
    return items[k:] + items[:k]


def child_command(kind: str) -> list[str]:
    """The command line of a child that measures ``kind`` (its spec JSON comes last)."""
    return [sys.executable, "-m", "qaudio_dev.bench.children", kind]
