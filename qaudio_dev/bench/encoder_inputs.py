"""The encoder benchmark's inputs: a synthetic Qwen2-Audio with the real encoder, its
projector in every weight type the project's encoder runs, and a Whisper-large-v3-shaped
model converted for CTranslate2 and written for whisper.cpp (built once into the work
folder; a later run reuses them)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qaudio_dev.synthetic import REAL_AUDIO, REAL_TEXT, SMALL_AUDIO, build_synthetic, stamped

# one text layer of the real width: the projector's output (4096) is real, the rest small
WIDE_TEXT = {**REAL_TEXT, "layers": 1, "ffn": 256}
SMOKE_TEXT = {"hidden": 256, "heads": 4, "kv_heads": 4, "ffn": 256, "layers": 1}
WHISPER_CPP_TYPES = ("F16", "Q8_0")  # whisper.cpp's usual, and its int8 one
MATMUL_WEIGHTS = ("attn_q", "attn_k", "attn_v", "attn_out", "ffn_up", "ffn_down", "mm.a.fc")


@dataclass(frozen=True)
class EncoderInputs:
    spec: dict[str, Any]  # what every side's child reads (paths)
    dims: dict[str, int]
    ct2_types: tuple[str, ...]  # CTranslate2's compute types on this CPU (empty: not installed)
    wcpp_types: tuple[str, ...] = ()  # whisper.cpp model files written (empty: see wcpp_missing)
    wcpp_missing: str = ""  # why whisper.cpp is left out, if it is


def is_matmul_weight(name: str) -> bool:
    """The projector's matrix-product weights (not the convolutions, norms, positions)."""
    return name.endswith(".weight") and any(k in name for k in MATMUL_WEIGHTS)


def projector_variants(f16: Path, folder: Path) -> dict[str, Path]:
    """The F16 projector rewritten with its matrix weights in F32, BF16 and Q8_0."""
    from qaudio_dev import gguf_edit

    out = {"F16": f16}
    for name in ("F32", "BF16", "Q8_0"):
        dst = folder / f"mmproj-{name}.gguf"
        qt = int(getattr(gguf_edit.QT, name))

        def make(dst: Path = dst, qt: int = qt) -> dict[str, Any]:
            gguf_edit.rewrite(f16, dst, tensors=gguf_edit.retype(is_matmul_weight, qt))
            return {"path": dst.name}

        stamped(folder / f"mmproj-{name}.complete.json", make)
        out[name] = dst
    return out


def whisper_hf(folder: Path, audio: dict[str, int]) -> Path:
    """A random Whisper with this encoder (one decoder layer), saved in F16 by transformers
    into ``folder / "whisper-hf"``: what the CTranslate2 and whisper.cpp models are made of.

    Its MLP is 4 x d_model, as in every released Whisper and as whisper.cpp's loader
    assumes (the real encoder's 5120; the smoke dims' 128 becomes 256 here).
    """
    out = folder / "whisper-hf"

    def make() -> dict[str, Any]:
        if (folder / "whisper-ct2.complete.json").is_file():
            return {"path": out.name}  # an earlier run made it (before this stamp existed)
        import torch
        from transformers import WhisperConfig, WhisperForConditionalGeneration

        torch.manual_seed(0)
        ffn = 4 * audio["d_model"]
        cfg = WhisperConfig(
            vocab_size=51866,
            num_mel_bins=128,
            d_model=audio["d_model"],
            encoder_layers=audio["layers"],
            encoder_attention_heads=audio["heads"],
            encoder_ffn_dim=ffn,
            decoder_layers=1,
            decoder_attention_heads=audio["heads"],
            decoder_ffn_dim=ffn,
        )
        WhisperForConditionalGeneration(cfg).half().save_pretrained(out)
        return {"path": out.name}

    stamped(folder / "whisper-hf.complete.json", make)
    return out


def whisper_for_ct2(folder: Path, audio: dict[str, int]) -> Path | None:
    """The random Whisper (:func:`whisper_hf`) converted by CTranslate2's own converter;
    ``None`` when ctranslate2 is not installed."""
    try:
        import ctranslate2  # noqa: F401
    except ImportError:
        return None
    out = folder / "whisper-ct2"

    def make() -> dict[str, Any]:
        import ctranslate2.converters

        hf = whisper_hf(folder, audio)
        conv = ctranslate2.converters.TransformersConverter(str(hf), load_as_float16=True)
        conv.convert(str(out), quantization="float16", force=True)
        return {"path": out.name}

    stamped(folder / "whisper-ct2.complete.json", make)
    return out


def whisper_for_cpp(folder: Path, audio: dict[str, int]) -> tuple[dict[str, Path], str]:
    """The random Whisper (:func:`whisper_hf`) in whisper.cpp's own format, F16 and Q8_0.

    Returns:
        The files by weight type, and why they are missing when they are (empty: none).
    """
    from qaudio_dev.bench.whisper_cpp import library_path
    from qaudio_dev.bench.whisper_ggml import whisper_cpp_model

    try:
        library_path()
    except ImportError as e:
        return {}, f"whisper.cpp: {e}"
    whisper_hf(folder, audio)
    return {t: whisper_cpp_model(folder, t) for t in WHISPER_CPP_TYPES}, ""


def build_inputs(folder: Path, *, smoke: bool, log: Callable[[str], None]) -> EncoderInputs:
    audio = SMALL_AUDIO if smoke else REAL_AUDIO
    text = SMOKE_TEXT if smoke else WIDE_TEXT
    folder.mkdir(parents=True, exist_ok=True)
    log(f"building the inputs in {folder} (reused if an earlier --keep run built them)")
    synth = build_synthetic(folder / "qwen2-audio", audio, text)
    projectors = projector_variants(synth.mmproj, folder)
    ct2 = whisper_for_ct2(folder, audio)
    wcpp, wcpp_missing = whisper_for_cpp(folder, audio)
    types: tuple[str, ...] = ()
    if ct2 is not None:
        import ctranslate2

        types = tuple(sorted(ctranslate2.get_supported_compute_types("cpu")))
    spec = {
        "checkpoint": str(synth.ckpt),
        "projectors": {k: str(v) for k, v in projectors.items()},
        "ct2_model": str(ct2) if ct2 else None,
        "wcpp_models": {k: str(v) for k, v in wcpp.items()},
    }
    return EncoderInputs(spec, {**audio}, types, tuple(wcpp), wcpp_missing)
