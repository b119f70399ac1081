"""The transformers reference that parity tests compare this project against.

Import this module only after ``pytest.importorskip("torch")`` and
``pytest.importorskip("transformers")``: it needs both (CPU torch is enough).

What "the reference" is:

- **Features**: ``WhisperFeatureExtractor`` called per 30 s window exactly as
  ``Qwen2AudioProcessor`` calls it (``padding="max_length"``, ``truncation=True``,
  ``return_attention_mask=True``), see :func:`reference_features`. With torch installed the
  extractor computes in float32 (``torch.stft``); that is what this module returns.
- **Audio longer than 30 s**: the official processing applied to each consecutive 30 s window
  (as defined in :mod:`qaudio_local.audio.windows`): each window gets its own features, mask and
  masked encoder pass, keeps its valid tokens, and the windows' tokens are concatenated where
  the clip's ``<|AUDIO|>`` placeholder stands. For a clip of at most 30 s this is the plain
  official path (``tests/test_reference.py`` checks it against
  ``Qwen2AudioForConditionalGeneration.forward`` on ``Qwen2AudioProcessor`` output).
- **Model**: ``Qwen2AudioForConditionalGeneration`` in float32, eval mode, with one
  deliberate change: the audio encoder's ``conv1``/``conv2`` kernels are rounded to float16
  and back, because the GGUF projector stores them as F16 (ggml's ``conv_1d`` needs F16
  kernels, so the converter writes them that way whatever the outtype). Their biases and every
  other tensor stay float32.
- **Prompt**: one user turn in the Qwen2-Audio chat format built by
  :func:`qaudio_local.engine.prompt.render` with the marker ``<|audio_bos|><|AUDIO|><|audio_eos|>``.
- **Greedy**: plain argmax for ``n`` steps over the full vocabulary, decoded with the model's
  KV cache; end-of-turn tokens are not special (the continuation goes on past them).

Written against transformers 5 (``masking_utils.create_bidirectional_mask``, the ``cache``
argument); the self-checks in ``tests/test_reference.py`` pin it to the official forward.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import ParamSpec, TypeVar

import numpy as np
import torch
from transformers import (
    AutoTokenizer,
    Qwen2AudioForConditionalGeneration,
    WhisperFeatureExtractor,
)
from transformers.masking_utils import create_bidirectional_mask

from qaudio_local.config import HOP_LENGTH, N_FFT, N_MELS, SAMPLE_RATE
from qaudio_local.engine.prompt import render, user

__all__ = ["AUDIO_MARKER", "ReferenceModel", "reference_features", "reference_windows"]

AUDIO_MARKER = "<|audio_bos|><|AUDIO|><|audio_eos|>"
AUDIO_TOKEN = "<|AUDIO|>"
REFERENCE_WINDOW = 30 * SAMPLE_RATE  # 480 000 samples: the extractor's chunk_length
# The tiny model's ops are small, and OpenMP workers spin at barriers: with 2 threads on 2 cores
# that another process was using, one encoder window took 0.75 s, against 0.04 s on 1 thread.
TORCH_THREADS = 1


@contextlib.contextmanager
def torch_threads(n: int = TORCH_THREADS) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads, restoring the setting afterwards."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


P = ParamSpec("P")
R = TypeVar("R")


def _inference(fn: Callable[P, R]) -> Callable[P, R]:
    """Run ``fn`` without autograd and with :data:`TORCH_THREADS` threads."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with torch.no_grad(), torch_threads():
            return fn(*args, **kwargs)

    return wrapper


@functools.lru_cache(maxsize=1)
def _extractor() -> WhisperFeatureExtractor:
    """The feature extractor with Qwen2-Audio-7B-Instruct's preprocessor settings."""
    return WhisperFeatureExtractor(
        feature_size=N_MELS,
        sampling_rate=SAMPLE_RATE,
        hop_length=HOP_LENGTH,
        chunk_length=REFERENCE_WINDOW // SAMPLE_RATE,
        n_fft=N_FFT,
    )


def reference_windows(samples: np.ndarray) -> list[np.ndarray]:
    """Cut mono audio into consecutive 30 s windows, the last one holding the remainder.

    Written independently of :func:`qaudio_local.audio.windows.split_windows`: it keeps every
    window, even a tail too short to make an audio token (its features then mask everything
    but at most two frames, and it contributes no tokens).
    """
    return [samples[i : i + REFERENCE_WINDOW] for i in range(0, samples.size, REFERENCE_WINDOW)]


def reference_features(samples: np.ndarray) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Return the official features of each 30 s window of ``samples``.

    Args:
        samples: Mono float32 samples at 16 kHz.

    Returns:
        One ``(input_features, feature_attention_mask)`` pair per window: a float32 tensor of
        shape (1, 128, 3000) and an integer tensor of shape (1, 3000), straight from
        ``WhisperFeatureExtractor`` as ``Qwen2AudioProcessor`` calls it.
    """
    out = []
    with torch_threads():
        for window in reference_windows(np.asarray(samples, dtype=np.float32)):
            batch = _extractor()(
                window,
                sampling_rate=SAMPLE_RATE,
                padding="max_length",
                truncation=True,
                return_attention_mask=True,
                return_tensors="pt",
            )
            out.append((batch["input_features"], batch["attention_mask"]))
    return out


class ReferenceModel:
    """The official model, used the way the reference definition above says.

    Args:
        ckpt_dir: A Qwen2-Audio checkpoint in the Hugging Face layout.
    """

    def __init__(self, ckpt_dir: str | Path) -> None:
        model = Qwen2AudioForConditionalGeneration.from_pretrained(str(ckpt_dir))
        self.model = model.float().eval()
        self.tokenizer = AutoTokenizer.from_pretrained(str(ckpt_dir))
        self.audio_token_id: int = self.tokenizer.get_vocab()[AUDIO_TOKEN]
        tower = self.model.model.audio_tower
        with torch.no_grad():
            for conv in (tower.conv1, tower.conv2):
                conv.weight.copy_(conv.weight.half().float())  # the GGUF stores these as F16

    # --- audio ----------------------------------------------------------------------------

    @_inference
    def window_embeddings(
        self, input_features: torch.Tensor, feature_attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """Encode one window with the masked encoder and project its valid tokens.

        The same steps as ``Qwen2AudioModel.forward``: the mask over the 1500 encoder
        positions marks the first ``(n_valid_frames - 1) // 2 + 1`` as real, the encoder
        runs with that bidirectional mask, the projector maps its output, and only the first
        ``n_audio_tokens`` of the 750 pooled tokens are kept.

        Returns:
            A float32 tensor of shape (n_audio_tokens, hidden_size).
        """
        tower = self.model.model.audio_tower
        feat_lengths, out_lengths = tower._get_feat_extract_output_lengths(
            feature_attention_mask.sum(-1)
        )
        max_seq_len = (input_features.shape[-1] - 2) // 2 + 1
        positions = torch.arange(max_seq_len, dtype=feat_lengths.dtype)[None, :]
        mask_2d = (positions < feat_lengths[:, None]).long()
        mask = create_bidirectional_mask(
            config=tower.config,
            inputs_embeds=torch.zeros(1, max_seq_len, 1, dtype=torch.float32),
            attention_mask=mask_2d,
        )
        hidden = tower(input_features, attention_mask=mask).last_hidden_state
        projected = self.model.model.multi_modal_projector(hidden)
        return projected[0, : int(out_lengths[0])]

    @_inference
    def audio_embeddings(self, samples: np.ndarray) -> torch.Tensor:
        """Return a clip's audio embeddings: its windows' valid tokens, concatenated.

        Returns:
            A float32 tensor of shape (n_audio_tokens, hidden_size); 25 rows per second of
            audio, per 30 s window.
        """
        parts = [self.window_embeddings(f, m) for f, m in reference_features(samples)]
        hidden = self.model.config.text_config.hidden_size
        return torch.cat(parts) if parts else torch.zeros(0, hidden)

    # --- text -----------------------------------------------------------------------------

    def prompt_ids(self, prompt_text: str, n_audios: int) -> list[int]:
        """Token ids of one user turn holding ``n_audios`` audios then ``prompt_text``.

        Each audio stands as ``<|audio_bos|>``, a single ``<|AUDIO|>``, ``<|audio_eos|>``.
        """
        clips = [np.zeros(1, dtype=np.float32)] * n_audios  # render only needs placeholders
        text = render([user(*clips, prompt_text)], AUDIO_MARKER).text
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    @_inference
    def prompt_embeddings(self, prompt_text: str, audios: Sequence[np.ndarray]) -> torch.Tensor:
        """The text model's input: prompt token embeddings with each audio spliced in.

        Every ``<|AUDIO|>`` placeholder, in order, is replaced by that audio's embeddings
        (:meth:`audio_embeddings`), so the sequence grows by ``n_audio_tokens - 1`` per audio.

        Returns:
            A float32 tensor of shape (1, n_positions, hidden_size).
        """
        ids = torch.tensor(self.prompt_ids(prompt_text, len(audios)))
        text = self.model.get_input_embeddings()(ids)
        slots = (ids == self.audio_token_id).nonzero().flatten().tolist()
        if len(slots) != len(audios):
            raise ValueError(f"the prompt has {len(slots)} audio slots for {len(audios)} audios")
        parts, start = [], 0
        for slot, audio in zip(slots, audios, strict=True):
            parts += [text[start:slot], self.audio_embeddings(audio)]
            start = slot + 1
        parts.append(text[start:])
        return torch.cat(parts)[None]

    @_inference
    def _next_logits(self, embeds: torch.Tensor) -> torch.Tensor:
        mask = torch.ones(embeds.shape[:2], dtype=torch.long)
        return self.model(inputs_embeds=embeds, attention_mask=mask).logits[0, -1]

    @_inference
    def last_logits(self, prompt_text: str, audios: Sequence[np.ndarray]) -> np.ndarray:
        """Return the float32 logits at the last prompt position, shape (vocab_size,)."""
        return self._next_logits(self.prompt_embeddings(prompt_text, audios)).numpy()

    @_inference
    def greedy(self, prompt_text: str, audios: Sequence[np.ndarray], n: int = 20) -> list[int]:
        """Return ``n`` greedily chosen token ids after the prompt (argmax, no stop token).

        The prompt is prefilled once and each chosen token is fed back through the model's
        KV cache, as ``generate`` does.
        """
        embeds = self.prompt_embeddings(prompt_text, audios)
        table = self.model.get_input_embeddings()
        length = embeds.shape[1]
        out = self.model(
            inputs_embeds=embeds,
            attention_mask=torch.ones(1, length, dtype=torch.long),
            use_cache=True,
        )
        tokens: list[int] = []
        while True:
            tokens.append(int(out.logits[0, -1].argmax()))
            if len(tokens) == n:
                return tokens
            length += 1
            out = self.model(
                inputs_embeds=table(torch.tensor([tokens[-1:]])),
                attention_mask=torch.ones(1, length, dtype=torch.long),
                cache=out.cache,
                use_cache=True,
            )
