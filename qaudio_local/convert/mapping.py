"""Which checkpoint tensor becomes which GGUF tensor, in which type and shape."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import ConversionError
from .checkpoint import Checkpoint

Transform = Callable[[np.ndarray], np.ndarray]

LM = "language_model.model."
_TEXT_LAYER = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
_AUDIO_LAYER = {
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.out_proj.weight": "attn_out.weight",
    "self_attn.out_proj.bias": "attn_out.bias",
    "self_attn_layer_norm.weight": "ln1.weight",
    "self_attn_layer_norm.bias": "ln1.bias",
    "final_layer_norm.weight": "ln2.weight",
    "final_layer_norm.bias": "ln2.bias",
    "fc1.weight": "ffn_up.weight",
    "fc1.bias": "ffn_up.bias",
    "fc2.weight": "ffn_down.weight",
    "fc2.bias": "ffn_down.bias",
}
_AUDIO_GLOBAL = {
    "audio_tower.conv1.weight": "a.conv1d.1.weight",
    "audio_tower.conv1.bias": "a.conv1d.1.bias",
    "audio_tower.conv2.weight": "a.conv1d.2.weight",
    "audio_tower.conv2.bias": "a.conv1d.2.bias",
    "audio_tower.embed_positions.weight": "a.position_embd.weight",
    "audio_tower.layer_norm.weight": "a.post_ln.weight",
    "audio_tower.layer_norm.bias": "a.post_ln.bias",
    "multi_modal_projector.linear.weight": "mm.a.fc.weight",
    "multi_modal_projector.linear.bias": "mm.a.fc.bias",
}


@dataclass(frozen=True)
class TensorPlan:
    """One output tensor: where it comes from and how it is stored.

    Attributes:
        gguf_name: Name in the GGUF file.
        source: Tensor name in the checkpoint (hub layout).
        shape: numpy shape written (GGUF reverses it into ggml's ``ne``).
        dtype: ``np.float32`` or ``np.float16``: the storage type, or the type the data
            is prepared in before quantization.
        quant: ``"q8_0"`` to store the tensor quantized (8-bit blocks of 32), else None.
        transform: Applied to the float32 source before the cast (e.g. a reshape).
    """

    gguf_name: str
    source: str
    shape: tuple[int, ...]
    dtype: type[np.floating]
    transform: Transform | None = None
    quant: str | None = None

    @property
    def nbytes(self) -> int:
        """Bytes of the tensor data in the output file."""
        if self.quant is not None:
            return int(np.prod(self.stored_shape))
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize

    @property
    def stored_shape(self) -> tuple[int, ...]:
        """The shape written: ``shape``, or the bytes per row of a quantized tensor."""
        if self.quant is None:
            return self.shape
        return (*self.shape[:-1], self.shape[-1] // Q8_0_BLOCK * Q8_0_BLOCK_BYTES)


Q8_0_BLOCK, Q8_0_BLOCK_BYTES = 32, 34  # 32 int8 weights + one f16 scale


def _plan(dst: str, src: str, shape: tuple[int, ...], outtype: str) -> TensorPlan:
    """1-D tensors (norms, biases) stay F32, as llama.cpp expects; matrices follow outtype.

    With ``q8_0``, matrices whose rows split into 32-value blocks are quantized; the rest
    fall back to F16.
    """
    if len(shape) < 2 or outtype == "f32":
        return TensorPlan(dst, src, shape, np.float32)
    if outtype == "q8_0" and shape[-1] % Q8_0_BLOCK == 0:
        return TensorPlan(dst, src, shape, np.float32, quant="q8_0")
    return TensorPlan(dst, src, shape, np.float16)


def _check_shape(ckpt: Checkpoint, name: str, expected: tuple[int, ...]) -> tuple[int, ...]:
    shape = ckpt.shape(name)
    if shape != expected:
        raise ConversionError(
            f"tensor {name} has shape {shape}, but config.json implies "
            f"{expected}; the weights do not match the config",
            path=str(ckpt.directory),
        )
    return shape


def _text_expected(ckpt: Checkpoint) -> dict[str, tuple[int, ...]]:
    t = ckpt.text
    head_dim = t.hidden_size // t.n_heads
    kv = t.n_kv_heads * head_dim
    per_layer = {
        "input_layernorm.weight": (t.hidden_size,),
        "self_attn.q_proj.weight": (t.hidden_size, t.hidden_size),
        "self_attn.q_proj.bias": (t.hidden_size,),
        "self_attn.k_proj.weight": (kv, t.hidden_size),
        "self_attn.k_proj.bias": (kv,),
        "self_attn.v_proj.weight": (kv, t.hidden_size),
        "self_attn.v_proj.bias": (kv,),
        "self_attn.o_proj.weight": (t.hidden_size, t.hidden_size),
        "post_attention_layernorm.weight": (t.hidden_size,),
        "mlp.gate_proj.weight": (t.intermediate_size, t.hidden_size),
        "mlp.up_proj.weight": (t.intermediate_size, t.hidden_size),
        "mlp.down_proj.weight": (t.hidden_size, t.intermediate_size),
    }
    out = {
        f"{LM}embed_tokens.weight": (t.vocab_size, t.hidden_size),
        f"{LM}norm.weight": (t.hidden_size,),
    }
    for i in range(t.n_layers):
        out.update({f"{LM}layers.{i}.{k}": v for k, v in per_layer.items()})
    return out


def text_plans(ckpt: Checkpoint, outtype: str) -> list[TensorPlan]:
    """Plans for the qwen2 text model GGUF."""
    plans: list[TensorPlan] = []
    for src, shape in _text_expected(ckpt).items():
        if src not in ckpt:
            raise ConversionError(
                f"the checkpoint lacks tensor {src}; it is incomplete", path=str(ckpt.directory)
            )
        _check_shape(ckpt, src, shape)
        if src.endswith("embed_tokens.weight"):
            dst = "token_embd.weight"
        elif src.endswith("model.norm.weight"):
            dst = "output_norm.weight"
        else:
            rest = src[len(f"{LM}layers.") :]
            bid, key = rest.split(".", 1)
            dst = f"blk.{bid}.{_TEXT_LAYER[key]}"
        plans.append(_plan(dst, src, shape, outtype))
    head = "language_model.lm_head.weight"
    if head in ckpt:
        shape = _check_shape(ckpt, head, (ckpt.text.vocab_size, ckpt.text.hidden_size))
        plans.append(_plan("output.weight", head, shape, outtype))
    elif not ckpt.text.tie_word_embeddings:
        raise ConversionError(
            f"the checkpoint lacks {head} and does not tie embeddings", path=str(ckpt.directory)
        )
    return plans


def _as_column(x: np.ndarray) -> np.ndarray:
    return x.reshape(-1, 1)


def audio_plans(ckpt: Checkpoint, outtype: str) -> list[TensorPlan]:
    """Plans for the audio projector (clip / qwen2a) GGUF."""
    a, t = ckpt.audio, ckpt.text
    expected: dict[str, tuple[int, ...]] = {
        "audio_tower.conv1.weight": (a.d_model, a.n_mels, 3),
        "audio_tower.conv1.bias": (a.d_model,),
        "audio_tower.conv2.weight": (a.d_model, a.d_model, 3),
        "audio_tower.conv2.bias": (a.d_model,),
        "audio_tower.embed_positions.weight": (a.max_positions, a.d_model),
        "audio_tower.layer_norm.weight": (a.d_model,),
        "audio_tower.layer_norm.bias": (a.d_model,),
        "multi_modal_projector.linear.weight": (t.hidden_size, a.d_model),
        "multi_modal_projector.linear.bias": (t.hidden_size,),
    }
    per_layer: dict[str, tuple[int, ...]] = {
        k: (a.d_model,) for k in _AUDIO_LAYER if k.endswith("bias")
    }
    per_layer.update(
        {
            k: (a.d_model, a.d_model)
            for k in _AUDIO_LAYER
            if "self_attn." in k and k.endswith("weight") and "layer_norm" not in k
        }
    )
    per_layer.update(
        {
            "self_attn_layer_norm.weight": (a.d_model,),
            "final_layer_norm.weight": (a.d_model,),
            "fc1.weight": (a.ffn_dim, a.d_model),
            "fc1.bias": (a.ffn_dim,),
            "fc2.weight": (a.d_model, a.ffn_dim),
        }
    )
    for i in range(a.n_layers):
        expected.update({f"audio_tower.layers.{i}.{k}": v for k, v in per_layer.items()})

    plans: list[TensorPlan] = []
    for src, shape in expected.items():
        if src not in ckpt:
            raise ConversionError(
                f"the checkpoint lacks tensor {src}; it is incomplete", path=str(ckpt.directory)
            )
        _check_shape(ckpt, src, shape)
        if src in _AUDIO_GLOBAL:
            dst = _AUDIO_GLOBAL[src]
        else:
            rest = src[len("audio_tower.layers.") :]
            bid, key = rest.split(".", 1)
            dst = f"a.blk.{bid}.{_AUDIO_LAYER[key]}"
        if ".conv1d." in dst and dst.endswith("weight"):
            # ggml's conv_1d (im2col) needs F16 kernels, whatever the outtype.
            plans.append(TensorPlan(dst, src, shape, np.float16))
        elif ".conv1d." in dst:
            plans.append(TensorPlan(dst, src, (shape[0], 1), np.float32, _as_column))
        elif dst == "a.position_embd.weight":
            plans.append(TensorPlan(dst, src, shape, np.float32))
        else:
            plans.append(_plan(dst, src, shape, outtype))
    return plans


def unknown_tensors(ckpt: Checkpoint, used: set[str]) -> list[str]:
    """Checkpoint tensors that no plan consumes (the converter refuses to drop weights)."""
    return [n for n in ckpt.names() if n not in used]
