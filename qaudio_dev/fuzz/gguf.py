"""GGUF fuzz cases: the tiny pair with one mutation (truncation, byte flips, metadata and
tensor-info edits, hostile counts, vocabulary damage) through the GGUF checks, then loaded
and run on one audio path."""

from __future__ import annotations

import math
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from qaudio_dev.fuzz.common import SAMPLE_RATE, classify_exception, pick_one

_TEXT_INT_KEYS = [
    "qwen2.block_count",
    "qwen2.embedding_length",
    "qwen2.feed_forward_length",
    "qwen2.attention.head_count",
    "qwen2.attention.head_count_kv",
    "qwen2.context_length",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.padding_token_id",
    "general.file_type",
]
_CLIP_INT_KEYS = [
    "clip.audio.block_count",
    "clip.audio.embedding_length",
    "clip.audio.feed_forward_length",
    "clip.audio.attention.head_count",
    "clip.audio.projection_dim",
    "clip.audio.num_mel_bins",
]
_FLOAT_KEYS = {
    "text": ["qwen2.attention.layer_norm_rms_epsilon", "qwen2.rope.freq_base"],
    "mmproj": ["clip.audio.attention.layer_norm_epsilon"],
}
_EXTRA_KEYS = {
    "text": [
        "qwen2.rope.dimension_count",
        "qwen2.attention.key_length",
        "qwen2.expert_count",
        "qwen2.rope.scaling.type",
        "qwen2.rope.scaling.factor",
        "general.alignment",
        "tokenizer.ggml.model",
        "tokenizer.ggml.pre",
        "split.count",
        "qwen2.attention.causal",
        "qwen2.vocab_size",
    ],
    "mmproj": [
        "clip.has_vision_encoder",
        "clip.audio.attention.head_count_kv",
        "clip.audio.attention.head_dim",
        "clip.projector_type",
        "clip.use_gelu",
        "clip.audio.feature_layer",
        "general.alignment",
    ],
}
_HOSTILE_INTS = [0, 1, 2, 3, 31, 63, 64, 128, 1500, 2**16, 2**31 - 1, 2**31, 2**32 - 1]
_HOSTILE_FLOATS = [math.nan, -1.0, 0.0, -0.0, math.inf, -math.inf, 1e-45, 1e38, 1.0, 1e-5]


def _value_for(rng: np.random.Generator, key: str) -> Any:
    """A hostile (value, type, element type) for metadata ``key``."""
    from qaudio_dev.gguf_edit import VT

    pick = int(rng.integers(8))
    if pick == 0:
        value = int(pick_one(rng, _HOSTILE_INTS))  # drawn first, then the type
        return (value, VT.INT32 if rng.random() < 0.5 else VT.UINT64, None)
    if pick == 1:
        return ("qwen2" if rng.random() < 0.3 else "x" * int(rng.integers(0, 40)), VT.STRING, None)
    if pick == 2:
        return ([1, 2, 3], VT.ARRAY, VT.UINT32)
    if pick == 3:
        return (float(pick_one(rng, _HOSTILE_FLOATS)), VT.FLOAT32, None)
    if pick == 4:
        return (bool(rng.random() < 0.5), VT.BOOL, None)
    if pick == 5:
        return (["none", "yarn", "gpt2", "llama", "qwen2a", "bert"][int(rng.integers(6))],
                VT.STRING, None)  # fmt: skip
    return (int(pick_one(rng, _HOSTILE_INTS)) % 2**32, VT.UINT32, None)


def _mutate_pair(case: dict[str, Any], pair: tuple[Path, Path], tmp: Path) -> tuple[Path, Path]:
    """The pair with one mutation applied to one file (chosen by ``seed``)."""
    from qaudio_dev import gguf_edit as ge

    rng = np.random.default_rng(case["seed"])
    family = case["family"]
    target = "text" if rng.random() < 0.5 else "mmproj"
    src = pair[0] if target == "text" else pair[1]
    dst = tmp / f"{target}-{case['seed']}.gguf"
    size = src.stat().st_size
    reader_fields = _field_names(src)
    if family == "valid":
        return pair
    if family == "truncate":
        raw = src.read_bytes()
        cut = int(rng.integers(0, size)) if rng.random() < 0.5 else int(rng.integers(0, 30000))
        dst.write_bytes(raw[: min(cut, size - 1)])
    elif family == "flip":
        flipped = bytearray(src.read_bytes())
        header = _header_size(src)
        for _ in range(int(rng.integers(1, 6))):
            where = header if rng.random() < 0.85 else size
            flipped[int(rng.integers(0, where))] ^= 1 << int(rng.integers(8))
        dst.write_bytes(bytes(flipped))
    elif family == "metadata":
        keys = (_TEXT_INT_KEYS if target == "text" else _CLIP_INT_KEYS) + _FLOAT_KEYS[target]
        keys = keys + _EXTRA_KEYS[target]
        key = keys[int(rng.integers(len(keys)))]
        if rng.random() < 0.15 and key in reader_fields:
            ge.rewrite(src, dst, drop=(key,))
        else:
            value = _value_for(rng, key)
            if key in _FLOAT_KEYS[target] and rng.random() < 0.6:
                value = (float(pick_one(rng, _HOSTILE_FLOATS)), ge.VT.FLOAT32, None)
            elif key in reader_fields and rng.random() < 0.5 and value[1] != ge.VT.STRING:
                value = (int(pick_one(rng, _HOSTILE_INTS)), ge.VT.UINT32, None)
            ge.rewrite(src, dst, kv={key: value})
    elif family == "tensor":
        _tensor_mutation(rng, src, dst, target)
    elif family == "count":
        _count_mutation(rng, src, dst, target)
    else:
        src = pair[0]
        target = "text"
        dst = tmp / f"text-{case['seed']}.gguf"
        _token_mutation(rng, src, dst)
    return (dst, pair[1]) if target == "text" else (pair[0], dst)


def _field_names(path: Path) -> set[str]:
    import gguf

    return set(gguf.GGUFReader(path).fields)


def _header_size(path: Path) -> int:
    from qaudio_local.engine.gguf.scan import scan

    return scan(path).data_start


def _tensor_mutation(rng: np.random.Generator, src: Path, dst: Path, target: str) -> None:
    from qaudio_dev import gguf_edit as ge

    fields, tensors = ge.read(src)
    names = [t.name for t in tensors]
    op = int(rng.integers(6))
    name = names[int(rng.integers(len(names)))]
    vectors = [t.name for t in tensors if t.data.ndim == 1 or t.data.shape[0] == 1]
    if op == 0 and vectors:  # a norm or bias in another type
        name = vectors[int(rng.integers(len(vectors)))]
        qtype = [ge.QT.F16, ge.QT.BF16, ge.QT.Q8_0][int(rng.integers(3))]
        ge.rewrite(src, dst, tensors=ge.retype(lambda n: n == name, qtype))
        return
    if op == 1:  # a tensor one row short (or longer)

        def edit(t: ge.Tensor) -> ge.Tensor:
            if t.name != name or t.ggml_type not in (ge.QT.F32, ge.QT.F16):
                return t
            grow = rng.random() < 0.3
            data = np.concatenate([t.data, t.data[:1]]) if grow else t.data[:-1]
            return ge.Tensor(
                t.name, np.ascontiguousarray(data) if data.size else t.data, t.ggml_type
            )

        ge.rewrite(src, dst, tensors=edit)
        return
    if op == 2:  # a tensor missing
        ge.rewrite(src, dst, tensors=lambda t: None if t.name == name else t)
        return
    if op == 3:  # an extra tensor
        extra_names = ["blk.99.attn_q.weight", "a.blk.0.attn_k.bias", "a.blk.0.attn_q_norm.weight",
                       "blk.0.attn_qkv.weight", "mystery.weight", "a.blk.0.ffn_gate.weight",
                       "output.bias", "v.patch_embd.weight"]  # fmt: skip
        shape = [(64,), (256,), (2, 2, 2, 2), (64, 64), (768,)][int(rng.integers(5))]
        extra = ge.Tensor(extra_names[int(rng.integers(len(extra_names)))],
                          np.zeros(shape, np.float32), ge.QT.F32)  # fmt: skip
        ge.rewrite(src, dst, extra=(extra,))
        return
    if op == 4:  # a matrix stored in another type
        qtype = [ge.QT.F32, ge.QT.F16, ge.QT.BF16, ge.QT.Q8_0][int(rng.integers(4))]
        ge.rewrite(src, dst, tensors=ge.retype(lambda n: n == name, qtype))
        return
    # position embeddings with too few rows, or a conv bias of the wrong size
    if target == "mmproj":
        which = "a.position_embd.weight" if rng.random() < 0.5 else "a.conv1d.1.bias"

        def cut(t: ge.Tensor) -> ge.Tensor:
            if t.name != which:
                return t
            data = t.data[: int(rng.integers(1, 1500))] if t.data.shape[0] > 1 else t.data[0]
            return ge.Tensor(t.name, np.ascontiguousarray(data), t.ggml_type)

        ge.rewrite(src, dst, tensors=cut)
    else:
        ge.rewrite(src, dst, tensors=ge.retype(lambda n: n.endswith("norm.weight"), ge.QT.F16))


def _count_mutation(rng: np.random.Generator, src: Path, dst: Path, target: str) -> None:
    """Hostile counts, lengths, offsets and shapes written into the layout itself."""
    import gguf

    from qaudio_dev import gguf_edit as ge

    reader = gguf.GGUFReader(src)
    huge = [2**31, 2**32 - 1, 2**63, 2**64 - 1, 2**40, 10**9]
    op = int(rng.integers(5))
    if op == 0:  # an array's declared length
        arrays = [k for k, f in reader.fields.items() if f.types and f.types[0] == ge.VT.ARRAY]
        if arrays:
            key = arrays[int(rng.integers(len(arrays)))]
            n = len(reader.fields[key].data)
            value = int(pick_one(rng, [*huge, n + 1, n - 1, 0]))
            ge.patch_field(src, dst, key, value, part=4)
            return
    if op == 1:  # a string's declared length
        strings = [k for k, f in reader.fields.items() if f.types == [ge.VT.STRING]]
        key = strings[int(rng.integers(len(strings)))]
        ge.patch_field(src, dst, key, int(pick_one(rng, huge)), part=3)
        return
    if op == 2:  # the header's own counts
        raw = bytearray(src.read_bytes())
        at = 8 if rng.random() < 0.5 else 16
        raw[at : at + 8] = struct.pack("<Q", int(pick_one(rng, [*huge, 0, 1])))
        dst.write_bytes(bytes(raw))
        return
    t = reader.tensors[int(rng.integers(len(reader.tensors)))]
    if op == 3:  # a tensor's dimension, dimension count or type
        what = ["dims", "n_dims", "type"][int(rng.integers(3))]
        value = {
            "dims": int(pick_one(rng, [0, 1, 3, 1 << 40, 2**63, 2**64 - 1])),
            "n_dims": int(pick_one(rng, [0, 1, 3, 5, 2**32 - 1])),
            "type": int(pick_one(rng, [1, 2, 4, 8, 12, 31, 39, 99, 2**31])),
        }[what]
        ge.patch_tensor_info(src, dst, t.name, what, value, dim=0)
        return
    value = int(pick_one(rng, [0, 1, 31, 2**40, 2**63, int(t.data_offset) + 32]))  # an offset
    ge.patch_tensor_info(src, dst, t.name, "offset", value)


def _token_mutation(rng: np.random.Generator, src: Path, dst: Path) -> None:
    from qaudio_dev import gguf_edit as ge

    fields, tensors = ge.read(src)
    tokens = list(fields["tokenizer.ggml.tokens"][0])
    types = list(fields["tokenizer.ggml.token_type"][0])
    op = int(rng.integers(6))
    i = int(rng.integers(len(tokens)))
    if op == 0:
        tokens[i] = tokens[(i + 1) % len(tokens)]  # a duplicate
    elif op == 1:
        tokens[i] = ""
    elif op == 2:
        special = ["<|AUDIO|>", "<|audio_bos|>", "<|im_end|>", "<|im_start|>", "<|endoftext|>"]
        j = tokens.index(special[int(rng.integers(len(special)))])
        tokens[j] = tokens[j].replace("|", "_") if rng.random() < 0.5 else tokens[j].lower()
    elif op == 3:
        j = tokens.index("<|AUDIO|>")
        types[j] = 1  # the audio token as ordinary text
    elif op == 4:
        fields["tokenizer.ggml.token_type"] = (types[:-1], ge.VT.ARRAY, ge.VT.INT32)
    else:
        fields["tokenizer.ggml.merges"] = (["a", " ", "Ġ Ġ Ġ", ""], ge.VT.ARRAY, ge.VT.STRING)
    fields["tokenizer.ggml.tokens"] = (tokens, ge.VT.ARRAY, ge.VT.STRING)
    if op != 4:
        fields["tokenizer.ggml.token_type"] = (types, ge.VT.ARRAY, ge.VT.INT32)
    ge.write(dst, fields, tensors)
    if op == 1 and rng.random() < 0.5:  # invalid UTF-8 instead of an empty token
        raw = bytearray(dst.read_bytes())
        at = raw.find(b"<|im_start|>")
        raw[at + 2] = 0xFF
        dst.write_bytes(bytes(raw))


def run_gguf(case: dict[str, Any]) -> dict[str, Any]:
    from qaudio_local.engine.gguf import check_projector, check_text_model
    from qaudio_local.engine.model import AudioModel
    from qaudio_local.engine.options import ModelOptions, SamplingOptions
    from qaudio_local.errors import QAudioError

    pair = (Path(case["text"]), Path(case["mmproj"]))
    with tempfile.TemporaryDirectory() as d:
        try:
            text, mmproj = _mutate_pair(case, pair, Path(d))
        except BaseException as exc:  # the mutation does not apply to this file: skip it
            return {"outcome": "clean", "detail": f"(no mutation: {type(exc).__name__})"}
        t0 = time.perf_counter()
        for check, path in ((check_text_model, text), (check_projector, mmproj)):
            try:
                check(path)
            except QAudioError:
                pass
            except BaseException as exc:
                return classify_exception(exc)
        check_s = time.perf_counter() - t0
        if check_s > 1.0:
            return {"outcome": "hang", "detail": f"validation took {check_s:.1f} s"}
        t = np.arange(SAMPLE_RATE // 2) / SAMPLE_RATE
        tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        opts = ModelOptions(n_ctx=2048, n_threads=1, audio_path=case["audio_path"])
        try:
            with AudioModel(text, mmproj, opts) as model:
                result = model.generate(
                    "What is it?", [tone], sampling=SamplingOptions(max_tokens=3)
                )
        except BaseException as exc:
            return classify_exception(exc)
        return {"outcome": "accepted", "detail": f"{result.usage.completion_tokens} tokens"}
