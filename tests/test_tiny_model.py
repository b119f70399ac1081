"""Tests for the tiny synthetic Qwen2-Audio checkpoint (structure, tokenizer, parity)."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import shutil
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qaudio_local.convert import tiny
from qaudio_local.convert.safetensors_io import SafetensorsFile
from qaudio_local.errors import ConversionError

# written out here on purpose: the test checks the module's list, not itself
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>"]
SPECIALS.append("<|audio_eos|>")
FILES = {
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "vocab.json",
    "merges.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "preprocessor_config.json",
    "chat_template.json",
}
SAMPLES = [
    "You are a helpful assistant.",
    "What does the person say? Transcribe the audio, please.",
    "Numbers: 16000 samples, 3.14, 2024-05-01 at 12:30.",
    "  leading spaces,\ttabs\nand\r\nnew lines\n\n",
    "naïve café, Straße, 日本語, emoji 🎵 — done.",
    "I'm sure it's fine; we'll see. DON'T SHOUT!!! snake_case_name",
]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.make_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt")


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def expected_shapes(vocab: int) -> dict[str, tuple[int, ...]]:
    """The official hub tensor names with the tiny sizes, written out independently."""
    d, f, h, i = 64, 128, 256, 512
    shapes: dict[str, tuple[int, ...]] = {
        "audio_tower.conv1.weight": (d, 128, 3),
        "audio_tower.conv1.bias": (d,),
        "audio_tower.conv2.weight": (d, d, 3),
        "audio_tower.conv2.bias": (d,),
        "audio_tower.embed_positions.weight": (1500, d),
        "audio_tower.layer_norm.weight": (d,),
        "audio_tower.layer_norm.bias": (d,),
        "multi_modal_projector.linear.weight": (h, d),
        "multi_modal_projector.linear.bias": (h,),
        "language_model.model.embed_tokens.weight": (vocab, h),
        "language_model.model.norm.weight": (h,),
        "language_model.lm_head.weight": (vocab, h),
    }
    for n in range(3):
        p = f"audio_tower.layers.{n}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes[f"{p}.self_attn.{proj}.weight"] = (d, d)
        for proj in ("q_proj", "v_proj", "out_proj"):
            shapes[f"{p}.self_attn.{proj}.bias"] = (d,)
        for norm in ("self_attn_layer_norm", "final_layer_norm"):
            shapes[f"{p}.{norm}.weight"] = shapes[f"{p}.{norm}.bias"] = (d,)
        shapes.update({f"{p}.fc1.weight": (f, d), f"{p}.fc1.bias": (f,)})
        shapes.update({f"{p}.fc2.weight": (d, f), f"{p}.fc2.bias": (d,)})
    for n in range(2):
        p = f"language_model.model.layers.{n}"
        for proj in ("q_proj", "k_proj", "v_proj"):
            shapes[f"{p}.self_attn.{proj}.weight"] = (h, h)
            shapes[f"{p}.self_attn.{proj}.bias"] = (h,)
        shapes[f"{p}.self_attn.o_proj.weight"] = (h, h)
        shapes[f"{p}.mlp.gate_proj.weight"] = shapes[f"{p}.mlp.up_proj.weight"] = (i, h)
        shapes[f"{p}.mlp.down_proj.weight"] = (h, i)
        shapes[f"{p}.input_layernorm.weight"] = shapes[f"{p}.post_attention_layernorm.weight"] = (
            h,
        )
    return shapes


def gpt2_byte_table() -> dict[int, str]:
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs = bs[:]
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + len(cs) - 188)
    return dict(zip(bs, map(chr, cs), strict=True))


def reference_encode(text: str, ckpt: Path, split: Callable[[str], list[str]]) -> list[int]:
    """GPT-2-style slow BPE over vocab.json + merges.txt, special tokens matched first."""
    vocab = _json(ckpt / "vocab.json")
    lines = (ckpt / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]
    ranks = {tuple(line.split(" ")): r for r, line in enumerate(lines)}
    table, specials = gpt2_byte_table(), tiny.special_token_ids()
    ids: list[int] = []
    for chunk in re.split("(" + "|".join(map(re.escape, SPECIALS)) + ")", text):
        if chunk in specials:
            ids.append(specials[chunk])
            continue
        for piece in split(unicodedata.normalize("NFC", chunk)):
            word = [table[b] for b in piece.encode("utf-8")]
            while len(word) > 1:
                rank, pos = min(
                    (ranks.get(p, math.inf), k)
                    for k, p in enumerate(zip(word, word[1:], strict=False))
                )
                if rank == math.inf:
                    break
                pair, merged, k = (word[pos], word[pos + 1]), [], 0
                while k < len(word):
                    if tuple(word[k : k + 2]) == pair:
                        merged.append(word[k] + word[k + 1])
                        k += 2
                    else:
                        merged.append(word[k])
                        k += 1
                word = merged
            ids += [vocab[t] for t in word]
    return ids


def reference_decode(ids: list[int], ckpt: Path) -> str:
    inverse = {i: t for t, i in _json(ckpt / "vocab.json").items()}
    inverse.update({i: t for t, i in tiny.special_token_ids().items()})
    unbyte = {c: b for b, c in gpt2_byte_table().items()}
    out = bytearray()
    for i in ids:
        token = inverse[i]
        out += token.encode() if token in SPECIALS else bytes(unbyte[c] for c in token)
    return out.decode("utf-8", errors="replace")


def expected_prompt(messages: list[dict], add_generation_prompt: bool) -> str:
    """The Qwen2-Audio chat format, written out in Python."""
    out, n_audio = "", 0
    for k, msg in enumerate(messages):
        if k == 0 and msg["role"] != "system":
            out += "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        out += f"<|im_start|>{msg['role']}\n"
        if isinstance(msg["content"], str):
            out += msg["content"]
        else:
            for item in msg["content"]:
                if "audio" in item or "audio_url" in item or item.get("type") == "audio":
                    n_audio += 1
                    out += f"Audio {n_audio}: <|audio_bos|><|AUDIO|><|audio_eos|>\n"
                elif "text" in item:
                    out += item["text"]
        out += "<|im_end|>\n"
    return out + ("<|im_start|>assistant\n" if add_generation_prompt else "")


AUDIO_ITEM = {"type": "audio", "audio_url": "speech.wav"}
CONVERSATIONS: list[list[dict[str, Any]]] = [
    [
        {
            "role": "user",
            "content": [AUDIO_ITEM, {"type": "text", "text": "What does the person say?"}],
        }
    ],
    [{"role": "user", "content": [{"audio": "a.wav"}]}],
    [
        {"role": "system", "content": "Transcribe exactly."},
        {"role": "user", "content": [AUDIO_ITEM, {"type": "audio", "path": "b.wav"}]},
        {"role": "assistant", "content": "hello there"},
        {"role": "user", "content": [{"type": "text", "text": "And this? "}, AUDIO_ITEM]},
    ],
    [{"role": "user", "content": "plain text, no audio"}],
]


# --- numpy-only tests ---------------------------------------------------------------------


def test_files_and_configs(ckpt: Path) -> None:
    assert {p.name for p in ckpt.iterdir()} == FILES
    ids, vocab = tiny.special_token_ids(), tiny.tiny_vocab_size()
    first = ids["<|endoftext|>"]
    assert list(ids) == SPECIALS and list(ids.values()) == list(range(first, first + 6))
    assert vocab % 64 == 0 and vocab > ids["<|audio_eos|>"] + 1
    cfg = _json(ckpt / "config.json")
    assert cfg["architectures"] == ["Qwen2AudioForConditionalGeneration"]
    assert cfg["model_type"] == "qwen2_audio" and cfg["audio_token_index"] == ids["<|AUDIO|>"]
    text, audio = cfg["text_config"], cfg["audio_config"]
    assert text["vocab_size"] == vocab and text["hidden_size"] == 256
    assert text["num_key_value_heads"] == text["num_attention_heads"] == 4
    assert (
        text["eos_token_id"] == ids["<|im_end|>"] and text["bos_token_id"] == ids["<|endoftext|>"]
    )
    assert text["tie_word_embeddings"] is False and cfg["torch_dtype"] == "float32"
    assert audio["model_type"] == "qwen2_audio_encoder" and audio["encoder_layers"] == 3
    assert (audio["d_model"], audio["num_mel_bins"], audio["max_source_positions"]) == (
        64,
        128,
        1500,
    )
    pre = _json(ckpt / "preprocessor_config.json")
    assert pre["feature_extractor_type"] == "WhisperFeatureExtractor"
    assert (pre["feature_size"], pre["sampling_rate"], pre["n_fft"], pre["hop_length"]) == (
        128,
        16000,
        400,
        160,
    )
    assert (pre["n_samples"], pre["nb_max_frames"], pre["return_attention_mask"]) == (
        480000,
        3000,
        True,
    )
    tok_cfg = _json(ckpt / "tokenizer_config.json")
    assert tok_cfg["eos_token"] == "<|im_end|>" and tok_cfg["pad_token"] == "<|endoftext|>"
    assert tok_cfg["bos_token"] is None and tok_cfg["tokenizer_class"] == "Qwen2Tokenizer"
    assert tok_cfg["errors"] == "replace" and tok_cfg["clean_up_tokenization_spaces"] is False
    decoder = tok_cfg["added_tokens_decoder"]
    assert {int(k): v["content"] for k, v in decoder.items()} == {i: t for t, i in ids.items()}
    assert all(v["special"] for v in decoder.values())
    gen = _json(ckpt / "generation_config.json")
    assert gen["eos_token_id"] == [ids["<|endoftext|>"], ids["<|im_end|>"]]


def test_tensors_names_shapes_and_values(ckpt: Path) -> None:
    with SafetensorsFile(ckpt / "model.safetensors") as f:
        assert f.metadata == {"format": "pt"}
        assert {k: f.shape(k) for k in f} == expected_shapes(tiny.tiny_vocab_size())
        assert {f.dtype(k) for k in f} == {"F32"}
        pos = f.read("audio_tower.embed_positions.weight")
        norm = f.read("language_model.model.norm.weight")
        bias = f.read("audio_tower.layers.0.self_attn.q_proj.bias")
        head = f.read("language_model.lm_head.weight")
        embed = f.read("language_model.model.embed_tokens.weight")
    t, k = np.arange(1500.0)[:, None], np.arange(32.0)[None, :]
    angle = t * np.exp(-k * math.log(10000.0) / 31)
    np.testing.assert_allclose(pos, np.concatenate([np.sin(angle), np.cos(angle)], 1), atol=1e-6)
    assert 0.9 < norm.mean() < 1.1 and 0.0 < norm.std() < 0.2  # near one, not exactly one
    assert 0.0 < np.abs(bias).mean() < 0.2
    assert not np.array_equal(head, embed) and np.isfinite(head).all()


def test_deterministic_small_and_fast(tmp_path: Path) -> None:
    start = time.perf_counter()
    a = tiny.make_tiny_checkpoint(tmp_path / "a", seed=7)
    elapsed = time.perf_counter() - start
    b = tiny.make_tiny_checkpoint(tmp_path / "b", seed=7)
    c = tiny.make_tiny_checkpoint(str(tmp_path / "c"), seed=8)
    assert isinstance(c, Path)
    for name in FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
        same = (a / name).read_bytes() == (c / name).read_bytes()
        assert same == (name != "model.safetensors"), name
    total = sum(p.stat().st_size for p in a.iterdir())
    assert total < 12 * 2**20, total
    assert elapsed < 5.0, elapsed


@pytest.mark.parametrize(
    ("dtype", "st_dtype", "item"), [("float16", "F16", 2), ("bfloat16", "BF16", 2)]
)
def test_half_precision_dtypes(tmp_path: Path, dtype: str, st_dtype: str, item: int) -> None:
    out = tiny.make_tiny_checkpoint(tmp_path, dtype=dtype)
    assert _json(out / "config.json")["torch_dtype"] == dtype
    assert _json(out / "config.json")["text_config"]["torch_dtype"] == dtype
    with SafetensorsFile(out / "model.safetensors") as f:
        assert {f.dtype(k) for k in f} == {st_dtype}
        values = f.read("language_model.lm_head.weight")
    reference = tiny._weights(0)["language_model.lm_head.weight"]
    np.testing.assert_allclose(values, reference, rtol=2**-7, atol=1e-6)


def test_sharded_checkpoint(tmp_path: Path) -> None:
    out = tiny.make_tiny_checkpoint(tmp_path, shards=3, dtype="bfloat16")
    assert not (out / "model.safetensors").exists()
    index = _json(out / "model.safetensors.index.json")
    names = [f"model-0000{k}-of-00003.safetensors" for k in (1, 2, 3)]
    assert sorted(set(index["weight_map"].values())) == names
    assert set(index["weight_map"]) == set(expected_shapes(tiny.tiny_vocab_size()))
    total = 0
    for name in names:
        with SafetensorsFile(out / name) as f:
            assert f.keys() and all(index["weight_map"][k] == name for k in f)
            total += sum(2 * math.prod(f.shape(k)) for k in f)
    assert index["metadata"]["total_size"] == total


def test_invalid_arguments(tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="dtype must be one of"):
        tiny.make_tiny_checkpoint(tmp_path, dtype="int8")
    with pytest.raises(ConversionError, match="shards must be between"):
        tiny.make_tiny_checkpoint(tmp_path, shards=0)
    assert not any(tmp_path.iterdir())


def test_tokenizer_files_agree(ckpt: Path) -> None:
    tok = _json(ckpt / "tokenizer.json")
    vocab = _json(ckpt / "vocab.json")
    lines = (ckpt / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "#version: 0.2" and lines[1:] == tok["model"]["merges"]
    assert tok["model"]["vocab"] == vocab and tok["model"]["type"] == "BPE"
    assert 300 <= len(lines) - 1 <= 700
    table = gpt2_byte_table()
    assert [vocab[table[b]] for b in sorted(table, key=lambda b: vocab[table[b]])] == list(
        range(256)
    )
    for merge in lines[1:]:
        left, right = merge.split(" ")
        assert left in vocab and right in vocab and left + right in vocab
    added = {t["content"]: t["id"] for t in tok["added_tokens"]}
    assert added == tiny.special_token_ids() and min(added.values()) == len(vocab)
    assert all(t["special"] and not t["normalized"] for t in tok["added_tokens"])
    split = tok["pre_tokenizer"]["pretokenizers"][0]
    assert (
        split["pattern"]["Regex"] == tiny.QWEN2_PRETOKENIZE_REGEX
        and split["behavior"] == "Isolated"
    )


def test_reference_bpe_round_trips_ascii(ckpt: Path) -> None:
    split = tiny._TRAIN_SPLIT.findall  # exact on ASCII
    for text in [s for s in SAMPLES if s.isascii()]:
        ids = reference_encode(text, ckpt, split)
        assert reference_decode(ids, ckpt) == text
    ids = reference_encode("You are a helpful assistant.", ckpt, split)
    assert len(ids) <= 8  # the merges were learned on words like these
    prompt = "<|im_start|>user\nAudio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\n<|im_end|>"
    assert tiny.special_token_ids()["<|AUDIO|>"] in reference_encode(prompt, ckpt, split)


@pytest.mark.parametrize("hf_like", [True, False])
def test_chat_template_renders_qwen2_audio_format(ckpt: Path, hf_like: bool) -> None:
    sandbox = pytest.importorskip("jinja2.sandbox")
    env = sandbox.ImmutableSandboxedEnvironment(trim_blocks=hf_like, lstrip_blocks=hf_like)
    source = _json(ckpt / "tokenizer_config.json")["chat_template"]
    assert _json(ckpt / "chat_template.json")["chat_template"] == source
    template = env.from_string(source)
    for messages in CONVERSATIONS:
        for gen in (True, False):
            rendered = template.render(messages=messages, add_generation_prompt=gen)
            assert rendered == expected_prompt(messages, gen)
    third = template.render(messages=CONVERSATIONS[2], add_generation_prompt=True)
    assert "Audio 3: <|audio_bos|>" in third and "You are a helpful" not in third


def test_script_writes_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = Path(__file__).resolve().parents[1] / "scripts" / "make_tiny_model.py"
    spec = importlib.util.spec_from_file_location("make_tiny_model", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main([str(tmp_path / "out"), "--seed", "3"]) == 0
    assert "model.safetensors" in capsys.readouterr().out
    assert (tmp_path / "out" / "config.json").is_file()
    assert module.main([str(tmp_path / "bad"), "--shards", "0"]) == 1
    assert "shards must be" in capsys.readouterr().err


# --- parity with the transformers reference -------------------------------------------------


@pytest.mark.parity
@pytest.mark.parametrize(("dtype", "shards"), [("float32", 1), ("bfloat16", 2)])
def test_transformers_loads_and_runs(ckpt: Path, tmp_path: Path, dtype: str, shards: int) -> None:
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    path = ckpt if shards == 1 else tiny.make_tiny_checkpoint(tmp_path, dtype=dtype, shards=shards)
    model, info = transformers.Qwen2AudioForConditionalGeneration.from_pretrained(
        path, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert not info["mismatched_keys"] and not info["error_msgs"], info
    model = model.float().eval()
    head = model.get_output_embeddings().weight.detach().numpy()
    expected = tiny._weights(0)["language_model.lm_head.weight"]
    np.testing.assert_allclose(head, expected, rtol=2**-7, atol=1e-6)  # loaded, not tied
    processor = transformers.AutoProcessor.from_pretrained(path)
    messages = CONVERSATIONS[0]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == expected_prompt(messages, True)
    clip = 0.1 * np.random.default_rng(0).standard_normal(16000).astype(np.float32)
    try:
        inputs = processor(text=text, audio=[clip], sampling_rate=16000, return_tensors="pt")
    except TypeError:  # transformers < 4.48 names it `audios`
        inputs = processor(text=text, audios=[clip], sampling_rate=16000, return_tensors="pt")
    n_audio = int((inputs["input_ids"] == tiny.special_token_ids()["<|AUDIO|>"]).sum())
    assert n_audio in (1, 25)  # 25 tokens per second once the processor expands the marker
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[0] == 1 and logits.shape[-1] == tiny.tiny_vocab_size()
    assert logits.shape[1] == inputs["input_ids"].shape[1] + (24 if n_audio == 1 else 0)
    assert torch.isfinite(logits).all() and logits.std() > 0.1


@pytest.mark.parity
def test_transformers_tokenizer(ckpt: Path, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    regex = pytest.importorskip("regex")
    fast = transformers.AutoTokenizer.from_pretrained(ckpt)
    ids = tiny.special_token_ids()
    assert len(fast) == len(_json(ckpt / "vocab.json")) + len(SPECIALS)
    assert fast.eos_token == "<|im_end|>" and fast.pad_token == "<|endoftext|>"
    assert fast.bos_token is None and fast.eos_token_id == ids["<|im_end|>"]
    for token, token_id in ids.items():
        assert fast.encode(token, add_special_tokens=False) == [token_id]
        assert fast.convert_ids_to_tokens(token_id) == token
    for messages in CONVERSATIONS:
        rendered = fast.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert rendered == expected_prompt(messages, True)
    slow_dir = tmp_path / "slow"
    slow_dir.mkdir()
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(ckpt / name, slow_dir / name)
    slow = transformers.Qwen2Tokenizer.from_pretrained(slow_dir)  # no tokenizer.json here
    split = regex.compile(tiny.QWEN2_PRETOKENIZE_REGEX).findall
    prompt = expected_prompt(CONVERSATIONS[2], True)
    for text in [*SAMPLES, prompt, "cafe\u0301"]:
        encoded = fast.encode(text, add_special_tokens=False)
        assert fast.decode(encoded) == unicodedata.normalize("NFC", text)
        assert slow.encode(text, add_special_tokens=False) == encoded
        assert reference_encode(text, ckpt, split) == encoded
