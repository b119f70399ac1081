"""The converter: HF Qwen2-Audio checkpoint -> text GGUF + qwen2a projector GGUF."""

from __future__ import annotations

import json
import shutil
import tracemalloc
from pathlib import Path

import gguf
import numpy as np
import pytest

from qaudio_local.convert import convert_checkpoint
from qaudio_local.convert.safetensors_io import SafetensorsFile, write_safetensors
from qaudio_local.convert.tiny import make_tiny_checkpoint, special_token_ids
from qaudio_local.convert.vocab import TOKEN_CONTROL, TOKEN_NORMAL, TOKEN_UNUSED
from qaudio_local.errors import CheckpointNotFoundError, ConversionError


def _fields(path: Path) -> tuple[dict, dict]:
    reader = gguf.GGUFReader(path)
    kv = {k: f.contents() for k, f in reader.fields.items()}
    tensors = {t.name: t for t in reader.tensors}
    return kv, tensors


def _tensor(t: gguf.ReaderTensor) -> np.ndarray:
    """A GGUF tensor as a numpy array in PyTorch (row-major) order."""
    return np.asarray(t.data).reshape(tuple(reversed([int(x) for x in t.shape])))


@pytest.fixture(scope="module")
def f16_pair(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):
    return convert_checkpoint(tiny_checkpoint, tmp_path_factory.mktemp("f16"), outtype="f16")


def test_text_model_metadata(tiny_gguf, tiny_checkpoint: Path) -> None:
    cfg = json.loads((tiny_checkpoint / "config.json").read_text())["text_config"]
    kv, tensors = _fields(tiny_gguf[0])
    assert kv["general.architecture"] == "qwen2"
    assert kv["qwen2.embedding_length"] == cfg["hidden_size"]
    assert kv["qwen2.block_count"] == cfg["num_hidden_layers"]
    assert kv["qwen2.feed_forward_length"] == cfg["intermediate_size"]
    assert kv["qwen2.attention.head_count"] == cfg["num_attention_heads"]
    assert kv["qwen2.attention.head_count_kv"] == cfg["num_key_value_heads"]
    assert kv["qwen2.context_length"] == cfg["max_position_embeddings"]
    assert kv["qwen2.rope.freq_base"] == pytest.approx(cfg["rope_theta"])
    assert kv["qwen2.attention.layer_norm_rms_epsilon"] == pytest.approx(cfg["rms_norm_eps"])
    assert kv["tokenizer.ggml.model"] == "gpt2"
    assert kv["tokenizer.ggml.pre"] == "qwen2"
    tok_cfg = json.loads((tiny_checkpoint / "tokenizer_config.json").read_text())
    assert kv["tokenizer.chat_template"] == tok_cfg["chat_template"]
    n_layers = cfg["num_hidden_layers"]
    assert len(tensors) == 2 + 1 + 12 * n_layers  # embd, norm, output + per layer


def test_tokenizer_section(tiny_gguf, tiny_checkpoint: Path) -> None:
    kv, _ = _fields(tiny_gguf[0])
    tokens, types = kv["tokenizer.ggml.tokens"], kv["tokenizer.ggml.token_type"]
    cfg = json.loads((tiny_checkpoint / "config.json").read_text())["text_config"]
    assert len(tokens) == len(types) == cfg["vocab_size"]
    specials = special_token_ids()
    for text, tid in specials.items():
        assert tokens[tid] == text
        assert types[tid] == TOKEN_CONTROL
    vocab = json.loads((tiny_checkpoint / "vocab.json").read_text())
    for text, tid in list(vocab.items())[:50]:
        assert tokens[tid] == text and types[tid] == TOKEN_NORMAL
    n_real = max(specials.values()) + 1
    assert all(t == TOKEN_UNUSED for t in types[n_real:])
    merges = (tiny_checkpoint / "merges.txt").read_text().splitlines()[1:]
    assert kv["tokenizer.ggml.merges"] == [m for m in merges if m]
    assert kv["tokenizer.ggml.eos_token_id"] == specials["<|im_end|>"]
    assert kv["tokenizer.ggml.add_bos_token"] is False


def test_f32_weights_are_exact(tiny_gguf, tiny_checkpoint: Path) -> None:
    _, tensors = _fields(tiny_gguf[0])
    with SafetensorsFile(tiny_checkpoint / "model.safetensors") as st:
        for src, dst in [
            ("language_model.model.embed_tokens.weight", "token_embd.weight"),
            ("language_model.model.layers.1.self_attn.k_proj.weight", "blk.1.attn_k.weight"),
            ("language_model.model.layers.0.self_attn.q_proj.bias", "blk.0.attn_q.bias"),
            ("language_model.model.layers.0.mlp.down_proj.weight", "blk.0.ffn_down.weight"),
            ("language_model.lm_head.weight", "output.weight"),
        ]:
            assert tensors[dst].tensor_type == gguf.GGMLQuantizationType.F32
            np.testing.assert_array_equal(_tensor(tensors[dst]), st.read(src))


def test_projector_layout(tiny_gguf, tiny_checkpoint: Path) -> None:
    kv, tensors = _fields(tiny_gguf[1])
    audio = json.loads((tiny_checkpoint / "config.json").read_text())["audio_config"]
    assert kv["general.architecture"] == "clip"
    assert kv["clip.projector_type"] == "qwen2a"
    assert kv["clip.has_audio_encoder"] is True
    assert kv["clip.audio.embedding_length"] == audio["d_model"]
    assert kv["clip.audio.block_count"] == audio["encoder_layers"]
    assert kv["clip.audio.num_mel_bins"] == 128
    assert kv["clip.audio.projection_dim"] == 256
    conv = tensors["a.conv1d.1.weight"]
    assert conv.tensor_type == gguf.GGMLQuantizationType.F16  # ggml's conv needs F16 kernels
    with SafetensorsFile(tiny_checkpoint / "model.safetensors") as st:
        w = st.read("audio_tower.conv1.weight")
        np.testing.assert_array_equal(_tensor(conv), w.astype(np.float16))
        bias = tensors["a.conv1d.2.bias"]
        assert [int(x) for x in bias.shape] == [1, audio["d_model"]]
        np.testing.assert_array_equal(_tensor(bias).ravel(), st.read("audio_tower.conv2.bias"))
        k = _tensor(tensors["a.blk.2.attn_k.weight"])
        np.testing.assert_array_equal(k, st.read("audio_tower.layers.2.self_attn.k_proj.weight"))
        np.testing.assert_array_equal(
            _tensor(tensors["mm.a.fc.bias"]), st.read("multi_modal_projector.linear.bias")
        )
    assert "a.blk.0.attn_k.bias" not in tensors  # Whisper's key projection has no bias


def test_f16_stores_matrices_as_f16_and_norms_as_f32(f16_pair) -> None:
    _, tensors = _fields(f16_pair.model_path)
    assert tensors["blk.0.attn_q.weight"].tensor_type == gguf.GGMLQuantizationType.F16
    assert tensors["blk.0.attn_q.bias"].tensor_type == gguf.GGMLQuantizationType.F32
    assert tensors["output_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    assert f16_pair.model_path.name.endswith(".F16.gguf")
    assert f16_pair.mmproj_path.name.endswith(".mmproj-f16.gguf")


@pytest.mark.parametrize(("dtype", "shards"), [("bfloat16", 2), ("float16", 3)])
def test_half_precision_and_sharded_checkpoints(tmp_path: Path, dtype: str, shards: int) -> None:
    ckpt = make_tiny_checkpoint(tmp_path / "ckpt", dtype=dtype, shards=shards)
    res = convert_checkpoint(ckpt, tmp_path / "out", outtype="f32")
    _, tensors = _fields(res.model_path)
    index = json.loads((ckpt / "model.safetensors.index.json").read_text())
    name = "language_model.model.layers.0.mlp.up_proj.weight"
    with SafetensorsFile(ckpt / index["weight_map"][name]) as st:
        np.testing.assert_array_equal(_tensor(tensors["blk.0.ffn_up.weight"]), st.read(name))


def test_vocab_json_and_merges_give_the_same_tokenizer(
    tiny_checkpoint: Path, tiny_gguf, tmp_path: Path
) -> None:
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, ckpt)
    (ckpt / "tokenizer.json").unlink()
    res = convert_checkpoint(ckpt, tmp_path / "out", outtype="f32")
    a, _ = _fields(res.model_path)
    b, _ = _fields(tiny_gguf[0])
    for key in (
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.merges",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.bos_token_id",
    ):
        assert a[key] == b[key], key


def test_peak_memory_stays_near_one_tensor(tmp_path: Path) -> None:
    ckpt = make_tiny_checkpoint(tmp_path / "ckpt")
    with SafetensorsFile(ckpt / "model.safetensors") as st:
        sizes = [st.read(n).nbytes for n in st]
    tracemalloc.start()
    try:
        convert_checkpoint(ckpt, tmp_path / "out", outtype="f32")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Loading the whole model would need sum(sizes) (~7.8 MB); streaming needs a few tensors.
    assert peak < 4 * max(sizes) + 2_000_000 < sum(sizes)


# --- failures: clear errors and nothing left behind -------------------------------------


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _assert_nothing_written(out: Path) -> None:
    assert not out.exists() or not any(out.iterdir())


def test_not_qwen2_audio(tiny_checkpoint: Path, tmp_path: Path) -> None:
    ckpt = _copy(tiny_checkpoint, tmp_path / "llama")
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg.update(architectures=["LlamaForCausalLM"], model_type="llama")
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConversionError, match="not a Qwen2-Audio checkpoint"):
        convert_checkpoint(ckpt, tmp_path / "out")
    _assert_nothing_written(tmp_path / "out")


def test_missing_folder_config_and_weights(tiny_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFoundError, match="not found"):
        convert_checkpoint(tmp_path / "nope", tmp_path / "out")
    ckpt = _copy(tiny_checkpoint, tmp_path / "a")
    (ckpt / "config.json").unlink()
    with pytest.raises(CheckpointNotFoundError, match="config.json"):
        convert_checkpoint(ckpt, tmp_path / "out")
    ckpt = _copy(tiny_checkpoint, tmp_path / "b")
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(CheckpointNotFoundError, match="safetensors"):
        convert_checkpoint(ckpt, tmp_path / "out")
    ckpt = _copy(tiny_checkpoint, tmp_path / "c")
    (ckpt / "tokenizer.json").unlink()
    (ckpt / "vocab.json").unlink()
    with pytest.raises(CheckpointNotFoundError, match="tokenizer"):
        convert_checkpoint(ckpt, tmp_path / "out")
    _assert_nothing_written(tmp_path / "out")


def _rewrite_weights(ckpt: Path, edit) -> None:
    with SafetensorsFile(ckpt / "model.safetensors") as st:
        tensors = {n: st.read(n) for n in st}
    edit(tensors)
    write_safetensors(ckpt / "model.safetensors", tensors)


def test_unknown_missing_and_misshapen_tensors(tiny_checkpoint: Path, tmp_path: Path) -> None:
    ckpt = _copy(tiny_checkpoint, tmp_path / "extra")
    _rewrite_weights(ckpt, lambda t: t.update({"audio_tower.mystery.weight": np.ones(3, "f4")}))
    with pytest.raises(ConversionError, match="audio_tower.mystery.weight"):
        convert_checkpoint(ckpt, tmp_path / "out")
    ckpt = _copy(tiny_checkpoint, tmp_path / "missing")
    _rewrite_weights(ckpt, lambda t: t.pop("audio_tower.layers.1.fc2.weight"))
    with pytest.raises(ConversionError, match="lacks tensor audio_tower.layers.1.fc2.weight"):
        convert_checkpoint(ckpt, tmp_path / "out")
    ckpt = _copy(tiny_checkpoint, tmp_path / "shape")
    key = "language_model.model.layers.0.mlp.up_proj.weight"
    _rewrite_weights(ckpt, lambda t: t.update({key: t[key][:-1]}))
    with pytest.raises(ConversionError, match="shape"):
        convert_checkpoint(ckpt, tmp_path / "out")
    _assert_nothing_written(tmp_path / "out")


def test_bad_outtype(tiny_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="f32, f16"):
        convert_checkpoint(tiny_checkpoint, tmp_path / "out", outtype="q4")


def test_failed_write_leaves_no_partial_files(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error half-way through (here: a corrupt tensor) removes everything written."""
    ckpt = _copy(tiny_checkpoint, tmp_path / "ckpt")
    from qaudio_local.convert import checkpoint as ck

    real = ck.Checkpoint.read

    def failing(self, name: str) -> np.ndarray:
        if name.startswith("audio_tower.layers.2"):
            raise OSError(28, "No space left on device")
        return real(self, name)

    monkeypatch.setattr(ck.Checkpoint, "read", failing)
    with pytest.raises(ConversionError, match="full"):
        convert_checkpoint(ckpt, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_q8_0_quantizes_matrices_and_keeps_the_rest(tiny_checkpoint: Path, tmp_path: Path) -> None:
    res = convert_checkpoint(tiny_checkpoint, tmp_path, outtype="q8_0")
    assert res.model_path.name.endswith(".Q8_0.gguf")
    assert res.mmproj_path.name.endswith(".mmproj-q8_0.gguf")
    kv, tensors = _fields(res.model_path)
    q8 = gguf.GGMLQuantizationType.Q8_0
    assert kv["general.file_type"] == int(gguf.LlamaFileType.MOSTLY_Q8_0)
    assert tensors["blk.0.attn_q.weight"].tensor_type == q8
    assert tensors["blk.0.attn_q.bias"].tensor_type == gguf.GGMLQuantizationType.F32
    with SafetensorsFile(tiny_checkpoint / "model.safetensors") as st:
        src = st.read("language_model.model.layers.0.mlp.gate_proj.weight")
    t = tensors["blk.0.ffn_gate.weight"]
    back = gguf.quants.dequantize(np.asarray(t.data), q8)
    # 8-bit blocks: each value within half a step (block max / 127) plus the f16 rounding
    # of the block's scale (relative 2**-11, up to 127 steps)
    blocks, got = src.reshape(-1, 32), back.reshape(-1, 32)
    step = np.abs(blocks).max(axis=1, keepdims=True) / 127
    assert np.all(np.abs(got - blocks) <= step * 0.5 + step * 127 * 2**-11 + 1e-7)
    assert np.abs(got - blocks).max() > 0
    _, ptensors = _fields(res.mmproj_path)
    assert ptensors["a.blk.0.ffn_up.weight"].tensor_type == q8
    assert ptensors["a.conv1d.1.weight"].tensor_type == gguf.GGMLQuantizationType.F16


# K-quant level -> the ggml types llama.cpp's mix puts in the text model's matrices
K_QUANT_TYPES = {
    "Q3_K_M": {"Q3_K", "Q4_K", "Q5_K", "Q6_K"},
    "Q4_K_M": {"Q4_K", "Q6_K"},
    "Q5_K_M": {"Q5_K", "Q6_K"},
    "Q6_K": {"Q6_K"},
}


@pytest.mark.parametrize("level", list(K_QUANT_TYPES))
def test_k_quants_come_from_llama_cpps_quantizer(
    tiny_checkpoint: Path, tmp_path: Path, level: str
) -> None:
    res = convert_checkpoint(tiny_checkpoint, tmp_path, outtype=level.lower())  # any case
    assert res.model_path.name == f"tiny-qwen2-audio.{level}.gguf"
    assert res.mmproj_path.name == "tiny-qwen2-audio.mmproj-f16.gguf"  # f16 unless asked
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [res.model_path.name, res.mmproj_path.name]
    )  # the F16 intermediate and every .partial are gone
    kv, tensors = _fields(res.model_path)
    ftypes = {"Q3_K_M": 12, "Q4_K_M": 15, "Q5_K_M": 17, "Q6_K": 18}
    assert kv["general.file_type"] == ftypes[level]
    matrices = {t.tensor_type.name for t in tensors.values() if len(t.shape) == 2}
    assert matrices == K_QUANT_TYPES[level]
    assert tensors["blk.0.attn_q.bias"].tensor_type == gguf.GGMLQuantizationType.F32
    assert kv["tokenizer.ggml.pre"] == "qwen2" and len(kv["tokenizer.ggml.tokens"]) > 0


def test_projector_outtype_is_separate(tiny_checkpoint: Path, tmp_path: Path) -> None:
    res = convert_checkpoint(tiny_checkpoint, tmp_path, outtype="Q4_K_M", mmproj_outtype="q8_0")
    _, ptensors = _fields(res.mmproj_path)
    assert res.mmproj_path.name.endswith(".mmproj-q8_0.gguf")
    assert ptensors["a.blk.0.ffn_up.weight"].tensor_type == gguf.GGMLQuantizationType.Q8_0
    with pytest.raises(ConversionError, match="unknown projector outtype 'Q4_K_M'"):
        convert_checkpoint(tiny_checkpoint, tmp_path / "x", outtype="f16", mmproj_outtype="Q4_K_M")


def test_a_failed_quantization_leaves_nothing(tmp_path: Path) -> None:
    from qaudio_local.convert.quantize import quantize_text_model

    src = tmp_path / "not-a-model.gguf"
    src.write_bytes(b"garbage, not GGUF")
    dst = tmp_path / "out.Q4_K_M.gguf"
    with pytest.raises(ConversionError, match="could not quantize not-a-model.gguf to Q4_K_M"):
        quantize_text_model(src, dst, "Q4_K_M")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not-a-model.gguf"]
    with pytest.raises(ConversionError, match="choose one of Q3_K_M, Q4_K_M"):
        quantize_text_model(src, dst, "Q2_K")
