"""Read a Hugging Face Qwen2-Audio checkpoint directory without loading it whole.

Tensors are listed from the safetensors headers and read one at a time, so peak
memory stays near the largest single tensor (the real checkpoint is 16 GB).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CheckpointNotFoundError, ConversionError
from .safetensors_io import SafetensorsFile

QWEN2_AUDIO_ARCH = "Qwen2AudioForConditionalGeneration"

# transformers 5 saves the same weights under other prefixes; map them to the hub layout.
_PREFIX_ALIASES = (
    ("model.language_model.", "language_model.model."),
    ("model.audio_tower.", "audio_tower."),
    ("model.multi_modal_projector.", "multi_modal_projector."),
    ("lm_head.", "language_model.lm_head."),
)

# Defaults of transformers' Qwen2Config / Qwen2AudioEncoderConfig, used for absent keys.
_TEXT_DEFAULTS: dict[str, Any] = {
    "vocab_size": 151936,
    "hidden_size": 4096,
    "intermediate_size": 22016,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "max_position_embeddings": 32768,
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
}
_AUDIO_DEFAULTS: dict[str, Any] = {
    "num_mel_bins": 128,
    "encoder_layers": 32,
    "encoder_attention_heads": 20,
    "encoder_ffn_dim": 5120,
    "d_model": 1280,
    "max_source_positions": 1500,
}


@dataclass(frozen=True)
class TextHParams:
    """Hyper-parameters of the Qwen2 text model."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    max_positions: int
    rope_theta: float
    rms_norm_eps: float
    tie_word_embeddings: bool


@dataclass(frozen=True)
class AudioHParams:
    """Hyper-parameters of the Whisper-shaped audio encoder."""

    n_mels: int
    n_layers: int
    n_heads: int
    ffn_dim: int
    d_model: int
    max_positions: int
    layer_norm_eps: float


def _merged(section: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    return {**defaults, **{k: v for k, v in section.items() if v is not None}}


def _text_hparams(config: dict[str, Any]) -> TextHParams:
    c = _merged(config.get("text_config") or {}, _TEXT_DEFAULTS)
    return TextHParams(
        vocab_size=int(c["vocab_size"]),
        hidden_size=int(c["hidden_size"]),
        intermediate_size=int(c["intermediate_size"]),
        n_layers=int(c["num_hidden_layers"]),
        n_heads=int(c["num_attention_heads"]),
        n_kv_heads=int(c.get("num_key_value_heads") or c["num_attention_heads"]),
        max_positions=int(c["max_position_embeddings"]),
        rope_theta=float(c["rope_theta"]),
        rms_norm_eps=float(c["rms_norm_eps"]),
        tie_word_embeddings=bool(c["tie_word_embeddings"]),
    )


def _audio_hparams(config: dict[str, Any]) -> AudioHParams:
    c = _merged(config.get("audio_config") or {}, _AUDIO_DEFAULTS)
    return AudioHParams(
        n_mels=int(c["num_mel_bins"]),
        n_layers=int(c["encoder_layers"]),
        n_heads=int(c["encoder_attention_heads"]),
        ffn_dim=int(c["encoder_ffn_dim"]),
        d_model=int(c["d_model"]),
        max_positions=int(c["max_source_positions"]),
        layer_norm_eps=float(c.get("layer_norm_eps", 1e-5)),
    )


def canonical_name(name: str) -> str:
    """Map a tensor name of any known save layout to the hub (transformers 4) layout."""
    for alias, canonical in _PREFIX_ALIASES:
        if name.startswith(alias):
            return canonical + name[len(alias) :]
    return name


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConversionError(
            f"cannot read {path.name} in {path.parent}: {exc}; re-download the checkpoint",
            path=str(path),
        ) from exc
    if not isinstance(data, dict):
        raise ConversionError(
            f"{path} is not a JSON object; re-download the checkpoint", path=str(path)
        )
    return data


class Checkpoint:
    """A Qwen2-Audio checkpoint directory, opened lazily.

    Args:
        directory: The Hugging Face checkpoint directory.

    Raises:
        CheckpointNotFoundError: The directory, its config.json or its weights are missing.
        ConversionError: The checkpoint is not Qwen2-Audio or its files are malformed.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise CheckpointNotFoundError(
                f"checkpoint directory not found: {self.directory}; pass the folder that holds "
                "config.json and the *.safetensors files",
                path=str(self.directory),
            )
        config_path = self.directory / "config.json"
        if not config_path.is_file():
            raise CheckpointNotFoundError(
                f"{self.directory} has no config.json; is it a Hugging Face checkpoint folder?",
                path=str(config_path),
            )
        self.config = _read_json(config_path)
        archs = self.config.get("architectures") or []
        if QWEN2_AUDIO_ARCH not in archs and self.config.get("model_type") != "qwen2_audio":
            found = ", ".join(archs) or self.config.get("model_type") or "unknown"
            raise ConversionError(
                f"{self.directory} is not a Qwen2-Audio checkpoint (architecture: {found}); "
                f"only {QWEN2_AUDIO_ARCH} (e.g. Qwen/Qwen2-Audio-7B-Instruct) can be converted",
                path=str(config_path),
            )
        self.text = _text_hparams(self.config)
        self.audio = _audio_hparams(self.config)
        self._files: dict[Path, SafetensorsFile] = {}
        self._where: dict[str, tuple[Path, str]] = {}
        self._index_tensors()

    # -- tensor index ------------------------------------------------------------------

    def _weight_files(self) -> list[Path]:
        index = self.directory / "model.safetensors.index.json"
        if index.is_file():
            weight_map = _read_json(index).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise ConversionError(
                    f"{index} has no weight_map; re-download the checkpoint", path=str(index)
                )
            files = sorted({self.directory / str(f) for f in weight_map.values()})
            missing = [f.name for f in files if not f.is_file()]
            if missing:
                raise CheckpointNotFoundError(
                    f"{self.directory} is missing shard(s) {', '.join(missing)} listed in "
                    f"{index.name}; download them again",
                    path=str(self.directory / missing[0]),
                )
            return files
        files = sorted(self.directory.glob("*.safetensors"))
        if not files:
            bins = sorted(self.directory.glob("*.bin"))
            hint = (
                " (found PyTorch *.bin files: save the model with safe_serialization=True)"
                if bins
                else ""
            )
            raise CheckpointNotFoundError(
                f"{self.directory} has no *.safetensors weights{hint}", path=str(self.directory)
            )
        return files

    def _index_tensors(self) -> None:
        for path in self._weight_files():
            st = SafetensorsFile(path)
            self._files[path] = st
            names = st.keys()
            for raw in names:
                name = canonical_name(raw)
                if name in self._where:
                    raise ConversionError(
                        f"tensor {raw} appears twice ({self._where[name][0].name} and "
                        f"{path.name}); the checkpoint is inconsistent",
                        path=str(path),
                    )
                self._where[name] = (path, raw)

    def names(self) -> list[str]:
        """Every tensor name in the hub layout, sorted."""
        return sorted(self._where)

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def shape(self, name: str) -> tuple[int, ...]:
        """The shape of tensor ``name`` as stored (no data is read)."""
        path, raw = self._where[name]
        return tuple(self._files[path].shape(raw))

    def read(self, name: str) -> np.ndarray:
        """Read one tensor as float32 (BF16 and F16 are widened exactly)."""
        path, raw = self._where[name]
        return np.asarray(self._files[path].read(raw), dtype=np.float32)

    def iter_names(self, prefix: str) -> Iterator[str]:
        """Tensor names that start with ``prefix``."""
        return (n for n in self.names() if n.startswith(prefix))

    def close(self) -> None:
        """Release every open weight file."""
        for st in self._files.values():
            st.close()
        self._files.clear()

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
