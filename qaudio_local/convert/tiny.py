"""A tiny random Qwen2-Audio checkpoint in the Hugging Face layout, built from scratch.

Same architecture, tensor names and file set as ``Qwen/Qwen2-Audio-7B-Instruct`` (a
Whisper-style audio encoder, a linear projector and a Qwen2 text model), with tiny sizes,
so the converter, the runtime and the parity tests can run on a laptop in seconds. Its
tokenizer is a real byte-level BPE (GPT-2 byte alphabet, merges learned here from a short
embedded English corpus, Qwen2's pre-tokenizer and special tokens), saved both as
``tokenizer.json`` and as ``vocab.json`` + ``merges.txt``.

Only the standard library and numpy are used: this runs inside ``qaudio selftest``, where
torch, transformers and tokenizers are not installed. The same seed gives byte-identical
files.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..config import SPECIAL_TOKENS
from ..errors import ConversionError
from .safetensors_io import write_safetensors
from .tiny_tokenizer import (  # noqa: F401  (re-exported)
    _TRAIN_SPLIT,
    CHAT_TEMPLATE,
    QWEN2_PRETOKENIZE_REGEX,
    _tokenizer_files,
    special_token_ids,
    tiny_vocab_size,
)

__all__ = [
    "CHAT_TEMPLATE",
    "SPECIAL_TOKENS",
    "make_tiny_checkpoint",
    "special_token_ids",
    "tiny_vocab_size",
]

DTYPES = ("float32", "float16", "bfloat16")

AUDIO_DIMS = {"d_model": 64, "layers": 3, "heads": 4, "ffn": 128, "mels": 128, "positions": 1500}
TEXT_DIMS = {"hidden": 256, "ffn": 512, "layers": 2, "heads": 4, "kv_heads": 4}


def _configs(
    dtype: str, audio: Mapping[str, int] | None = None, text: Mapping[str, int] | None = None
) -> dict[str, object]:
    """Return file name -> JSON object for config, generation and preprocessor configs."""
    AUDIO, TEXT = audio or AUDIO_DIMS, text or TEXT_DIMS  # noqa: N806
    ids = special_token_ids()
    audio_config = {
        "model_type": "qwen2_audio_encoder",
        "num_mel_bins": AUDIO["mels"],
        "encoder_layers": AUDIO["layers"],
        "encoder_attention_heads": AUDIO["heads"],
        "encoder_ffn_dim": AUDIO["ffn"],
        "d_model": AUDIO["d_model"],
        "max_source_positions": AUDIO["positions"],
        "dropout": 0.0,
        "attention_dropout": 0.0,
        "activation_function": "gelu",
        "activation_dropout": 0.0,
        "scale_embedding": False,
        "init_std": 0.02,
        "layerdrop": 0.0,
    }
    text_config = {
        "model_type": "qwen2",
        "vocab_size": tiny_vocab_size(),
        "hidden_size": TEXT["hidden"],
        "intermediate_size": TEXT["ffn"],
        "num_hidden_layers": TEXT["layers"],
        "num_attention_heads": TEXT["heads"],
        "num_key_value_heads": TEXT["kv_heads"],
        "max_position_embeddings": 8192,
        "rope_theta": 10000.0,
        "rms_norm_eps": 1e-5,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "use_sliding_window": False,
        "sliding_window": None,
        "max_window_layers": TEXT["layers"],
        "attention_dropout": 0.0,
        "torch_dtype": dtype,
    }
    config = {
        "architectures": ["Qwen2AudioForConditionalGeneration"],
        "model_type": "qwen2_audio",
        "audio_token_index": ids["<|AUDIO|>"],
        "ignore_index": -100,
        "vocab_size": tiny_vocab_size(),
        "tie_word_embeddings": False,
        "torch_dtype": dtype,
        "audio_config": audio_config,
        "text_config": text_config,
    }
    generation = {
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": [ids["<|endoftext|>"], ids["<|im_end|>"]],
        "pad_token_id": ids["<|endoftext|>"],
        "do_sample": False,
    }
    preprocessor = {
        "feature_extractor_type": "WhisperFeatureExtractor",
        "processor_class": "Qwen2AudioProcessor",
        "feature_size": AUDIO["mels"],
        "sampling_rate": 16000,
        "hop_length": 160,
        "chunk_length": 30,
        "n_fft": 400,
        "n_samples": 480000,
        "nb_max_frames": 3000,
        "padding_side": "right",
        "padding_value": 0.0,
        "return_attention_mask": True,
    }
    return {
        "config.json": config,
        "generation_config.json": generation,
        "preprocessor_config.json": preprocessor,
    }


def whisper_sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> np.ndarray:
    """Return Whisper's fixed sinusoidal position table, shape (length, channels), float32.

    Computed in float64 and rounded once, so the bytes do not depend on the platform's
    float32 sin/exp.
    """
    increment = math.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = np.exp(-increment * np.arange(channels // 2, dtype=np.float64))
    scaled = np.arange(length, dtype=np.float64)[:, None] * inv_timescales[None, :]
    return np.concatenate([np.sin(scaled), np.cos(scaled)], axis=1).astype(np.float32)


def _weights(
    seed: int, audio: Mapping[str, int] | None = None, text: Mapping[str, int] | None = None
) -> dict[str, np.ndarray]:
    """Return every tensor of the checkpoint (float32), named as on the hub."""
    AUDIO, TEXT = audio or AUDIO_DIMS, text or TEXT_DIMS  # noqa: N806
    rng = np.random.default_rng(seed)
    w: dict[str, np.ndarray] = {}

    def normal(name: str, shape: tuple[int, ...], std: float, mean: float = 0.0) -> None:
        w[name] = (mean + std * rng.standard_normal(shape)).astype(np.float32)

    def linear(name: str, n_out: int, n_in: int, bias: bool = True) -> None:
        normal(f"{name}.weight", (n_out, n_in), 1.0 / math.sqrt(n_in))
        if bias:
            normal(f"{name}.bias", (n_out,), 0.05)

    def norm(name: str, n: int, bias: bool = True) -> None:
        normal(f"{name}.weight", (n,), 0.05, mean=1.0)
        if bias:
            normal(f"{name}.bias", (n,), 0.05)

    d, mels, h = AUDIO["d_model"], AUDIO["mels"], TEXT["hidden"]
    at = "audio_tower"
    normal(f"{at}.conv1.weight", (d, mels, 3), 1.0 / math.sqrt(mels * 3))
    normal(f"{at}.conv1.bias", (d,), 0.05)
    normal(f"{at}.conv2.weight", (d, d, 3), 1.0 / math.sqrt(d * 3))
    normal(f"{at}.conv2.bias", (d,), 0.05)
    w[f"{at}.embed_positions.weight"] = whisper_sinusoids(AUDIO["positions"], d)
    for i in range(AUDIO["layers"]):
        p = f"{at}.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            linear(f"{p}.self_attn.{proj}", d, d, bias=proj != "k_proj")
        norm(f"{p}.self_attn_layer_norm", d)
        linear(f"{p}.fc1", AUDIO["ffn"], d)
        linear(f"{p}.fc2", d, AUDIO["ffn"])
        norm(f"{p}.final_layer_norm", d)
    norm(f"{at}.layer_norm", d)
    linear("multi_modal_projector.linear", h, d)

    lm = "language_model.model"
    normal(f"{lm}.embed_tokens.weight", (tiny_vocab_size(), h), 0.25)
    for i in range(TEXT["layers"]):
        p = f"{lm}.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj"):
            linear(f"{p}.self_attn.{proj}", h, h)
        linear(f"{p}.self_attn.o_proj", h, h, bias=False)
        linear(f"{p}.mlp.gate_proj", TEXT["ffn"], h, bias=False)
        linear(f"{p}.mlp.up_proj", TEXT["ffn"], h, bias=False)
        linear(f"{p}.mlp.down_proj", h, TEXT["ffn"], bias=False)
        norm(f"{p}.input_layernorm", h, bias=False)
        norm(f"{p}.post_attention_layernorm", h, bias=False)
    norm(f"{lm}.norm", h, bias=False)
    linear("language_model.lm_head", tiny_vocab_size(), h, bias=False)
    return w


def _split_shards(w: dict[str, np.ndarray], shards: int) -> list[list[str]]:
    """Split names (sorted) into ``shards`` non-empty runs of roughly equal bytes."""
    names = sorted(w)
    total = sum(w[n].nbytes for n in names)
    groups: list[list[str]] = [[]]
    done = 0
    for idx, name in enumerate(names):
        left_names, left_groups = len(names) - idx, shards - len(groups)
        full = done >= total * len(groups) / shards
        if groups[-1] and left_groups > 0 and (full or left_names == left_groups):
            groups.append([])
        groups[-1].append(name)
        done += w[name].nbytes
    return groups


def _write_weights(out: Path, w: dict[str, np.ndarray], dtype: str, shards: int) -> None:
    if dtype == "float16":
        w = {k: v.astype(np.float16) for k, v in w.items()}
    bf16, meta = dtype == "bfloat16", {"format": "pt"}
    if shards == 1:
        write_safetensors(out / "model.safetensors", w, meta, bf16=bf16)
        return
    weight_map: dict[str, str] = {}
    for k, names in enumerate(_split_shards(w, shards), start=1):
        fname = f"model-{k:05d}-of-{shards:05d}.safetensors"
        write_safetensors(out / fname, {n: w[n] for n in names}, meta, bf16=bf16)
        weight_map.update(dict.fromkeys(names, fname))
    item = 2 if dtype != "float32" else 4
    index: dict[str, object] = {"metadata": {"total_size": sum(v.size * item for v in w.values())}}
    index["weight_map"] = weight_map
    _dump(out / "model.safetensors.index.json", index)


def _dump(path: Path, obj: object) -> None:
    if isinstance(obj, str):
        path.write_text(obj, encoding="utf-8", newline="\n")
        return
    sort = path.name != "tokenizer.json"  # keep tokenizer.json in the order HF writes it
    text = json.dumps(obj, indent=2, sort_keys=sort, ensure_ascii=False)
    path.write_text(text + "\n", encoding="utf-8", newline="\n")


def make_tiny_checkpoint(
    out_dir: str | Path,
    *,
    seed: int = 0,
    dtype: str = "float32",
    shards: int = 1,
    audio: Mapping[str, int] | None = None,
    text: Mapping[str, int] | None = None,
    base: bool = False,
) -> Path:
    """Write a tiny random Qwen2-Audio checkpoint in Hugging Face layout.

    Args:
        out_dir: The directory to write into (created if missing; files are overwritten).
        seed: Seed for the random weights; the same seed gives byte-identical files.
        dtype: Stored weight type: ``"float32"``, ``"float16"`` or ``"bfloat16"``.
        shards: Number of safetensors files; above 1 they are named
            ``model-0000k-of-0000n.safetensors`` with a ``model.safetensors.index.json``.
        audio: Override encoder sizes (keys of :data:`AUDIO_DIMS`), e.g. the real
            ``{"d_model": 1280, "layers": 32, "heads": 20, "ffn": 5120}`` for benchmarks.
        text: Override text-model sizes (keys of :data:`TEXT_DIMS`).
        base: Shape it like the base model (Qwen2-Audio-7B): no chat template, so that its
            GGUF is prompted in the base format (the audio, then a task prompt).

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.

    Raises:
        ConversionError: If ``dtype`` or ``shards`` is not valid.
    """
    out = Path(out_dir)
    if dtype not in DTYPES:
        raise ConversionError(
            f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}", path=str(out)
        )
    audio_dims, text_dims = {**AUDIO_DIMS, **(audio or {})}, {**TEXT_DIMS, **(text or {})}
    unknown = set(audio_dims) - set(AUDIO_DIMS) | set(text_dims) - set(TEXT_DIMS)
    if unknown:
        raise ConversionError(f"unknown size keys {sorted(unknown)}", path=str(out))
    weights = _weights(seed, audio_dims, text_dims)
    if not 1 <= shards <= len(weights):
        raise ConversionError(
            f"shards must be between 1 and {len(weights)}, not {shards}", path=str(out)
        )
    out.mkdir(parents=True, exist_ok=True)
    for name, obj in {**_configs(dtype, audio_dims, text_dims), **_tokenizer_files(base)}.items():
        _dump(out / name, obj)
    _write_weights(out, weights, dtype, shards)
    return out
