"""Self-checks of the transformers reference harness in ``qaudio_dev/reference.py``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qaudio_local.audio.windows import audio_token_count
from qaudio_local.config import SAMPLE_RATE
from qaudio_local.engine.prompt import render, user

pytestmark = pytest.mark.parity

PROMPT = "What does the person say?"
TOL = 1e-5


def noise(seconds: float, peak: float = 0.3, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal(round(seconds * SAMPLE_RATE))
    return (peak * x / np.abs(x).max()).astype(np.float32)


@pytest.fixture(scope="module")
def ref(tiny_checkpoint: Path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from qaudio_dev.reference import ReferenceModel

    return ReferenceModel(tiny_checkpoint)


def _official_last_logits(ref, **inputs) -> np.ndarray:
    import torch

    from qaudio_dev.reference import torch_threads

    with torch.no_grad(), torch_threads():
        return ref.model(**inputs).logits[0, -1].numpy()


def test_short_clip_equals_the_plain_official_path(ref, tiny_checkpoint: Path) -> None:
    import transformers

    from qaudio_dev.reference import AUDIO_MARKER

    clip = noise(5.0)
    processor = transformers.AutoProcessor.from_pretrained(str(tiny_checkpoint))
    text = render([user(clip, PROMPT)], AUDIO_MARKER).text
    inputs = processor(text=text, audio=[clip], sampling_rate=SAMPLE_RATE, return_tensors="pt")
    assert int((inputs["input_ids"] == ref.audio_token_id).sum()) == 125
    official = _official_last_logits(
        ref,
        input_ids=inputs["input_ids"],
        input_features=inputs["input_features"],
        attention_mask=inputs["attention_mask"],
        feature_attention_mask=inputs["feature_attention_mask"],
    )
    ours = ref.last_logits(PROMPT, [clip])
    assert ours.shape == official.shape and ours.dtype == np.float32
    assert np.abs(ours - official).max() < TOL


def test_long_clip_equals_the_official_forward_over_its_windows(ref) -> None:
    """45 s: the windows as a batch of audios through the official forward, tokens in order."""
    import torch

    from qaudio_dev.reference import reference_features

    clip = noise(45.0)
    clip[30 * SAMPLE_RATE :] *= 0.1
    n_tokens = audio_token_count(clip.size)
    ids = ref.prompt_ids(PROMPT, 1)
    slot = ids.index(ref.audio_token_id)
    expanded = ids[:slot] + [ref.audio_token_id] * n_tokens + ids[slot + 1 :]
    windows = reference_features(clip)
    official = _official_last_logits(
        ref,
        input_ids=torch.tensor([expanded]),
        input_features=torch.cat([f for f, _ in windows]),
        attention_mask=torch.ones(1, len(expanded), dtype=torch.long),
        feature_attention_mask=torch.cat([m for _, m in windows]),
    )
    assert np.abs(ref.last_logits(PROMPT, [clip]) - official).max() < TOL


@pytest.mark.parametrize(
    "seconds", [0.5, 29.9, 30.0, 30.0 + 100 / SAMPLE_RATE, 45.0, 60.0 + 321 / SAMPLE_RATE]
)
def test_audio_embeddings_have_the_reference_token_count(ref, seconds: float) -> None:
    clip = noise(seconds)
    emb = ref.audio_embeddings(clip)
    assert tuple(emb.shape) == (
        audio_token_count(clip.size),
        ref.model.config.text_config.hidden_size,
    )


def test_a_tail_too_short_for_a_token_contributes_nothing(ref) -> None:
    clip = noise(30.0 + 100 / SAMPLE_RATE)
    whole = ref.audio_embeddings(clip)
    head = ref.audio_embeddings(clip[: 30 * SAMPLE_RATE])
    assert whole.shape[0] == 750 and bool((whole == head).all())


def test_windows_are_encoded_independently(ref) -> None:
    clip = noise(45.0, seed=3)
    whole = ref.audio_embeddings(clip)
    first = ref.audio_embeddings(clip[: 30 * SAMPLE_RATE])
    second = ref.audio_embeddings(clip[30 * SAMPLE_RATE :])
    assert bool((whole[:750] == first).all()) and bool((whole[750:] == second).all())


def test_only_the_conv_kernels_are_rounded_to_f16(ref, tiny_checkpoint: Path) -> None:
    import torch
    import transformers

    fresh = transformers.Qwen2AudioForConditionalGeneration.from_pretrained(str(tiny_checkpoint))
    ours = dict(ref.model.named_parameters())
    changed = set()
    for name, param in fresh.float().named_parameters():
        if not torch.equal(param, ours[name]):
            changed.add(name)
    assert changed == {"model.audio_tower.conv1.weight", "model.audio_tower.conv2.weight"}
    for name in changed:
        assert torch.equal(ours[name], ours[name].half().float())
    assert ref.model.dtype == torch.float32 and not ref.model.training


def test_prompt_has_one_placeholder_per_audio(ref) -> None:
    ids = ref.prompt_ids(PROMPT, 2)
    assert ids.count(ref.audio_token_id) == 2
    text = ref.tokenizer.decode(ids)
    assert "Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\n" in text
    assert text.endswith(f"{PROMPT}<|im_end|>\n<|im_start|>assistant\n")
    embeds = ref.prompt_embeddings(PROMPT, [noise(1.0), noise(2.0, seed=1)])
    assert embeds.shape[1] == len(ids) - 2 + 25 + 50


def test_greedy_follows_the_argmax_of_recomputed_logits(ref) -> None:
    import torch

    clip = noise(1.0)
    tokens = ref.greedy(PROMPT, [clip], n=4)
    assert len(tokens) == 4 and all(isinstance(t, int) for t in tokens)
    assert ref.greedy(PROMPT, [clip], n=4) == tokens
    embeds = ref.prompt_embeddings(PROMPT, [clip])
    table = ref.model.get_input_embeddings()
    with torch.no_grad():
        for token in tokens:  # the KV-cache decode agrees with full recomputation
            logits = ref.model(inputs_embeds=embeds).logits[0, -1]
            assert int(logits.argmax()) == token
            embeds = torch.cat([embeds, table(torch.tensor([[token]]))], dim=1)
