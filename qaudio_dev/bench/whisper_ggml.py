"""whisper.cpp's own model file, written from a Hugging Face Whisper checkpoint.

whisper.cpp (1.8.5, the release the pywhispercpp wheel bundles) loads only its legacy
"ggml" binary format, whose converter ships with whisper.cpp's sources, not with the wheel.
:func:`write_model` writes that format from the F16 safetensors checkpoint the encoder
benchmark already makes (``whisper-hf/``), so whisper.cpp runs the very weights that
transformers and CTranslate2 run. The layout, as ``whisper_model_load`` reads it (all
integers int32, little-endian):

1. the magic ``0x67676d6c`` ("ggml");
2. the hyper-parameters: n_vocab, n_audio_ctx, n_audio_state, n_audio_head,
   n_audio_layer, n_text_ctx, n_text_state, n_text_head, n_text_layer, n_mels, ftype
   (a quantized file adds 1000 x the quantization version, 2, as whisper.cpp's quantizer
   writes it);
3. the mel filterbank: n_mel, n_fft, then n_mel x n_fft float32 (used only when
   whisper.cpp computes the log-mel itself);
4. the vocabulary: a count, then each token as a byte length and its bytes; the loader
   names the special tokens after them itself. Placeholder tokens here (the weights are
   random: there is no text to spell);
5. every tensor: n_dims, name length, ggml type, the dims innermost first, the name, the
   data. Names are whisper.cpp's (OpenAI's original ones: ``encoder.blocks.3.attn.query
   .weight``); the convolution biases are stored as (n, 1).

The loader fixes each tensor's type from the file's ftype, and refuses a file whose
tensor sizes disagree: norms, biases and both positional embeddings are F32; the
convolution kernels F16; every other matrix, the token embedding included, is of the
file's type: F16, or Q8_0 blocks made by ``gguf.quants`` (bit-exact with ggml's reference
quantizer) from the F16 weights widened to F32, as whisper.cpp's own quantizer does. (An
F32 file would need F32 convolution kernels, which this release's CPU convolution, an F16
im2col, aborts on; so it is not offered.) The loader also takes the MLP width to be
4 x n_audio_state, as in every released Whisper.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from qaudio_dev.synthetic import stamped

MAGIC = 0x67676D6C
QNT_VERSION = 2  # ggml's GGML_QNT_VERSION, x 1000 in a quantized file's ftype
FTYPES = {"F16": 1, "Q8_0": 7}  # ggml_ftype: the file's "mostly" type
GGML_TYPES = {"F32": 0, "F16": 1, "Q8_0": 8}  # ggml_type of each stored tensor
N_TEXT_TOKENS = 50257  # GPT-2's byte-level BPE, before Whisper's special tokens
MULTILINGUAL_VOCAB = 51865  # whisper.cpp's threshold: from here on, one more text token

# Hugging Face's names inside a layer -> whisper.cpp's (models/convert-h5-to-ggml.py's map)
LAYER_PARTS = {
    "self_attn.q_proj": "attn.query",
    "self_attn.k_proj": "attn.key",
    "self_attn.v_proj": "attn.value",
    "self_attn.out_proj": "attn.out",
    "self_attn_layer_norm": "attn_ln",
    "encoder_attn.q_proj": "cross_attn.query",
    "encoder_attn.k_proj": "cross_attn.key",
    "encoder_attn.v_proj": "cross_attn.value",
    "encoder_attn.out_proj": "cross_attn.out",
    "encoder_attn_layer_norm": "cross_attn_ln",
    "fc1": "mlp.0",
    "fc2": "mlp.2",
    "final_layer_norm": "mlp_ln",
}
TOP_LEVEL = {
    "encoder.conv1.weight": "encoder.conv1.weight",
    "encoder.conv1.bias": "encoder.conv1.bias",
    "encoder.conv2.weight": "encoder.conv2.weight",
    "encoder.conv2.bias": "encoder.conv2.bias",
    "encoder.embed_positions.weight": "encoder.positional_embedding",
    "encoder.layer_norm.weight": "encoder.ln_post.weight",
    "encoder.layer_norm.bias": "encoder.ln_post.bias",
    "decoder.embed_positions.weight": "decoder.positional_embedding",
    "decoder.embed_tokens.weight": "decoder.token_embedding.weight",
    "decoder.layer_norm.weight": "decoder.ln.weight",
    "decoder.layer_norm.bias": "decoder.ln.bias",
}
ALWAYS_F32 = {
    "encoder.positional_embedding",
    "decoder.positional_embedding",
    "encoder.conv1.bias",
    "encoder.conv2.bias",
}


def whisper_cpp_name(hf_name: str) -> str | None:
    """whisper.cpp's name for a checkpoint tensor; ``None`` for one it does not load
    (the output projection, tied to the token embedding)."""
    name = hf_name.removeprefix("model.")
    if name in TOP_LEVEL:
        return TOP_LEVEL[name]
    parts = name.split(".")
    if len(parts) >= 5 and parts[0] in ("encoder", "decoder") and parts[1] == "layers":
        inner = ".".join(parts[3:-1])
        if inner in LAYER_PARTS:
            return f"{parts[0]}.blocks.{parts[2]}.{LAYER_PARTS[inner]}.{parts[-1]}"
    if name == "proj_out.weight":
        return None
    raise ValueError(f"{hf_name}: no whisper.cpp name for this tensor")


def stored_type(name: str, ndim: int, wtype: str) -> str:
    """The type whisper.cpp's loader expects for tensor ``name`` in a ``wtype`` file."""
    if ndim < 2 or name in ALWAYS_F32:
        return "F32"
    if name in ("encoder.conv1.weight", "encoder.conv2.weight"):
        return "F16"
    return wtype


def _tensor_bytes(data: np.ndarray, kind: str) -> bytes:
    if kind == "Q8_0":
        from gguf import GGMLQuantizationType
        from gguf.quants import quantize

        return quantize(data.astype(np.float32), GGMLQuantizationType.Q8_0).tobytes()
    dtype = np.float32 if kind == "F32" else np.float16
    return np.ascontiguousarray(data, dtype=dtype).tobytes()


def _hf_tensors(hf_dir: Path) -> Iterator[tuple[str, np.ndarray]]:
    """Every tensor of the checkpoint's safetensors file(s), one at a time."""
    from safetensors import safe_open

    files = sorted(hf_dir.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{hf_dir}: no .safetensors file")
    for path in files:
        with safe_open(str(path), framework="numpy") as f:
            names: list[str] = f.keys()  # a safetensors handle is not iterable
            for key in names:
                yield key, f.get_tensor(key)


def _hparams(cfg: dict[str, Any], wtype: str) -> list[int]:
    d = cfg["d_model"]
    for side in ("encoder", "decoder"):
        if cfg[f"{side}_ffn_dim"] != 4 * d:
            raise ValueError(
                f"{side}_ffn_dim {cfg[f'{side}_ffn_dim']}: whisper.cpp's loader assumes an MLP"
                f" of 4 x d_model = {4 * d}"
            )
    ftype = FTYPES[wtype] + (QNT_VERSION * 1000 if wtype == "Q8_0" else 0)
    return [
        cfg["vocab_size"],
        cfg["max_source_positions"],
        d,
        cfg["encoder_attention_heads"],
        cfg["encoder_layers"],
        cfg["max_target_positions"],
        d,
        cfg["decoder_attention_heads"],
        cfg["decoder_layers"],
        cfg["num_mel_bins"],
        ftype,
    ]


def _write_filters(out: BinaryIO, n_mels: int) -> None:
    from qaudio_local.audio.features import mel_filters

    bank = mel_filters()  # (128, 201): Whisper's Slaney filterbank
    if bank.shape[0] != n_mels:
        raise ValueError(f"{n_mels} mel bins: the project's filterbank has {bank.shape[0]}")
    out.write(struct.pack("<2i", *bank.shape))
    out.write(bank.astype("<f4").tobytes())


def _write_vocab(out: BinaryIO, n_vocab: int) -> None:
    n_text = N_TEXT_TOKENS + (1 if n_vocab >= MULTILINGUAL_VOCAB else 0)
    if n_vocab <= n_text:
        raise ValueError(f"vocab_size {n_vocab}: Whisper's is at least {n_text + 1}")
    out.write(struct.pack("<i", n_text))
    for i in range(n_text):
        token = f"<|tok{i}|>".encode()
        out.write(struct.pack("<I", len(token)) + token)


def write_model(hf_dir: Path, dst: Path, wtype: str = "F16") -> dict[str, Any]:
    """Write whisper.cpp's model file for the checkpoint in ``hf_dir`` to ``dst``.

    Written to a temporary file beside ``dst`` and renamed, so ``dst`` is complete or
    absent. Returns a summary: the tensor count and the bytes written.
    """
    if wtype not in FTYPES:
        raise ValueError(f"{wtype}: not one of {', '.join(FTYPES)}")
    cfg = json.loads((hf_dir / "config.json").read_text())
    tmp = dst.with_name(dst.name + ".tmp")
    n_tensors = 0
    try:
        with tmp.open("wb") as out:
            out.write(struct.pack("<I", MAGIC))
            out.write(struct.pack("<11i", *_hparams(cfg, wtype)))
            _write_filters(out, cfg["num_mel_bins"])
            _write_vocab(out, cfg["vocab_size"])
            for hf_name, data in _hf_tensors(hf_dir):
                name = whisper_cpp_name(hf_name)
                if name is None:
                    continue
                if name in ("encoder.conv1.bias", "encoder.conv2.bias"):
                    data = data.reshape(-1, 1)
                kind = stored_type(name, data.ndim, wtype)
                raw = name.encode()
                dims = data.shape[::-1]  # ggml lists the innermost (fastest) dim first
                out.write(struct.pack("<3i", data.ndim, len(raw), GGML_TYPES[kind]))
                out.write(struct.pack(f"<{data.ndim}i", *dims) + raw)
                out.write(_tensor_bytes(data, kind))
                n_tensors += 1
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return {"path": dst.name, "tensors": n_tensors, "bytes": dst.stat().st_size}


def whisper_cpp_model(folder: Path, wtype: str) -> Path:
    """whisper.cpp's ``wtype`` file of ``folder / "whisper-hf"``, written once into
    ``folder`` (a later run with the same folder reuses it)."""
    dst = folder / f"whisper-cpp-{wtype}.bin"
    stamped(
        folder / f"whisper-cpp-{wtype}.complete.json",
        lambda: write_model(folder / "whisper-hf", dst, wtype),
    )
    return dst
