"""Synthetic Qwen2-Audio models of any width, up to the real one, for the benchmarks.

:func:`build_synthetic` is the one builder every benchmark uses (``scripts/bench.py``,
``bench_engine.py``, ``bench_encoder.py``, ``bench_longform.py --real``): the tiny model's
generator (:func:`qaudio_local.convert.tiny.make_tiny_checkpoint`) with the dimensions asked
(random weights, F16), widened to a real vocabulary if asked, then converted by the
project's converter to each GGUF type asked. Each finished step leaves a stamp file, so a
later run reuses what an earlier one finished and an interrupted one redoes only its
unfinished step. Layout of ``folder``::

    qwen2-audio-synth/          the checkpoint (Hugging Face layout)
    ckpt.complete.json          its stamp
    gguf-F16/                   text model and projector (the first type keeps the projector)
    gguf-Q4_K_M/ ...            the text model only
"""

from __future__ import annotations

import json
import math
import os
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REAL_AUDIO = {"d_model": 1280, "layers": 32, "heads": 20, "ffn": 5120}
REAL_TEXT = {"hidden": 4096, "heads": 32, "kv_heads": 32, "ffn": 11008}  # 32 layers
REAL_VOCAB = 156_032
SMALL_AUDIO = {"d_model": 64, "layers": 3, "heads": 4, "ffn": 128}


@dataclass(frozen=True)
class Synthetic:
    """A built synthetic model."""

    ckpt: Path
    gguf: dict[str, Path]  # GGUF type (as asked) -> text model
    mmproj: Path  # the F16 projector
    built_s: float  # seconds this call spent building (0.0 when everything was cached)


def build_synthetic(
    folder: Path,
    audio: dict[str, int],
    text: dict[str, int],
    *,
    vocab: int | None = None,
    quants: Sequence[str] = ("F16",),
) -> Synthetic:
    """Build (once) a synthetic checkpoint and its GGUFs in ``folder``; reuse them later.

    Args:
        folder: Where the model lives (created if needed); one folder per set of sizes.
        audio: Encoder dimensions (``d_model``, ``layers``, ``heads``, ``ffn``).
        text: Text model dimensions (``hidden``, ``layers``, ``heads``, ``kv_heads``,
            ``ffn``).
        vocab: Rows of the embedding and output matrices (``REAL_VOCAB`` for the real
            156032); ``None`` keeps the tiny tokenizer's own.
        quants: Text GGUF types, as ``convert_checkpoint`` takes them; the first one's
            folder keeps the (F16) projector.

    Returns:
        The checkpoint, the text GGUF of each type, the projector, and the build time.
    """
    from qaudio_local.convert import convert_checkpoint
    from qaudio_local.convert.tiny import make_tiny_checkpoint

    t0 = time.perf_counter()
    built = False
    ckpt = folder / "qwen2-audio-synth"

    def make() -> dict[str, Any]:
        make_tiny_checkpoint(ckpt, dtype="float16", audio=audio, text=text)
        if vocab:
            widen_vocab(ckpt, vocab)
        return {"audio": audio, "text": text, "vocab": vocab}

    built |= stamped(folder / "ckpt.complete.json", make)[1]
    gguf: dict[str, Path] = {}
    mmproj: Path | None = None
    for quant in quants:
        out = folder / f"gguf-{quant}"
        first = mmproj is None

        def convert(out: Path = out, quant: str = quant, first: bool = first) -> dict[str, Any]:
            res = convert_checkpoint(ckpt, out, outtype=quant, mmproj_outtype="f16")
            if not first:
                res.mmproj_path.unlink()
            return {"model": res.model_path.name, "mmproj": res.mmproj_path.name}

        info, done = stamped(out / ".complete.json", convert)
        built |= done
        gguf[quant] = out / info["model"]
        if first:
            mmproj = out / info["mmproj"]
    if mmproj is None:
        raise ValueError("build_synthetic needs at least one GGUF type")
    return Synthetic(ckpt, gguf, mmproj, time.perf_counter() - t0 if built else 0.0)


def stamped(stamp: Path, build: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], bool]:
    """Run ``build`` unless ``stamp`` says that an earlier run finished it.

    Returns:
        What ``build`` returned (now or then), and whether it ran now.
    """
    ran = not stamp.is_file()
    if ran:
        info = build()
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(json.dumps(info))
    return json.loads(stamp.read_text()), ran


def _mapped_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of an F16 safetensors file as a read-only memory map (nothing is read)."""
    with path.open("rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    out: dict[str, np.ndarray] = {}
    for name, entry in header.items():
        if entry["dtype"] != "F16":
            raise SystemExit(f"{path}: {name} is {entry['dtype']}, expected F16")
        begin = 8 + n + entry["data_offsets"][0]
        out[name] = np.memmap(path, "<f2", mode="r", offset=begin, shape=tuple(entry["shape"]))
    return out


def widen_vocab(ckpt: Path, rows: int, seed: int = 7) -> None:
    """Give the checkpoint ``rows`` embedding and output rows (the real 156032).

    ``make_tiny_checkpoint`` sizes the vocabulary to its own small tokenizer and takes no
    override, so the rows beyond it are added here, random; the converter pads the token
    list with unused entries, as it does for the real model's 151646 tokens.
    """
    from qaudio_local.convert.safetensors_io import write_safetensors

    path = ckpt / "model.safetensors"
    tensors = _mapped_safetensors(path)
    rng = np.random.default_rng(seed)
    for name in ("language_model.model.embed_tokens.weight", "language_model.lm_head.weight"):
        old = tensors[name]
        std = 0.25 if "embed" in name else 1.0 / math.sqrt(old.shape[1])
        new = np.empty((rows, old.shape[1]), np.float16)
        new[: old.shape[0]] = old
        for start in range(old.shape[0], rows, 8192):
            stop = min(rows, start + 8192)
            block = rng.standard_normal((stop - start, old.shape[1]), dtype=np.float32)
            new[start:stop] = block * std
        tensors[name] = new
    tmp = path.with_name("model.safetensors.widened")
    write_safetensors(tmp, tensors, {"format": "pt"})
    del tensors
    os.replace(tmp, path)
    config = json.loads((ckpt / "config.json").read_text())
    config["vocab_size"] = config["text_config"]["vocab_size"] = rows
    (ckpt / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
