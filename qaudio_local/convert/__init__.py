"""Convert the Hugging Face Qwen2-Audio checkpoint into the GGUF pair llama.cpp loads.

Two files come out: the text model (arch ``qwen2``, with the full byte-level BPE
tokenizer and chat template) and the audio projector (arch ``clip``, projector
``qwen2a``: Whisper encoder + pooling + linear projector). Tensors are streamed
one at a time into a temporary file that is renamed into place only when complete.

The sub-package also holds the checkpoint reader (:mod:`.checkpoint`,
:mod:`.safetensors_io`), the tensor mapping and vocabulary (:mod:`.mapping`, :mod:`.vocab`),
llama.cpp's quantizer for the K-quants (:mod:`.quantize`) and the tiny synthetic model the
tests and the self-test build (:mod:`.tiny`, :mod:`.tiny_tokenizer`). Imports the root and
:mod:`qaudio_local.engine` (for the quantizer's bindings).
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConversionError
from .checkpoint import Checkpoint
from .mapping import TensorPlan, audio_plans, text_plans, unknown_tensors
from .quantize import LLAMA_FTYPES, quantize_text_model
from .vocab import load_vocab

__all__ = ["MMPROJ_OUTTYPES", "OUTTYPES", "ConvertResult", "ProgressFn", "convert_checkpoint"]

# Written by the converter itself (q8_0: the same bytes as llama.cpp's convert_hf_to_gguf.py).
DIRECT_OUTTYPES = ("f32", "f16", "q8_0")
# Text model through llama.cpp's quantizer, from an F16 intermediate (Q8_0 is the same
# format as q8_0; both names are accepted and q8_0 is written directly).
QUANT_OUTTYPES = tuple(k for k in LLAMA_FTYPES if k != "Q8_0")
OUTTYPES = (*DIRECT_OUTTYPES, *QUANT_OUTTYPES)
MMPROJ_OUTTYPES = DIRECT_OUTTYPES
ProgressFn = Callable[[str, int, int], None]  # (tensor name, index done, total)


@dataclass(frozen=True)
class ConvertResult:
    """Paths written by :func:`convert_checkpoint`."""

    model_path: Path
    mmproj_path: Path
    n_tensors: int


def _gguf():
    import gguf
    import gguf.quants  # noqa: F401  (quantize for q8_0)

    return gguf


def _file_type(outtype: str) -> int:
    lft = _gguf().LlamaFileType
    return int({"f16": lft.MOSTLY_F16, "q8_0": lft.MOSTLY_Q8_0}.get(outtype, lft.ALL_F32))


def _write(
    path: Path,
    writer,
    plans: Sequence[TensorPlan],
    ckpt: Checkpoint,
    progress: ProgressFn | None,
    done: int,
    total: int,
) -> int:
    """Stream ``plans`` into ``writer`` (already holding its key/values), atomically."""
    partial = path.with_name(path.name + ".partial")
    q8_0 = _gguf().GGMLQuantizationType.Q8_0
    for plan in plans:
        if plan.quant is None:
            writer.add_tensor_info(plan.gguf_name, plan.shape, np.dtype(plan.dtype), plan.nbytes)
        else:  # byte shape + raw type: the writer derives the element shape
            writer.add_tensor_info(
                plan.gguf_name, plan.stored_shape, np.dtype(np.uint8), plan.nbytes, raw_dtype=q8_0
            )
    try:
        writer.write_header_to_file(partial)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for plan in plans:
            data = ckpt.read(plan.source)
            if plan.transform is not None:
                data = plan.transform(data)
            data = np.ascontiguousarray(data.astype(plan.dtype, copy=False))
            if data.shape == plan.shape and plan.quant is not None:
                data = _gguf().quants.quantize(data, q8_0)
            if data.shape != plan.stored_shape:
                raise ConversionError(
                    f"{plan.source}: produced shape {data.shape}, expected {plan.stored_shape}",
                    path=str(ckpt.directory),
                )
            writer.write_tensor_data(data)
            del data
            done += 1
            if progress is not None:
                progress(plan.gguf_name, done, total)
        writer.close()
        os.replace(partial, path)
    except OSError as exc:
        writer.close()
        partial.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise ConversionError(
                f"the disk holding {path.parent} is full; free space "
                "(the GGUF pair needs about the checkpoint's size) and retry",
                path=str(path),
            ) from exc
        raise ConversionError(f"cannot write {path}: {exc}", path=str(path)) from exc
    except BaseException:
        writer.close()
        partial.unlink(missing_ok=True)
        raise
    return done


def _text_writer(path: Path, ckpt: Checkpoint, outtype: str, name: str):
    gguf = _gguf()
    t = ckpt.text
    vocab = load_vocab(ckpt.directory, t.vocab_size, ckpt.config)
    w = gguf.GGUFWriter(path, "qwen2")
    w.add_name(name)
    w.add_file_type(_file_type(outtype))
    w.add_context_length(t.max_positions)
    w.add_embedding_length(t.hidden_size)
    w.add_block_count(t.n_layers)
    w.add_feed_forward_length(t.intermediate_size)
    w.add_head_count(t.n_heads)
    w.add_head_count_kv(t.n_kv_heads)
    w.add_rope_freq_base(t.rope_theta)
    w.add_layer_norm_rms_eps(t.rms_norm_eps)
    w.add_tokenizer_model("gpt2")
    # Qwen2's pre-tokenizer regex; declared explicitly (llama.cpp's hash table
    # only recognises vocabularies it has seen).
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(vocab.tokens)
    w.add_token_types(vocab.token_types)
    w.add_token_merges(vocab.merges)
    w.add_bos_token_id(vocab.bos_id)
    w.add_eos_token_id(vocab.eos_id)
    w.add_pad_token_id(vocab.pad_id)
    w.add_add_bos_token(False)
    if vocab.chat_template:
        w.add_chat_template(vocab.chat_template)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    return w


def _mmproj_writer(path: Path, ckpt: Checkpoint, outtype: str, name: str):
    gguf = _gguf()
    a = ckpt.audio
    w = gguf.GGUFWriter(path, "clip")
    w.add_type(gguf.GGUFType.MMPROJ)
    w.add_name(f"{name} audio projector")
    w.add_file_type(_file_type(outtype))
    w.add_clip_has_audio_encoder(True)
    w.add_clip_projector_type("qwen2a")
    w.add_audio_projection_dim(ckpt.text.hidden_size)
    w.add_audio_embedding_length(a.d_model)
    w.add_audio_feed_forward_length(a.ffn_dim)
    w.add_audio_block_count(a.n_layers)
    w.add_audio_head_count(a.n_heads)
    w.add_audio_num_mel_bins(a.n_mels)
    w.add_audio_attention_layernorm_eps(a.layer_norm_eps)
    return w


def _write_text_model(
    path: Path,
    ckpt: Checkpoint,
    outtype: str,
    text_type: str,
    stem: str,
    plans: Sequence[TensorPlan],
    progress: ProgressFn | None,
    total: int,
) -> int:
    """Write the text model directly, or as F16 then through llama.cpp's quantizer."""
    if outtype == text_type:
        return _write(
            path, _text_writer(path, ckpt, outtype, stem), plans, ckpt, progress, 0, total
        )
    try:  # the F16 intermediate lives next to the output: same disk, removed in any case
        tmp = Path(tempfile.mkdtemp(prefix=f".{stem}.", suffix=".f16", dir=path.parent))
    except OSError as exc:
        raise ConversionError(f"cannot write in {path.parent}: {exc}", path=str(path)) from exc
    try:
        f16 = tmp / f"{stem}.F16.gguf"
        done = _write(f16, _text_writer(f16, ckpt, "f16", stem), plans, ckpt, progress, 0, total)
        quantize_text_model(f16, path, outtype)
        return done
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def output_paths(
    out_dir: Path, stem: str, outtype: str, mmproj_outtype: str | None = None
) -> tuple[Path, Path]:
    """Where the text model and projector of a conversion are written."""
    mm = mmproj_outtype or default_mmproj_outtype(outtype)
    return (out_dir / f"{stem}.{outtype.upper()}.gguf", out_dir / f"{stem}.mmproj-{mm}.gguf")


def normalize_outtype(outtype: str, *, projector: bool = False) -> str:
    """The canonical spelling of an outtype (``Q4_K_M``, ``q8_0``, ``f16``), case-insensitive.

    Raises:
        ConversionError: Not one of :data:`OUTTYPES` (or :data:`MMPROJ_OUTTYPES`).
    """
    valid = MMPROJ_OUTTYPES if projector else OUTTYPES
    for name in valid:
        if outtype.casefold() == name.casefold():
            return name
    what = "projector outtype" if projector else "outtype"
    raise ConversionError(f"unknown {what} {outtype!r}; choose one of {', '.join(valid)}", path="")


def default_mmproj_outtype(outtype: str) -> str:
    """The projector's storage for a text outtype: the same for f32/f16/q8_0, else f16."""
    return outtype if outtype in DIRECT_OUTTYPES else "f16"


def convert_checkpoint(
    hf_dir: str | Path,
    out_dir: str | Path,
    *,
    outtype: str = "f16",
    mmproj_outtype: str | None = None,
    progress: ProgressFn | None = None,
) -> ConvertResult:
    """Convert a Qwen2-Audio checkpoint folder into ``out_dir``.

    Args:
        hf_dir: The Hugging Face checkpoint folder (config.json, tokenizer, safetensors).
        out_dir: Where to write the two GGUF files (created if needed).
        outtype: ``"f16"`` (matrices in F16), ``"f32"``, ``"q8_0"`` (matrices quantized
            to 8-bit blocks where their rows allow, else F16), or a llama.cpp K-quant level
            (``"Q3_K_M"``, ``"Q4_K_M"``, ``"Q5_K_M"``, ``"Q6_K"``): the text model is written in
            F16 next to the output, quantized by llama.cpp's quantizer, and the F16 file
            removed. Case-insensitive. Norms and biases stay F32 and the encoder's convolution
            kernels are F16 in all of them, as llama.cpp requires.
        mmproj_outtype: The projector's storage, ``"f32"``, ``"f16"`` or ``"q8_0"``
            (default: the same as ``outtype``, f16 for the K-quants).
        progress: Called after each tensor with (gguf name, tensors done, total).

    Returns:
        The written paths.

    Raises:
        CheckpointNotFoundError: Missing folder or files.
        ConversionError: Not Qwen2-Audio, unknown/missing/mis-shaped tensors, disk full.
    """
    outtype = normalize_outtype(outtype)
    mm_type = normalize_outtype(mmproj_outtype or default_mmproj_outtype(outtype), projector=True)
    text_type = outtype if outtype in DIRECT_OUTTYPES else "f16"
    out = Path(out_dir)
    with Checkpoint(hf_dir) as ckpt:
        tplans, aplans = text_plans(ckpt, text_type), audio_plans(ckpt, mm_type)
        extra = unknown_tensors(ckpt, {p.source for p in (*tplans, *aplans)})
        if extra:
            shown = ", ".join(extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
            raise ConversionError(
                f"the checkpoint has tensors this converter does not know: "
                f"{shown}; is it a modified Qwen2-Audio?",
                path=str(ckpt.directory),
            )
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConversionError(f"cannot create {out}: {exc}", path=str(out)) from exc
        stem = Path(hf_dir).resolve().name or "qwen2-audio"
        model_path, mmproj_path = output_paths(out, stem, outtype, mm_type)
        total = len(tplans) + len(aplans)
        done = _write_text_model(
            model_path, ckpt, outtype, text_type, stem, tplans, progress, total
        )
        try:
            _write(
                mmproj_path,
                _mmproj_writer(mmproj_path, ckpt, mm_type, stem),
                aplans,
                ckpt,
                progress,
                done,
                total,
            )
        except BaseException:
            model_path.unlink(missing_ok=True)
            raise
    return ConvertResult(model_path=model_path, mmproj_path=mmproj_path, n_tensors=total)
