"""The GGUF checks (engine.gguf: scan, schema, check): every file llama.cpp would
abort on, or that would make the reader loop or allocate, is a ModelFileError first.

The bad files are made from the tiny model by qaudio_dev/gguf_edit.py; tests/test_gguf_loadcheck.py
shows, for several of them, that llama.cpp itself really aborts on them.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import struct
import time
import tracemalloc
from pathlib import Path

import gguf
import numpy as np
import pytest

from qaudio_dev import gguf_edit as ge
from qaudio_local.engine.gguf import check as gguf_check
from qaudio_local.engine.gguf import check_pair, check_projector, check_text_model
from qaudio_local.engine.gguf import schema as gguf_schema
from qaudio_local.engine.gguf.scan import scan
from qaudio_local.errors import ModelFileError, QAudioError

VT, QT = ge.VT, ge.QT
Pair = tuple[Path, Path]


def refused(path: Path, *words: str, projector: bool = False) -> str:
    """The check's message for ``path``, which must be a ModelFileError naming the file."""
    check = check_projector if projector else check_text_model
    t0 = time.perf_counter()
    with pytest.raises(ModelFileError) as err:
        check(path)
    assert time.perf_counter() - t0 < 1.0
    msg = str(err.value)
    assert path.name in msg and err.value.path == str(path)
    assert "\n" not in msg and len(msg) < 600
    for word in words:
        assert word in msg, msg
    return msg


# --- valid files keep passing -------------------------------------------------------------


@pytest.fixture(scope="module")
def other_outtypes(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Pair]:
    from qaudio_local.convert import convert_checkpoint

    out = tmp_path_factory.mktemp("outtypes")
    pairs = []
    for outtype in ("f16", "q8_0", "Q4_K_M"):
        res = convert_checkpoint(tiny_checkpoint, out / outtype, outtype=outtype)
        pairs.append((res.model_path, res.mmproj_path))
    return pairs


def test_converted_pairs_of_every_kind_pass(tiny_gguf: Pair, other_outtypes: list[Pair]) -> None:
    for text, mmproj in [tiny_gguf, *other_outtypes]:
        t0 = time.perf_counter()
        model, projector = check_text_model(text), check_projector(mmproj)
        check_pair(model, projector)
        assert time.perf_counter() - t0 < 1.0
        assert (model.n_embd, model.n_layer, model.n_vocab, model.n_ctx_train) == (
            256,
            2,
            768,
            8192,
        )
        assert (projector.projection_dim, projector.n_mels) == (256, 128)
        assert len(model.header_digest) == 64 and model.header_digest != projector.header_digest
    assert [check_text_model(t).quantized for t, _ in other_outtypes] == [False, True, True]


def test_the_edit_helper_round_trips_byte_for_byte(tiny_gguf: Pair, tmp_path: Path) -> None:
    for src in tiny_gguf:
        out = ge.rewrite(src, tmp_path / src.name)
        assert out.read_bytes() == src.read_bytes()


def test_weight_type_sizes_match_libggml() -> None:
    """The block sizes the reader uses (gguf-py's table) are those of the ggml in use."""
    import llama_cpp

    lib = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"))
    lib.ggml_type_size.restype = ctypes.c_size_t
    lib.ggml_blck_size.restype = ctypes.c_int64
    for t in gguf_schema.WEIGHT_TYPES:
        block, size = gguf.GGML_QUANT_SIZES[QT(t)]
        assert (lib.ggml_blck_size(t), lib.ggml_type_size(t)) == (block, size), QT(t).name


# --- metadata: every key llama.cpp reads, with its type and range ---------------------------

TEXT_METADATA = [
    ("qwen2.block_count", (0, VT.UINT32, None), "qwen2.block_count = 0"),
    ("qwen2.block_count", (513, VT.UINT32, None), "from 1 to 512"),
    ("qwen2.block_count", (2, VT.INT32, None), "INT32, but it must be UINT32"),
    ("qwen2.block_count", ([2, 2], VT.ARRAY, VT.UINT32), "ARRAY[UINT32]"),
    ("qwen2.block_count", ("2", VT.STRING, None), "STRING"),
    ("qwen2.context_length", (8192, VT.UINT64, None), "UINT64"),
    ("qwen2.attention.layer_norm_rms_epsilon", (math.nan, VT.FLOAT32, None), "nan"),
    ("qwen2.attention.layer_norm_rms_epsilon", (-1e-5, VT.FLOAT32, None), "between 0 and 1"),
    ("qwen2.attention.layer_norm_rms_epsilon", (0.0, VT.FLOAT32, None), "between 0 and 1"),
    ("qwen2.attention.layer_norm_rms_epsilon", (math.inf, VT.FLOAT32, None), "inf"),
    ("qwen2.rope.freq_base", (math.nan, VT.FLOAT32, None), "rope.freq_base"),
    ("qwen2.rope.dimension_count", (0, VT.UINT32, None), "must be 64"),
    ("qwen2.attention.key_length", (32, VT.UINT32, None), "must be 64"),
    ("qwen2.attention.head_count", (3, VT.UINT32, None), "does not divide"),
    ("qwen2.attention.head_count_kv", (3, VT.UINT32, None), "does not divide"),
    ("qwen2.expert_count", (4, VT.UINT32, None), "a setting a dense Qwen2 text model"),
    ("qwen2.rope.scaling.type", ("yarn", VT.STRING, None), "'yarn'"),
    ("general.alignment", (1, VT.UINT32, None), "or a wrong general.alignment"),
    ("general.type", ("adapter", VT.STRING, None), "'adapter'"),
    ("split.count", (3, VT.UINT16, None), "one of 3 split parts"),
    ("tokenizer.ggml.model", ("llama", VT.STRING, None), "'llama'"),
    ("tokenizer.ggml.model", ("gpt3", VT.STRING, None), "takes gpt2"),
    ("tokenizer.ggml.pre", ("llama3", VT.STRING, None), "tokenizer.ggml.pre"),
    ("tokenizer.ggml.eos_token_id", (768, VT.UINT32, None), "from 0 to 767"),
    ("tokenizer.ggml.eos_token_id", (758, VT.INT32, None), "INT32"),
    ("tokenizer.ggml.add_bos_token", (1, VT.UINT8, None), "BOOL"),
    ("tokenizer.ggml.precompiled_charsmap", ([1], VT.ARRAY, VT.UINT8), "BPE tokenizer"),
]


@pytest.mark.parametrize(("key", "value", "words"), TEXT_METADATA, ids=lambda x: str(x)[:40])
def test_text_metadata_llama_cpp_would_choke_on(
    tiny_gguf: Pair, tmp_path: Path, key: str, value: ge.Field, words: str
) -> None:
    bad = ge.rewrite(tiny_gguf[0], tmp_path / "edited.gguf", kv={key: value})
    refused(bad, key, words)


@pytest.mark.parametrize(
    "key",
    ["qwen2.block_count", "qwen2.attention.layer_norm_rms_epsilon", "tokenizer.ggml.tokens",
     "tokenizer.ggml.model", "qwen2.embedding_length", "general.architecture"],
)  # fmt: skip
def test_text_metadata_that_is_missing(tiny_gguf: Pair, tmp_path: Path, key: str) -> None:
    bad = ge.rewrite(tiny_gguf[0], tmp_path / "missing.gguf", drop=(key,))
    refused(bad, key)


PROJECTOR_METADATA = [
    ("clip.audio.attention.layer_norm_epsilon", (math.nan, VT.FLOAT32, None), "nan"),
    ("clip.audio.attention.layer_norm_epsilon", (-1.0, VT.FLOAT32, None), "between 0 and 1"),
    ("clip.audio.num_mel_bins", (80, VT.UINT32, None), "must be 128"),
    ("clip.audio.block_count", (2**32 - 1, VT.UINT32, None), "from 1 to 512"),
    ("clip.audio.block_count", (5, VT.UINT32, None), "lacks tensor a.blk.3.ln1.weight"),
    ("clip.audio.embedding_length", (64, VT.INT32, None), "INT32, but it must be UINT32"),
    ("clip.audio.embedding_length", (32, VT.UINT32, None), "implies (3, 128, 32)"),
    ("clip.audio.attention.head_count", (3, VT.UINT32, None), "not divisible"),
    ("clip.audio.attention.head_count_kv", (2, VT.UINT32, None), "must be 4"),
    ("clip.audio.projection_dim", (128, VT.UINT32, None), "mm.a.fc.weight | (64, 128)"),
    ("clip.has_vision_encoder", (True, VT.BOOL, None), "clip.has_vision_encoder"),
    ("clip.has_audio_encoder", (False, VT.BOOL, None), "no audio encoder"),
    ("clip.projector_type", ("qwen2.5o", VT.STRING, None), "not Qwen2-Audio's qwen2a"),
    ("clip.audio.feature_layer", ([1, 2], VT.ARRAY, VT.INT32), "audio projector does not"),
    ("clip.use_silu", (1, VT.UINT32, None), "clip.use_silu | BOOL"),
    ("general.alignment", (8, VT.UINT32, None), "or a wrong general.alignment"),
]


@pytest.mark.parametrize(("key", "value", "words"), PROJECTOR_METADATA, ids=lambda x: str(x)[:40])
def test_projector_metadata_llama_cpp_would_choke_on(
    tiny_gguf: Pair, tmp_path: Path, key: str, value: ge.Field, words: str
) -> None:
    bad = ge.rewrite(tiny_gguf[1], tmp_path / "edited-mmproj.gguf", kv={key: value})
    refused(bad, *words.split(" | "), projector=True)


def test_a_missing_projector_epsilon(tiny_gguf: Pair, tmp_path: Path) -> None:
    key = "clip.audio.attention.layer_norm_epsilon"
    bad = ge.rewrite(tiny_gguf[1], tmp_path / "no-eps.gguf", drop=(key,))
    refused(bad, f"lacks {key}", projector=True)


def test_unknown_namespaces_are_left_alone(tiny_gguf: Pair, tmp_path: Path) -> None:
    extra = {
        "general.url": ("https://example.org", VT.STRING, None),
        "general.tags": (["a", "b"], VT.ARRAY, VT.STRING),
        "quantize.imatrix.entries_count": (7, VT.INT32, None),
        "llama.context_length": (5, VT.UINT32, None),  # another architecture's: never read
    }
    text = ge.rewrite(tiny_gguf[0], tmp_path / "text.gguf", kv=extra)
    mmproj = ge.rewrite(tiny_gguf[1], tmp_path / "mmproj.gguf", kv=extra)
    check_pair(check_text_model(text), check_projector(mmproj))


# --- tensors: names, shapes and types --------------------------------------------------------


def _name_is(name: str):  # noqa: ANN202 - a predicate
    return lambda n: n == name


@pytest.mark.parametrize(
    ("name", "qtype"),
    [("output_norm.weight", QT.F16), ("blk.0.attn_norm.weight", QT.BF16),
     ("blk.1.ffn_norm.weight", QT.Q8_0), ("blk.0.attn_q.bias", QT.F16),
     ("blk.1.attn_v.bias", QT.Q8_0)],
)  # fmt: skip
def test_text_norms_and_biases_must_be_f32(
    tiny_gguf: Pair, tmp_path: Path, name: str, qtype: QT
) -> None:
    bad = ge.rewrite(
        tiny_gguf[0], tmp_path / "retyped.gguf", tensors=ge.retype(_name_is(name), qtype)
    )
    refused(bad, f"tensor {name} as {qtype.name}", "F32")


@pytest.mark.parametrize(
    ("name", "qtype"),
    [("a.post_ln.weight", QT.F16), ("a.blk.0.ln1.bias", QT.BF16), ("mm.a.fc.bias", QT.Q8_0),
     ("a.conv1d.1.bias", QT.F16), ("a.position_embd.weight", QT.Q8_0),
     ("a.conv1d.2.weight", QT.BF16)],
)  # fmt: skip
def test_projector_vectors_and_kernels_keep_their_types(
    tiny_gguf: Pair, tmp_path: Path, name: str, qtype: QT
) -> None:
    edit = ge.retype(_name_is(name), qtype)
    bad = ge.rewrite(tiny_gguf[1], tmp_path / "retyped-mmproj.gguf", tensors=edit)
    refused(bad, f"tensor {name} as {qtype.name}", projector=True)


def test_matrices_may_be_any_weight_type(tiny_gguf: Pair, tmp_path: Path) -> None:
    edit = ge.retype(lambda n: n.endswith(("attn_q.weight", "ffn_up.weight")), QT.BF16)
    text = ge.rewrite(tiny_gguf[0], tmp_path / "bf16.gguf", tensors=edit)
    assert not check_text_model(text).quantized
    edit = ge.retype(_name_is("mm.a.fc.weight"), QT.Q8_0)
    mmproj = ge.rewrite(tiny_gguf[1], tmp_path / "q8-mmproj.gguf", tensors=edit)
    assert check_projector(mmproj).quantized


def _cut(name: str, keep: int):  # noqa: ANN202 - a tensor edit
    def edit(t: ge.Tensor) -> ge.Tensor:
        return (
            ge.Tensor(t.name, np.ascontiguousarray(t.data[:keep]), t.ggml_type)
            if t.name == name
            else t
        )

    return edit


def test_projector_shapes(tiny_gguf: Pair, tmp_path: Path) -> None:
    mm = tiny_gguf[1]
    refused(ge.rewrite(mm, tmp_path / "p1.gguf", tensors=_cut("a.position_embd.weight", 1499)),
            "a.position_embd.weight", "at least 1500", projector=True)  # fmt: skip
    longer = ge.rewrite(mm, tmp_path / "p2.gguf", tensors=lambda t: (
        ge.Tensor(t.name, np.concatenate([t.data, t.data[:10]]), t.ggml_type)
        if t.name == "a.position_embd.weight" else t))  # fmt: skip
    check_projector(longer)  # more positions than needed are fine

    def flat_bias(t: ge.Tensor) -> ge.Tensor:
        return (
            ge.Tensor(t.name, t.data.reshape(-1), t.ggml_type) if t.name == "a.conv1d.1.bias" else t
        )

    refused(
        ge.rewrite(mm, tmp_path / "p3.gguf", tensors=flat_bias), "a.conv1d.1.bias", projector=True
    )
    refused(ge.rewrite(mm, tmp_path / "p4.gguf", tensors=_cut("mm.a.fc.bias", 255)),
            "mm.a.fc.bias", "(256)", projector=True)  # fmt: skip
    refused(ge.rewrite(mm, tmp_path / "p5.gguf", tensors=_cut("a.blk.2.ffn_up.bias", 100)),
            "a.blk.2.ffn_up.bias", projector=True)  # fmt: skip


@pytest.mark.parametrize(
    ("which", "name", "shape"),
    [(1, "a.blk.0.attn_k.bias", (64,)), (1, "v.patch_embd.weight", (2, 2, 2, 2)),
     (0, "blk.0.attn_qkv.weight", (768, 256)), (0, "blk.2.attn_q.weight", (256, 256)),
     (1, "a.blk.0.ffn_gate.weight", (128, 64))],
)  # fmt: skip
def test_extra_tensors_are_refused(
    tiny_gguf: Pair, tmp_path: Path, which: int, name: str, shape: tuple[int, ...]
) -> None:
    extra = ge.Tensor(name, np.zeros(shape, np.float32), QT.F32)
    bad = ge.rewrite(tiny_gguf[which], tmp_path / "extra.gguf", extra=(extra,))
    refused(bad, f"holds a tensor {name}", projector=bool(which))


@pytest.mark.parametrize(("which", "name"), [(0, "blk.1.ffn_down.weight"), (1, "a.blk.2.ln2.bias")])
def test_missing_tensors_are_refused(
    tiny_gguf: Pair, tmp_path: Path, which: int, name: str
) -> None:
    bad = ge.rewrite(
        tiny_gguf[which], tmp_path / "missing.gguf", tensors=lambda t: None if t.name == name else t
    )
    refused(bad, f"lacks tensor {name}", projector=bool(which))


# --- the vocabulary ----------------------------------------------------------------------------


def _vocab_edit(src: Path, dst: Path, edit) -> Path:  # noqa: ANN001
    fields, tensors = ge.read(src)
    tokens = list(fields["tokenizer.ggml.tokens"][0])
    types = list(fields["tokenizer.ggml.token_type"][0])
    edit(tokens, types)
    fields["tokenizer.ggml.tokens"] = (tokens, VT.ARRAY, VT.STRING)
    fields["tokenizer.ggml.token_type"] = (types, VT.ARRAY, VT.INT32)
    return ge.write(dst, fields, tensors)


def test_vocabulary_problems(tiny_gguf: Pair, tmp_path: Path) -> None:
    src = tiny_gguf[0]

    def dup(t: list, _: list) -> None:
        t[5] = t[6]

    def empty(t: list, _: list) -> None:
        t[9] = ""

    def renamed(t: list, _: list) -> None:
        t[t.index("<|AUDIO|>")] = "<|audio|>"

    def ordinary(t: list, ty: list) -> None:
        ty[t.index("<|audio_bos|>")] = 1

    def short(_: list, ty: list) -> None:
        del ty[-1]

    refused(_vocab_edit(src, tmp_path / "a.gguf", dup), "twice")
    refused(_vocab_edit(src, tmp_path / "b.gguf", empty), "empty token (number 9)")
    refused(_vocab_edit(src, tmp_path / "c.gguf", renamed), "no <|AUDIO|> token")
    refused(_vocab_edit(src, tmp_path / "d.gguf", ordinary), "<|audio_bos|>", "ordinary text")
    refused(_vocab_edit(src, tmp_path / "e.gguf", short), "767 token types for 768 tokens")
    raw = bytearray(src.read_bytes())
    at = raw.find(b"<|im_start|>")
    raw[at + 3] = 0xFF  # invalid UTF-8 inside a token
    (tmp_path / "f.gguf").write_bytes(bytes(raw))
    refused(tmp_path / "f.gguf", "not valid UTF-8")


def test_a_vocabulary_of_real_size_is_checked_in_well_under_a_second(tmp_path: Path) -> None:
    n = 152_000
    tokens = [f"tok{i}" for i in range(n - 6)] + list(gguf_schema.QWEN2_AUDIO_SPECIAL)
    merges = [f"t{i} o{i}" for i in range(151_000)]
    fields: dict[str, ge.Field] = {
        "general.architecture": ("qwen2", VT.STRING, None),
        "qwen2.context_length": (8192, VT.UINT32, None),
        "qwen2.embedding_length": (64, VT.UINT32, None),
        "qwen2.block_count": (1, VT.UINT32, None),
        "qwen2.feed_forward_length": (64, VT.UINT32, None),
        "qwen2.attention.head_count": (1, VT.UINT32, None),
        "qwen2.attention.layer_norm_rms_epsilon": (1e-6, VT.FLOAT32, None),
        "tokenizer.ggml.model": ("gpt2", VT.STRING, None),
        "tokenizer.ggml.tokens": (tokens, VT.ARRAY, VT.STRING),
        "tokenizer.ggml.token_type": ([1] * (n - 6) + [3] * 6, VT.ARRAY, VT.INT32),
        "tokenizer.ggml.merges": (merges, VT.ARRAY, VT.STRING),
    }
    path = ge.write(tmp_path / "big-vocab.gguf", fields, [])
    t0 = time.perf_counter()
    refused(path, "lacks tensor token_embd.weight")
    assert time.perf_counter() - t0 < 1.0


# --- hostile layouts: counts and lengths bounded by the file before anything is read ----------


def _header_patch(src: Path, dst: Path, offset: int, fmt: str, value: int) -> Path:
    raw = bytearray(src.read_bytes())
    struct.pack_into(fmt, raw, offset, value)
    dst.write_bytes(bytes(raw))
    return dst


HOSTILE = [
    ("tokens-2^31", lambda s, d: ge.patch_field(s, d, "tokenizer.ggml.tokens", 2**31, part=4)),
    ("tokens-2^63", lambda s, d: ge.patch_field(s, d, "tokenizer.ggml.tokens", 2**63, part=4)),
    (
        "merges-2^64-1",
        lambda s, d: ge.patch_field(s, d, "tokenizer.ggml.merges", 2**64 - 1, part=4),
    ),
    ("types-2^40", lambda s, d: ge.patch_field(s, d, "tokenizer.ggml.token_type", 2**40, part=4)),
    ("types+1", lambda s, d: ge.patch_field(s, d, "tokenizer.ggml.token_type", 769, part=4)),
    ("string-2^62", lambda s, d: ge.patch_field(s, d, "tokenizer.chat_template", 2**62, part=3)),
    ("name-2^32", lambda s, d: ge.patch_field(s, d, "general.name", 2**32, part=3)),
    ("n_tensors-2^63", lambda s, d: _header_patch(s, d, 8, "<Q", 2**63)),
    ("n_kv-2^63", lambda s, d: _header_patch(s, d, 16, "<Q", 2**63)),
    ("n_kv-2^31", lambda s, d: _header_patch(s, d, 16, "<Q", 2**31)),
    ("version-big-endian", lambda s, d: _header_patch(s, d, 4, ">I", 3)),
    ("dim-2^63", lambda s, d: ge.patch_tensor_info(s, d, "token_embd.weight", "dims", 2**63)),
    ("dim-0", lambda s, d: ge.patch_tensor_info(s, d, "output_norm.weight", "dims", 0)),
    ("n_dims-5", lambda s, d: ge.patch_tensor_info(s, d, "output_norm.weight", "n_dims", 5)),
    ("type-99", lambda s, d: ge.patch_tensor_info(s, d, "output_norm.weight", "type", 99)),
    (
        "offset-2^63",
        lambda s, d: ge.patch_tensor_info(s, d, "blk.0.attn_q.weight", "offset", 2**63),
    ),
    ("offset-odd", lambda s, d: ge.patch_tensor_info(s, d, "blk.0.attn_q.weight", "offset", 33)),
]


@pytest.mark.parametrize(("name", "patch"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_counts_cost_nothing(tiny_gguf: Pair, tmp_path: Path, name: str, patch) -> None:  # noqa: ANN001
    bad = patch(tiny_gguf[0], tmp_path / f"{name}.gguf")
    tracemalloc.start()
    try:
        refused(bad)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20  # the tiny file's header is 22 kB; nothing near what it claims


def test_truncation_anywhere_is_a_clean_error(tiny_gguf: Pair, tmp_path: Path) -> None:
    for src, projector in ((tiny_gguf[0], False), (tiny_gguf[1], True)):
        raw = src.read_bytes()
        header = scan(src).data_start
        cuts = [
            *range(0, 64, 7),
            *np.linspace(64, header, 25).astype(int),
            header + 1000,
            len(raw) - 1,
        ]
        for cut in cuts:
            bad = tmp_path / f"cut-{cut}.gguf"
            bad.write_bytes(raw[:cut])
            with pytest.raises(ModelFileError) as err:
                (check_projector if projector else check_text_model)(bad)
            assert any(w in str(err.value) for w in ("truncated", "not a GGUF", "not a usable"))


def test_random_header_flips_never_escape_as_foreign_errors(
    tiny_gguf: Pair, tmp_path: Path
) -> None:
    rng = np.random.default_rng(12)
    for src, check in ((tiny_gguf[0], check_text_model), (tiny_gguf[1], check_projector)):
        raw = src.read_bytes()
        header = scan(src).data_start
        t0 = time.perf_counter()
        for i in range(60):
            b = bytearray(raw)
            for _ in range(int(rng.integers(1, 4))):
                b[int(rng.integers(0, header))] ^= 1 << int(rng.integers(8))
            bad = tmp_path / f"flip-{i}.gguf"
            bad.write_bytes(bytes(b))
            with contextlib.suppress(QAudioError):
                check(bad)
        assert time.perf_counter() - t0 < 30


# --- the checks never raise a foreign exception ------------------------------------------------


def test_a_bug_in_a_check_is_still_a_model_file_error(
    tiny_gguf: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(meta: object) -> None:
        raise KeyError("clip.audio.attention.layer_norm_epsilon")

    monkeypatch.setattr(gguf_check, "validate_projector", broken)
    with pytest.raises(ModelFileError, match="could not be validated .KeyError") as err:
        check_projector(tiny_gguf[1])
    assert tiny_gguf[1].name in str(err.value)


def test_a_model_path_llama_cpp_cannot_be_given(tiny_gguf: Pair, tmp_path: Path) -> None:
    import os

    weird = os.path.join(os.fsencode(tmp_path), b"model-\xff.gguf")
    with open(weird, "wb") as out:
        out.write(tiny_gguf[0].read_bytes())
    with pytest.raises(ModelFileError, match="not valid UTF-8") as err:
        check_text_model(os.fsdecode(weird))
    str(err.value).encode("utf-8")  # printable
