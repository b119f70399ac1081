"""``AudioModel`` (engine/model.py) through the real llama.cpp bindings on the tiny model.

Nothing is mocked: both audio paths, prompts, sampling, limits and the quantized pairs.
"""

from __future__ import annotations

import numpy as np
import pytest

from qaudio_local.convert.tiny import special_token_ids
from qaudio_local.engine.model import AudioModel, ModelOptions, SamplingOptions
from qaudio_local.engine.prompt import Message, user
from qaudio_local.errors import ContextOverflowError, InvalidAudioError, RuntimeBackendError
from tests.support.audio import tone

GREEDY8 = SamplingOptions(max_tokens=8, stop_at_end_of_turn=False)


def test_stream_yields_typed_chunks_and_a_result(any_model: AudioModel) -> None:
    tiny_model = any_model
    gen = tiny_model.stream("What is this?", [tone(1.0)], sampling=GREEDY8)
    chunks = list(gen)
    res = gen.result
    assert res is not None
    assert [c.token for c in chunks if c.token >= 0] == list(res.tokens)
    assert "".join(c.text for c in chunks) == res.text
    assert res.text == tiny_model.detokenize(res.tokens)
    assert res.finish_reason == "length"
    assert res.usage.completion_tokens == 8
    assert res.usage.audio_seconds == pytest.approx(1.0)
    t = res.timings
    assert t.encode_ms > 0 and t.prefill_ms > 0 and t.decode_ms > 0
    assert t.decode_tokens_per_s > 0
    d = res.to_dict()
    assert set(d) == {"text", "finish_reason", "usage", "timings"}


def test_greedy_is_deterministic(any_model: AudioModel) -> None:
    a = any_model.generate("Transcribe.", [tone(2.0, 300)], sampling=GREEDY8)
    b = any_model.generate("Transcribe.", [tone(2.0, 300)], sampling=GREEDY8)
    assert a.tokens == b.tokens and a.text == b.text


def test_audio_reaches_the_text_model(any_model: AudioModel) -> None:
    tiny_model = any_model
    rng = np.random.default_rng(1)
    tiny_model.clear_cache()  # cold runs, bit for bit (test_scheduler.py covers reuse)
    a = tiny_model.prompt_logits("Describe.", [tone(1.0, 200)])
    b = tiny_model.prompt_logits("Describe.", [(0.5 * rng.standard_normal(16000)).astype("f4")])
    tiny_model.clear_cache()
    c = tiny_model.prompt_logits("Describe.", [tone(1.0, 200)])
    assert a.shape == (768,) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, c)
    assert np.abs(a - b).max() > 1e-3
    res = tiny_model.generate("Describe.", [tone(1.0, 200)], sampling=GREEDY8)
    assert res.tokens[0] == int(np.argmax(a))


def _tokens_per_clip(model: AudioModel, seconds: float) -> int:
    """Faithful: 25 per second (the reference); mtmd: 750 per started 30 s window."""
    if model.options.audio_path == "mtmd":
        return 750 * (int(seconds // 30) + 1)
    return int(round(seconds * 25))


def test_prompt_accounting(any_model: AudioModel) -> None:
    """prompt tokens = text tokens of the chat prompt + audio tokens from the encoder."""
    res = any_model.generate("Hi", [tone(1.0)], sampling=GREEDY8)
    text = (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "Audio 1: <|audio_bos|><|audio_eos|>\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    n_text = len(any_model.tokenize(text))
    assert res.usage.prompt_tokens == n_text + res.usage.audio_tokens
    assert res.usage.audio_tokens == _tokens_per_clip(any_model, 1.0)


@pytest.mark.parametrize("seconds", [0.5, 1.0, 5.0, 29.9, 30.0, 45.0])
def test_audio_token_counts(any_model: AudioModel, seconds: float) -> None:
    """The faithful path gives the reference's 25 tokens/s per 30 s window; mtmd pads."""
    res = any_model.generate("Hi", [tone(seconds)], sampling=SamplingOptions(max_tokens=1))
    expected = {0.5: 12, 1.0: 25, 5.0: 125, 29.9: 747, 30.0: 750, 45.0: 1125}[seconds]
    if any_model.options.audio_path == "mtmd":
        expected = _tokens_per_clip(any_model, seconds)
    assert res.usage.audio_tokens == expected


@pytest.mark.parametrize("n_samples", [1, 2, 200, 201, 400, 2000])
def test_very_short_audio(any_model: AudioModel, n_samples: int) -> None:
    """libmtmd aborts the process on a 1-sample buffer; the runtime must not let it."""
    res = any_model.generate("Hi", [np.full(n_samples, 0.1, np.float32)], sampling=GREEDY8)
    assert res.usage.completion_tokens == 8
    if any_model.options.audio_path == "mtmd":
        assert res.usage.audio_tokens == 750
    else:  # frames = ceil(n/160); tokens = ((frames-1)//2 + 1 - 2)//2 + 1, at least 0
        frames = -(-n_samples // 160)
        assert res.usage.audio_tokens == max(0, ((frames - 1) // 2 - 1) // 2 + 1)
    assert res.usage.audio_seconds == pytest.approx(n_samples / 16000, abs=1e-3)


def test_several_audios_and_voice_chat(any_model: AudioModel) -> None:
    two = any_model.generate("Compare.", [tone(1.0), tone(1.0, 880)], sampling=GREEDY8)
    assert two.usage.audio_tokens == 2 * _tokens_per_clip(any_model, 1.0)
    voice = any_model.generate("", [tone(1.0)], sampling=GREEDY8)
    assert voice.usage.audio_tokens == _tokens_per_clip(any_model, 1.0)
    assert voice.usage.prompt_tokens < two.usage.prompt_tokens
    text_only = any_model.generate("Say something.", sampling=GREEDY8)
    assert text_only.usage.audio_tokens == 0 and text_only.usage.completion_tokens == 8


def test_multi_turn_messages(tiny_model: AudioModel) -> None:
    msgs = [
        Message("system", ("Be brief.",)),
        user(tone(0.5), "What?"),
        Message("assistant", ("A tone.",)),
        user("Louder?"),
    ]
    res = tiny_model.generate(messages=msgs, sampling=GREEDY8)
    assert res.usage.audio_tokens == 12
    assert res.usage.completion_tokens == 8


def test_sampling_is_seeded(tiny_model: AudioModel) -> None:
    def run(seed: int) -> tuple[int, ...]:
        s = SamplingOptions(
            temperature=1.5,
            top_k=50,
            top_p=0.95,
            seed=seed,
            max_tokens=12,
            stop_at_end_of_turn=False,
            repetition_penalty=1.1,
        )
        return tiny_model.generate("Hi", [tone(0.5)], sampling=s).tokens

    assert run(7) == run(7)
    assert len({run(1), run(2), run(3)}) > 1


def test_stop_at_end_of_turn(tiny_model: AudioModel) -> None:
    """Greedy decoding stops on <|im_end|> when the model emits it, not otherwise."""
    eog = {special_token_ids()["<|im_end|>"], special_token_ids()["<|endoftext|>"]}
    free = tiny_model.generate(
        "Hi", [tone(1.0)], sampling=SamplingOptions(max_tokens=64, stop_at_end_of_turn=False)
    )
    stopping = tiny_model.generate("Hi", [tone(1.0)], sampling=SamplingOptions(max_tokens=64))
    first_eog = next((i for i, t in enumerate(free.tokens) if t in eog), None)
    if first_eog is None:
        assert stopping.finish_reason == "length" and stopping.tokens == free.tokens
    else:
        assert stopping.finish_reason == "stop"
        assert stopping.tokens == free.tokens[:first_eog]


def test_context_overflow_is_refused(tiny_gguf) -> None:
    with AudioModel(*tiny_gguf, ModelOptions(n_ctx=256, n_threads=2)) as model:
        with pytest.raises(ContextOverflowError, match="--n-ctx") as err:
            model.generate("Hi", [tone(20.0)], sampling=GREEDY8)
        assert err.value.n_ctx == 256 and err.value.n_prompt > 500
        # the model still works for what fits
        assert model.generate("Hi", sampling=GREEDY8).usage.completion_tokens == 8


def test_generation_stops_when_the_context_is_full(tiny_gguf) -> None:
    with AudioModel(*tiny_gguf, ModelOptions(n_ctx=800, n_threads=2)) as model:
        sampling = SamplingOptions(max_tokens=2000, stop_at_end_of_turn=False)
        res = model.generate("Hi", [tone(1.0)], sampling=sampling)
        n_ctx = model.n_ctx  # llama.cpp may round the requested size up
    assert 800 <= n_ctx < 2000
    assert res.finish_reason == "length"
    assert res.usage.prompt_tokens + res.usage.completion_tokens == n_ctx


@pytest.mark.parametrize(
    ("audio", "match"),
    [
        (np.zeros((2, 100), np.float32), "1-D"),
        (np.zeros(0, np.float32), "empty"),
        (np.array([0.0, np.nan], np.float32), "NaN"),
        (np.arange(10), "float"),
    ],
)
def test_invalid_audio_arrays(tiny_model: AudioModel, audio: np.ndarray, match: str) -> None:
    with pytest.raises(InvalidAudioError, match=match):
        tiny_model.stream("Hi", [audio])


def test_close_is_idempotent_and_final(tiny_gguf) -> None:
    model = AudioModel(*tiny_gguf, ModelOptions(n_ctx=1024, n_threads=1))
    model.close()
    model.close()
    with pytest.raises(RuntimeBackendError, match="closed"):
        model.generate("Hi")


def test_sampling_options_are_validated() -> None:
    for bad in (
        {"temperature": -1},
        {"top_p": 0},
        {"top_k": -1},
        {"max_tokens": 0},
        {"repetition_penalty": 0},
    ):
        with pytest.raises(ValueError):
            SamplingOptions(**bad)  # type: ignore[arg-type]


def test_tokenizer_matches_transformers(tiny_model: AudioModel, tiny_checkpoint) -> None:
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(str(tiny_checkpoint))
    for text in [
        "Hello world",
        "What does the person say?",
        "  spaces\n\nand lines 123",
        "<|im_start|>user\nAudio 1: hi<|im_end|>",
        "naïve café — 東京 🙂",
    ]:
        assert tiny_model.tokenize(text) == hf.encode(text), text


def test_f16_gguf_pair_runs_the_faithful_path(tiny_checkpoint, tmp_path, tiny_model) -> None:
    """F16 matrices (the usual download) go through the same ggml encoder and stay close."""
    from qaudio_local.convert import convert_checkpoint

    pair = convert_checkpoint(tiny_checkpoint, tmp_path, outtype="f16")
    clip = tone(2.0, 330)
    with AudioModel(pair.model_path, pair.mmproj_path, ModelOptions(n_ctx=1024)) as model:
        half = model.prompt_logits("Hi", [clip])
        res = model.generate("Hi", [clip], sampling=GREEDY8)
    full = tiny_model.prompt_logits("Hi", [clip])
    assert res.usage.audio_tokens == 50
    cos = float(np.dot(half, full) / np.linalg.norm(half) / np.linalg.norm(full))
    assert cos > 0.999
    assert 0 < np.abs(half - full).max() < 0.1


@pytest.mark.parametrize("audio_path", ["faithful", "mtmd"])
def test_q8_0_pair_runs_both_audio_paths(
    tiny_checkpoint, tmp_path, tiny_gguf, audio_path: str
) -> None:
    """A Q8_0 text model + Q8_0 projector: quantized matrices in the encoder and the LLM."""
    from qaudio_local.convert import convert_checkpoint

    pair = convert_checkpoint(tiny_checkpoint, tmp_path, outtype="q8_0")
    clip = tone(2.0, 330)
    opts = ModelOptions(n_ctx=1024, audio_path=audio_path)
    with AudioModel(pair.model_path, pair.mmproj_path, opts) as model:
        quant = model.prompt_logits("Hi", [clip])
    with AudioModel(*tiny_gguf, opts) as model:
        full = model.prompt_logits("Hi", [clip])
    cos = float(np.dot(quant, full) / np.linalg.norm(quant) / np.linalg.norm(full))
    assert cos > 0.99
    assert np.abs(quant - full).max() > 0  # it really is another model file


def test_audio_beyond_the_models_context_says_to_split(tiny_model: AudioModel) -> None:
    """The tiny model is trained for 8192 positions: 6 min of audio (9000 tokens) never fits."""
    with pytest.raises(ContextOverflowError, match="split the audio") as err:
        tiny_model.generate("Hi", [np.zeros(6 * 60 * 16000, np.float32) + 0.01])
    assert err.value.max_ctx == 8192 and err.value.n_prompt > 9000
    assert "--n-ctx" not in str(err.value)
