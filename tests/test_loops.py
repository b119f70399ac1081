"""Runaway answers. Loops: found while decoding (LoopWatch), stopped by the scheduler
(``SamplingOptions(stop_loops=True)``), trimmed by transcription (collapse_repeats); and a
segment's token limit per second of its audio (``TranscribeOptions.tokens_per_second``).
The engine, transcription and CLI tests run the tiny model through the real bindings."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from qaudio_local.engine import loops
from qaudio_local.engine.loops import MAX_DISTINCT, WINDOW, LoopWatch, collapse_repeats
from qaudio_local.engine.model import AudioModel
from qaudio_local.engine.options import SamplingOptions
from qaudio_local.transcription import TranscribeOptions, transcribe
from qaudio_local.transcription.longform import MIN_SEGMENT_TOKENS
from tests.support.cli import invoke

SR = 16000
SPEECH = (
    "so the first thing we did when we got to the station was look for the timetable and "
    "it turned out that the last train had left twenty minutes before we arrived which "
    "meant that we had to find somewhere to stay for the night and the only place still "
    "open was a small guest house run by an old couple who gave us tea and told us about "
    "the flood of nineteen fifty three when the whole valley was under water for a week "
    "and nobody could get in or out except by boat no no no no it was not a joke they said "
    "and in the morning the husband drove us back to the station in a van that smelled of "
    "apples and hay and we caught the first train home tired but happy to have met them"
)


def first_loop(tokens: list[int] | tuple[int, ...]) -> int | None:
    """How many tokens a LoopWatch needs to call ``tokens`` a loop (None: never)."""
    watch = LoopWatch()
    return next((i + 1 for i, t in enumerate(tokens) if watch.feed(t)), None)


def word_ids(text: str) -> list[int]:
    ids: dict[str, int] = {}
    return [ids.setdefault(w, len(ids)) for w in text.split()]


def test_speech_is_not_a_loop_a_phrase_said_over_and_over_is() -> None:
    speech = word_ids(SPEECH)  # a real sentence's words, with a short "no no no no"
    assert len(speech) > WINDOW and first_loop(speech) is None
    rng = np.random.default_rng(0)
    assert first_loop(list(rng.integers(0, 150_000, 2000))) is None
    for period in (1, 2, 7, MAX_DISTINCT):  # a phrase of up to MAX_DISTINCT tokens, repeated
        assert first_loop(list(range(period)) * 200) == WINDOW, period
    assert first_loop(list(range(MAX_DISTINCT + 1)) * 200) is None  # a longer phrase is not
    # loops that are not exact: two tokens in any order, or a phrase that drifts
    assert first_loop(list(rng.integers(0, 2, 500))) == WINDOW
    drift = speech[:40] + [5, 6, 7] * 30 + [5, 6, 8, 9] * 40
    assert first_loop(drift) is not None and first_loop(drift) <= 40 + WINDOW


def test_loop_watch_slides_its_window() -> None:
    watch = LoopWatch(window=8, ngram=2, max_distinct=2)
    fired = [watch.feed(t) for t in [1, 2, 3, 4, 5, 6, 7, 1, 2, 1, 2, 1, 2, 1, 2, 9]]
    # 8 tokens "1 2 1 2 1 2 1 2" hold 2 distinct pairs: the first time is at the 15th token
    assert fired.index(True) == 14 and fired[15] is False  # "9" brings a third pair
    with pytest.raises(ValueError):
        LoopWatch(window=3, ngram=4)


def test_collapse_keeps_a_repeated_phrase_once() -> None:
    assert collapse_repeats("We met at noon. Thank you. Thank you. Thank you. Thank yo") == (
        "We met at noon. Thank you."
    )
    assert collapse_repeats("la " * 40) == "la "
    drifted = "Intro." + " lecture gits" * 7 + " gits" * 17  # a loop inside a loop: both go
    assert collapse_repeats(drifted) == "Intro. lecture gits"
    for text in (SPEECH, "Wait... what?!!!", "ha ha ha", "", "no no no no", "x" * 10):
        assert collapse_repeats(text) == text


def tone(seconds: float = 2.0, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@pytest.fixture
def loose_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    """A watch that calls the tiny model's rambling a loop. Its random weights ramble
    rather than repeat one phrase (a real loop is found in about 1 of 24 cases tried), so
    the wiring is tested with a looser bound; the bound itself is tested above."""
    monkeypatch.setattr(loops, "MAX_DISTINCT", 110)


def test_the_engine_stops_a_loop_where_the_watch_finds_it(
    tiny_model: AudioModel, loose_watch: None
) -> None:
    ask = dict(sampling=SamplingOptions(max_tokens=300), cold=True, keep_cache=False)
    free = tiny_model.generate("Describe the sound.", [tone()], **ask)
    n = first_loop(free.tokens)
    assert free.finish_reason == "length" and n is not None and n < 300, "no loop to stop"
    ask["sampling"] = SamplingOptions(max_tokens=300, stop_loops=True)
    stopped = tiny_model.generate("Describe the sound.", [tone()], **ask)
    assert stopped.finish_reason == "loop"
    assert stopped.tokens == free.tokens[:n]
    assert stopped.usage.completion_tokens == n
    assert free.text.startswith(stopped.text.rstrip("\ufffd"))


def test_transcription_stops_loops_unless_told_to_keep_them(
    tiny_model: AudioModel, loose_watch: None, tmp_path: Path
) -> None:
    wav = tmp_path / "tone.wav"
    sf.write(wav, np.concatenate([np.zeros(SR // 2), tone(), np.zeros(SR // 2)]), SR)
    base = TranscribeOptions(prompt="Describe the sound.")
    keep = replace(base, sampling=replace(base.sampling, stop_loops=False))
    assert base.sampling.stop_loops and base.sampling.max_tokens == 300
    (looped,) = list(transcribe(tiny_model, str(wav), keep))
    (stopped,) = list(transcribe(tiny_model, str(wav), base))
    n = first_loop(looped.tokens)
    assert len(looped.tokens) == 300 and n is not None and n < 300, "no loop to stop"
    assert len(stopped.tokens) == n
    assert stopped.text == collapse_repeats(stopped.text), "a repeat was left at the end"


def test_cli_transcribe_stops_loops_unless_keep_loops(
    tiny_gguf: tuple[Path, Path], loose_watch: None, tmp_path: Path
) -> None:
    wav = tmp_path / "tone.wav"
    sf.write(wav, np.concatenate([np.zeros(SR // 2), tone(), np.zeros(SR // 2)]), SR)
    tokens = {}
    for flag in ((), ("--keep-loops",)):
        out = tmp_path / ("kept" if flag else "stopped")
        res = invoke(
            "transcribe", wav, *flag, "--prompt", "Describe the sound.", "-o", "verbose_json",
            "--output-dir", out, "--model-file", tiny_gguf[0], "--mmproj-file", tiny_gguf[1],
            "--threads", "2", "--quiet",
        )  # fmt: skip
        assert res.exit_code == 0, res.stderr
        (seg,) = json.loads((out / "tone.verbose.json").read_text())["segments"]
        tokens[bool(flag)] = seg["tokens"]
    n = first_loop(tokens[True])
    assert n is not None and n < len(tokens[True]), "no loop to stop"
    assert tokens[False] == tokens[True][:n]


def test_a_segment_writes_at_most_tokens_per_second_of_its_audio(
    tiny_model: AudioModel, tmp_path: Path
) -> None:
    wav = tmp_path / "tone.wav"
    sf.write(wav, np.concatenate([np.zeros(SR // 2), tone(3.0), np.zeros(SR // 2)]), SR)
    base = TranscribeOptions(
        language="English",
        vad="energy",  # a tone is not speech
        sampling=SamplingOptions(max_tokens=300),  # loops not stopped: only the limits act
    )
    runs = {}
    for name, opts in {
        "unbounded": replace(base, tokens_per_second=None),
        "bounded": replace(base, tokens_per_second=15),
        "own prompt": replace(base, prompt="Describe the sound."),
    }.items():
        (runs[name],) = list(transcribe(tiny_model, str(wav), opts))
    seg = runs["bounded"]
    limit = max(MIN_SEGMENT_TOKENS, math.ceil(15 * (seg.end - seg.start)))
    assert 32 < limit < len(runs["unbounded"].tokens), "the bound does not bite here"
    assert seg.tokens == runs["unbounded"].tokens[:limit]
    assert len(runs["own prompt"].tokens) > limit  # an answer of one's own is not bounded
    assert TranscribeOptions().sampling_for(1.0).max_tokens == MIN_SEGMENT_TOKENS
    assert TranscribeOptions().sampling_for(29.9).max_tokens == 299
    assert TranscribeOptions().sampling_for(60.0).max_tokens == 300  # within max_tokens
    with pytest.raises(ValueError, match="tokens_per_second"):
        TranscribeOptions(tokens_per_second=0)
