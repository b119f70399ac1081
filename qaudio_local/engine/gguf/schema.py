"""What the two GGUF files must hold before llama.cpp may see them.

llama.cpp trusts much of what a GGUF declares and answers some contradictions with a
``GGML_ASSERT`` that aborts the whole process. So the schema here is closed: for the
qwen2 text model and the qwen2a projector, every key llama.cpp (libllama, libmtmd) or this
project's encoder reads is listed with its GGUF type and range, and a key in the namespaces
they read (``qwen2.``, ``tokenizer.``, ``clip.``, ``split.``) that is not listed is refused
rather than guessed about. Every tensor has a name, a shape derived from the metadata and
the ggml types the kernels that use it accept (norms and biases are added to F32
activations, so they must be F32). Keys in other namespaces (``general.*`` beyond the few
llama.cpp reads, ``quantize.imatrix.*``, other architectures') are never read and pass.

The rules come from llama.cpp's loaders as vendored in llama-cpp-python 0.3.36:
``llama_model_base::load_hparams``, ``llama_model_qwen2`` and ``llama_vocab::impl::load``
for the text model, ``clip_model_loader`` and ``clip_graph_whisper_enc`` for the projector.
The reading and rule-checking machinery the schema is written with is :mod:`.meta`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...config import SPECIAL_TOKENS
from .meta import Meta, TensorRule, check_tensors
from .scan import FLOAT32, INT32, STRING, GGUFScan

# ggml type ids
F32, F16, BF16 = 0, 1, 30
_LEGACY_QUANTS = {2, 3, 6, 7, 8}  # Q4_0, Q4_1, Q5_0, Q5_1, Q8_0
_K_QUANTS = {10, 11, 12, 13, 14}  # Q2_K .. Q6_K (Q8_K is for dot products only)
_I_QUANTS = {16, 17, 18, 19, 20, 21, 22, 23, 29}  # IQ2_XXS .. IQ4_XS, IQ1_M
WEIGHT_TYPES = frozenset({F32, F16, BF16} | _LEGACY_QUANTS | _K_QUANTS | _I_QUANTS)
"""Types a weight matrix may have: every type llama.cpp's quantizer writes for a dense model."""
VECTOR_TYPES = frozenset({F32})  # norms and biases: added to or multiplied with F32 activations
CONV_TYPES = frozenset({F32, F16})  # ggml's 1-D convolution (im2col) takes these kernels
FLOAT_TYPES = frozenset({F32, F16, BF16})

MAX_LAYERS = 512  # LLAMA_MAX_LAYERS
MAX_WIDTH = 1 << 16
MAX_VOCAB = 1 << 24
N_MELS = 128  # the features this project computes (Whisper-large-v3 / Qwen2-Audio)
N_POSITIONS = 1500  # encoder positions of a 30 s window: libmtmd always uses all of them
QWEN2_AUDIO_SPECIAL = SPECIAL_TOKENS  # the converter writes them; the checks want them
TOKEN_TYPES = range(0, 7)  # LLAMA_TOKEN_TYPE_UNDEFINED .. BYTE
SPECIAL_TYPES = (3, 4)  # CONTROL, USER_DEFINED: the types llama.cpp parses as special text
SPECIAL_ID_KEYS = tuple(
    f"tokenizer.ggml.{name}_token_id"
    for name in [
        "bos",
        "eos",
        "eot",
        "eom",
        "unknown",
        "seperator",
        "padding",
        "cls",
        "mask",
        "fim_pre",
        "fim_suf",
        "fim_mid",
        "fim_pad",
        "fim_rep",
        "fim_sep",
        "prefix",
        "suffix",
        "middle",
    ]
)
TOKENIZER_FLAGS = tuple(
    f"tokenizer.ggml.{name}"
    for name in [
        "add_bos_token",
        "add_eos_token",
        "add_sep_token",
        "add_space_prefix",
        "remove_extra_whitespaces",
        "normalizer.lowercase",
        "normalizer.strip_accents",
    ]
)


def quantized(scan: GGUFScan) -> bool:
    """Whether any weight matrix is stored in a quantized ggml type."""
    return any(len(t.shape) >= 2 and t.ggml_type not in FLOAT_TYPES for t in scan.tensors)


# --- the text model ---------------------------------------------------------------------


@dataclass(frozen=True)
class TextFacts:
    """What the runtime needs to know about a valid text model."""

    n_embd: int
    n_layer: int
    n_ctx_train: int
    n_vocab: int
    quantized: bool
    prompt_format: str = "chat"


# the base model's name as llama.cpp's converter and this project's write it (no "Instruct")
_BASE_NAME = re.compile(r"qwen2[\s_-]*audio[\s_-]*7b", re.I)


def prompt_format(meta: Meta) -> str:
    """``"chat"`` (Qwen2-Audio-7B-Instruct's chat template) or ``"base"`` (Qwen2-Audio-7B:
    the audio, then a task prompt), from the file's own metadata.

    A model without ``tokenizer.chat_template`` cannot be prompted in a chat format. One
    with a template is the base model only when its names say so: ``general.name`` (or
    ``general.basename`` and ``general.size_label``) is Qwen2-Audio-7B and neither it nor
    ``general.finetune`` says "Instruct" or "Chat".
    """
    kv = meta.scan.kv

    def text(key: str) -> str:
        entry = kv.get(key)
        raw = entry.value if entry is not None and entry.type == STRING else b""
        return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else ""

    if "tokenizer.chat_template" not in kv:
        return "base"
    names = [text("general.name"), f"{text('general.basename')} {text('general.size_label')}"]
    if re.search(r"instruct|chat", " ".join([*names, text("general.finetune")]), re.I):
        return "chat"
    if any(_BASE_NAME.fullmatch(n.strip()) for n in names):
        return "base"
    return "chat"


def validate_text(meta: Meta) -> TextFacts:
    """Check a qwen2 text model against the schema (see the module docstring).

    Raises:
        ModelFileError: Anything the schema does not allow.
    """
    arch = meta.text("general.architecture")
    if arch == "clip":
        raise meta.fail(
            "is an audio projector (mmproj), not the text model",
            "pass it as --mmproj-file and the main GGUF as --model-file",
        )
    if arch != "qwen2":
        raise meta.fail(
            f"holds a {arch!r} model, not Qwen2-Audio's qwen2 text model",
            "pass the Qwen2-Audio text GGUF (`qaudio list` shows the registry's)",
        )
    meta.general()
    h = _text_hparams(meta)
    n_vocab = _tokenizer(meta)
    meta.uint("qwen2.vocab_size", lo=n_vocab, hi=n_vocab, required=False)
    meta.closed(("qwen2.",), "a dense Qwen2 text model")
    meta.closed(("tokenizer.",), "Qwen2's BPE tokenizer")
    check_tensors(meta, _text_tensors(n_vocab=n_vocab, **h), "a Qwen2 text model")
    ctx = meta.scan.kv["qwen2.context_length"].value
    return TextFacts(
        h["n_embd"], h["n_layer"], int(ctx), n_vocab, quantized(meta.scan), prompt_format(meta)
    )


def _text_hparams(meta: Meta) -> dict[str, int]:
    u = meta.uint
    u("qwen2.context_length", hi=1 << 24)
    n_embd = u("qwen2.embedding_length", hi=MAX_WIDTH) or 0
    n_layer = u("qwen2.block_count", hi=MAX_LAYERS) or 0
    n_ff = u("qwen2.feed_forward_length", hi=1 << 20) or 0
    n_head = u("qwen2.attention.head_count", hi=n_embd) or 0
    if n_embd % n_head:
        raise meta.fail(
            f"has qwen2.attention.head_count = {n_head}, which does not divide its width of "
            f"{n_embd}"
        )
    n_head_kv = u("qwen2.attention.head_count_kv", hi=n_head, required=False) or n_head
    if n_head % n_head_kv:
        raise meta.fail(
            f"has qwen2.attention.head_count_kv = {n_head_kv}, which does not divide its "
            f"{n_head} attention heads"
        )
    head = n_embd // n_head
    for key in ("rope.dimension_count", "attention.key_length", "attention.value_length"):
        u(f"qwen2.{key}", lo=head, hi=head, required=False)  # llama.cpp asserts n_rot == head
    meta.real("qwen2.attention.layer_norm_rms_epsilon", 0.0, 1.0)
    meta.real("qwen2.rope.freq_base", 0.0, 1e30, required=False)
    meta.text("qwen2.rope.scaling.type", required=False, choices=("none", "linear"))
    for key in ("factor", "attn_factor"):
        meta.real(f"qwen2.rope.scaling.{key}", 0.0, 1e6, required=False)
    meta.real("qwen2.rope.scale_linear", 0.0, 1e6, required=False)
    u("qwen2.rope.scaling.original_context_length", hi=1 << 24, required=False)
    meta.flag("qwen2.rope.scaling.finetuned")
    return {"n_embd": n_embd, "n_layer": n_layer, "n_ff": n_ff, "n_kv": head * n_head_kv}


def _tokenizer(meta: Meta) -> int:
    """Check Qwen2's byte-level BPE tokenizer; return the vocabulary size."""
    meta.text("tokenizer.ggml.model", choices=("gpt2",))
    meta.text("tokenizer.ggml.pre", required=False, choices=("qwen2", "default"))
    tokens = meta.strings("tokenizer.ggml.tokens") or []
    n = len(tokens)
    if not 1 <= n <= MAX_VOCAB:
        raise meta.fail(f"has a vocabulary of {n} tokens")
    _check_strings(meta, "tokenizer.ggml.tokens", tokens, unique=True)
    types = meta.numbers("tokenizer.ggml.token_type", (INT32,))
    if types is None:  # llama.cpp then takes <|im_start|>, <|AUDIO|> ... for plain text
        raise meta.fail(
            "has no tokenizer.ggml.token_type, so llama.cpp cannot tell the chat format's "
            "special tokens from text"
        )
    if types is not None:
        if len(types) != n:
            raise meta.fail(f"has {len(types)} token types for {n} tokens")
        if n and not (types.min() >= TOKEN_TYPES.start and types.max() < TOKEN_TYPES.stop):
            raise meta.fail("has token types outside 0..6")
    scores = meta.numbers("tokenizer.ggml.scores", (FLOAT32, INT32))
    if scores is not None and (len(scores) != n or not np.isfinite(scores).all()):
        raise meta.fail(f"has {len(scores)} token scores (or non-finite ones) for {n} tokens")
    merges = meta.strings("tokenizer.ggml.merges") or []
    if len(merges) > MAX_VOCAB:
        raise meta.fail(f"has {len(merges)} BPE merges")
    _check_strings(meta, "tokenizer.ggml.merges", merges, unique=False)
    for key in SPECIAL_ID_KEYS:
        meta.uint(key, lo=0, hi=n - 1, required=False)
    for key in TOKENIZER_FLAGS:
        meta.flag(key)
    meta.numbers("tokenizer.ggml.suppress_tokens", (INT32,))
    meta.text("tokenizer.huggingface.json", required=False)
    for key in meta.scan.kv:
        if key == "tokenizer.chat_template" or key.startswith("tokenizer.chat_template."):
            meta.text(key, required=False)
    index = {t: i for i, t in enumerate(tokens)}
    for special in QWEN2_AUDIO_SPECIAL:
        i = index.get(special.encode())
        if i is None:
            raise meta.fail(
                f"has no {special} token: its tokenizer is not Qwen2-Audio's",
                "use the text model converted or published with Qwen2-Audio",
            )
        if types is not None and int(types[i]) not in SPECIAL_TYPES:
            raise meta.fail(f"marks {special} (token {i}) as ordinary text, not a special token")
    return n


def _check_strings(meta: Meta, key: str, items: list[bytes], *, unique: bool) -> None:
    """Each item valid UTF-8 (and, for tokens, non-empty and unique)."""
    if not items:
        return
    try:
        b"\n".join(items).decode("utf-8")  # ASCII separators keep a broken sequence broken
    except UnicodeDecodeError:
        bad = next(i for i, s in enumerate(items) if not _utf8(s))
        raise meta.fail(f"has element {bad} of {key} that is not valid UTF-8") from None
    if not unique:
        return
    if min(map(len, items)) == 0:
        raise meta.fail(f"has an empty token (number {items.index(b'')}) in {key}")
    if len(set(items)) != len(items):
        seen: set[bytes] = set()
        for item in items:
            if item in seen:
                raise meta.fail(f"has the token {item.decode()[:40]!r} twice in {key}")
            seen.add(item)


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _text_tensors(
    *, n_embd: int, n_layer: int, n_ff: int, n_kv: int, n_vocab: int
) -> dict[str, TensorRule]:
    w, v = WEIGHT_TYPES, VECTOR_TYPES
    rules = {
        "token_embd.weight": TensorRule((n_embd, n_vocab), w),
        "output_norm.weight": TensorRule((n_embd,), v),
        "output.weight": TensorRule((n_embd, n_vocab), w, required=False),
        "output.bias": TensorRule((n_vocab,), v, required=False),
    }
    for i in range(n_layer):
        p = f"blk.{i}."
        rules |= {
            p + "attn_norm.weight": TensorRule((n_embd,), v),
            p + "attn_q.weight": TensorRule((n_embd, n_embd), w),
            p + "attn_k.weight": TensorRule((n_embd, n_kv), w),
            p + "attn_v.weight": TensorRule((n_embd, n_kv), w),
            p + "attn_q.bias": TensorRule((n_embd,), v, required=False),
            p + "attn_k.bias": TensorRule((n_kv,), v, required=False),
            p + "attn_v.bias": TensorRule((n_kv,), v, required=False),
            p + "attn_output.weight": TensorRule((n_embd, n_embd), w),
            p + "ffn_norm.weight": TensorRule((n_embd,), v),
            p + "ffn_gate.weight": TensorRule((n_embd, n_ff), w),
            p + "ffn_up.weight": TensorRule((n_embd, n_ff), w),
            p + "ffn_down.weight": TensorRule((n_ff, n_embd), w),
        }
    return rules


# --- the projector ----------------------------------------------------------------------


@dataclass(frozen=True)
class ProjectorFacts:
    """What the runtime needs to know about a valid projector."""

    projector_type: str
    projection_dim: int
    n_mels: int
    quantized: bool


def validate_projector(meta: Meta) -> ProjectorFacts:
    """Check a qwen2a audio projector against the schema (see the module docstring).

    Raises:
        ModelFileError: Anything the schema does not allow.
    """
    arch = meta.text("general.architecture")
    if arch != "clip":
        raise meta.fail(
            f"is not a projector (architecture {arch!r})", "pass the mmproj GGUF as --mmproj-file"
        )
    meta.general()
    if not meta.flag("clip.has_audio_encoder"):
        raise meta.fail(
            "is a vision projector with no audio encoder (clip.has_audio_encoder)",
            "Qwen2-Audio needs its audio mmproj (`qaudio list` shows the registry's)",
        )
    for other in ("clip.has_vision_encoder", "clip.has_gen_audio_encoder"):
        if meta.flag(other):
            raise meta.fail(f"sets {other}: it is not Qwen2-Audio's audio-only projector")
    ptype = meta.text("clip.projector_type", required=False)
    audio_ptype = meta.text("clip.audio.projector_type", required=False)
    ptype = ptype or audio_ptype  # libmtmd reads the general key first
    if ptype != "qwen2a":
        raise meta.fail(
            f"is a {ptype!r} audio projector (clip.projector_type), not Qwen2-Audio's qwen2a",
            "use the mmproj converted or published with Qwen2-Audio",
        )
    gelu, silu = meta.flag("clip.use_gelu"), meta.flag("clip.use_silu")
    if gelu and silu:
        raise meta.fail("sets both clip.use_gelu and clip.use_silu")
    dims = _projector_hparams(meta)
    meta.closed(("clip.",), "Qwen2-Audio's audio projector")
    check_tensors(meta, _projector_tensors(**dims), "Qwen2-Audio's audio projector")
    return ProjectorFacts("qwen2a", dims["out"], dims["mels"], quantized(meta.scan))


def _projector_hparams(meta: Meta) -> dict[str, int]:
    u = meta.uint
    d = u("clip.audio.embedding_length", hi=MAX_WIDTH) or 0
    heads = u("clip.audio.attention.head_count", hi=d) or 0
    if d % heads:
        raise meta.fail(
            f"is inconsistent: width {d} is not divisible into {heads} attention heads "
            "(clip.audio.attention.head_count)"
        )
    u("clip.audio.attention.head_count_kv", lo=heads, hi=heads, required=False)
    u("clip.audio.attention.head_dim", lo=d // heads, hi=d // heads, required=False)
    ffn = u("clip.audio.feed_forward_length", hi=1 << 20) or 0
    layers = u("clip.audio.block_count", hi=MAX_LAYERS) or 0
    out = u("clip.audio.projection_dim", hi=MAX_WIDTH) or 0
    mels = u("clip.audio.num_mel_bins", lo=N_MELS, hi=N_MELS) or 0
    meta.real("clip.audio.attention.layer_norm_epsilon", 0.0, 1.0)
    return {"d": d, "ffn": ffn, "layers": layers, "out": out, "mels": mels}


def _projector_tensors(*, d: int, ffn: int, layers: int, out: int, mels: int) -> dict[str, Any]:
    w, v = WEIGHT_TYPES, VECTOR_TYPES
    rules = {
        "a.conv1d.1.weight": TensorRule((3, mels, d), CONV_TYPES),
        "a.conv1d.1.bias": TensorRule((1, d), v),
        "a.conv1d.2.weight": TensorRule((3, d, d), CONV_TYPES),
        "a.conv1d.2.bias": TensorRule((1, d), v),
        "a.position_embd.weight": TensorRule((d, N_POSITIONS), v, min_last=True),
        "a.post_ln.weight": TensorRule((d,), v),
        "a.post_ln.bias": TensorRule((d,), v),
        "mm.a.fc.weight": TensorRule((d, out), w),
        "mm.a.fc.bias": TensorRule((out,), v),
    }
    for i in range(layers):
        p = f"a.blk.{i}."
        rules |= {
            p + "ln1.weight": TensorRule((d,), v),
            p + "ln1.bias": TensorRule((d,), v),
            p + "ln2.weight": TensorRule((d,), v),
            p + "ln2.bias": TensorRule((d,), v),
            p + "attn_q.weight": TensorRule((d, d), w),
            p + "attn_q.bias": TensorRule((d,), v),
            p + "attn_k.weight": TensorRule((d, d), w),  # Whisper's keys have no bias
            p + "attn_v.weight": TensorRule((d, d), w),
            p + "attn_v.bias": TensorRule((d,), v),
            p + "attn_out.weight": TensorRule((d, d), w),
            p + "attn_out.bias": TensorRule((d,), v),
            p + "ffn_up.weight": TensorRule((d, ffn), w),
            p + "ffn_up.bias": TensorRule((ffn,), v),
            p + "ffn_down.weight": TensorRule((ffn, d), w),
            p + "ffn_down.bias": TensorRule((d,), v),
        }
    return rules
