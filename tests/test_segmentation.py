"""Where long recordings are cut: never inside a word while a pause is there, and sounds
that are not speech reach the model when the task is about them.

Recordings are built here from the espeak-ng clips in tests/data (sentences, and one 15 s
sentence with no pause in it) over quiet room noise, at known offsets. A cut is "inside a
word" when, in the clean signal, it falls in sound or in a gap shorter than 80 ms between
sounds (a stop consonant's closure, not a pause).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from qaudio_local.audio.vad import Segmenter, SpeechSegment, make_vad
from qaudio_local.config import SAMPLE_RATE as SR

DATA = Path(__file__).parent / "data"
GAP_IN_A_WORD_S = 0.08


def _clip(key: str) -> np.ndarray:
    x = sf.read(DATA / f"speech-{key}.flac", dtype="float32")[0]
    loud = np.flatnonzero(np.abs(x) > 0.02)
    return x[loud[0] : loud[-1] + 1]


class Recording:
    """Sentences and pauses over room noise; remembers the clean signal and the spans."""

    def __init__(self, plan: list[tuple[str, float | str]], noise_db: float = -45.0) -> None:
        rng = np.random.default_rng(7)
        clean, spans, pos = [], [], 0
        for kind, what in plan:
            x = np.zeros(int(float(what) * SR), np.float32) if kind == "pause" else _clip(str(what))
            if kind == "say":
                spans.append((pos, pos + len(x)))
            clean.append(x)
            pos += len(x)
        self.clean = np.concatenate(clean)
        noise = np.convolve(rng.standard_normal(len(self.clean)), np.ones(8) / 8, mode="same")
        noise *= 10 ** (noise_db / 20) / np.sqrt(np.mean(noise**2))
        self.audio = (self.clean + noise).astype(np.float32)
        self.spans = spans

    def segments(self) -> list[SpeechSegment]:
        seg = Segmenter(make_vad("silero"))
        out = []
        for i in range(0, len(self.audio), SR):  # one-second blocks, as a stream
            out += seg.feed(self.audio[i : i + SR])
        return out + seg.finish()

    def in_a_word(self, sample: int) -> bool:
        """The clean signal is sounding at ``sample``, or only briefly quiet around it."""
        w = SR // 100  # 10 ms
        lo, hi = max(0, sample - SR), min(len(self.clean), sample + SR)
        n = (hi - lo) // w
        env = np.sqrt(np.mean(self.clean[lo : lo + n * w].reshape(n, w) ** 2, axis=1) + 1e-12)
        loud = 20 * np.log10(env) > -40
        k = (sample - lo) // w
        if k >= n or loud[k]:
            return k < n
        left = k
        while left > 0 and not loud[left - 1]:
            left -= 1
        right = k
        while right < n - 1 and not loud[right + 1]:
            right += 1
        between_sounds = left > 0 and right < n - 1
        return between_sounds and (right - left + 1) * w / SR < GAP_IN_A_WORD_S

    def cuts(self, segments: list[SpeechSegment]) -> list[int]:
        """Where one segment ends and the next begins straight after it (a forced cut)."""
        return [a.end for a, b in zip(segments, segments[1:], strict=False) if a.end == b.start]


def _check(rec: Recording) -> list[SpeechSegment]:
    segments = rec.segments()
    assert all(s.end - s.start <= 30 * SR for s in segments)
    in_words = [round(c / SR, 2) for s in segments for c in (s.start, s.end) if rec.in_a_word(c)]
    assert in_words == [], f"boundaries inside words at {in_words} s"
    for a, b in rec.spans:  # every sentence is sent whole or in pieces, nothing dropped
        covered = sum(max(0, min(b, s.end) - max(a, s.start)) for s in segments)
        assert covered == b - a
    return segments


def test_a_long_sentence_after_a_late_pause_is_cut_before_it() -> None:
    """The window fills up inside a 15 s sentence that follows a 1.5 s pause 17 s into it:
    the cut goes in that pause (the old rule searched only the window's last 10 s)."""
    plan = [("pause", 1.0), ("say", "a"), ("pause", 0.3), ("say", "b"), ("pause", 0.3)]
    plan += [("say", "c"), ("pause", 1.5), ("say", "long"), ("pause", 1.0), ("say", "a")]
    rec = Recording([*plan, ("pause", 3.0)])
    segments = _check(rec)
    (first_cut, *_) = rec.cuts(segments)
    long_start = rec.spans[3][0]
    assert long_start - 1.5 * SR <= first_cut <= long_start


def test_speech_longer_than_the_window_with_only_short_pauses() -> None:
    """Four 15 s sentences, 0.22-0.3 s apart: every cut falls between two of them."""
    plan: list[tuple[str, float | str]] = [("pause", 1.0)]
    for gap in (0.25, 0.22, 0.3):
        plan += [("say", "long"), ("pause", gap)]
    rec = Recording([*plan, ("say", "long"), ("pause", 3.0)])
    segments = _check(rec)
    cuts = rec.cuts(segments)
    assert len(cuts) >= 2
    pairs = zip(rec.spans, rec.spans[1:], strict=False)
    gaps = [(b_end, a_start) for (_, b_end), (a_start, _) in pairs]
    assert all(any(lo <= c <= hi for lo, hi in gaps) for c in cuts), (cuts, gaps)


@pytest.mark.parametrize("noise_db", [-60.0, -35.0])
def test_runs_of_sentences_like_a_meeting(noise_db: float) -> None:
    """Six minutes of runs of 1-12 sentences, 0.2-0.35 s apart, runs 0.9-3 s apart."""
    rng = np.random.default_rng(11)
    plan: list[tuple[str, float | str]] = [("pause", 1.0)]
    while sum(float(w) if k == "pause" else 6.0 for k, w in plan) < 360:
        n = int(rng.integers(1, 13))
        for i in range(n):
            plan.append(("say", "abc"[int(rng.integers(3))] if rng.random() < 0.8 else "long"))
            if i < n - 1:
                plan.append(("pause", float(rng.uniform(0.2, 0.35))))
        plan.append(("pause", float(rng.uniform(0.9, 3.0))))
    rec = Recording(plan, noise_db)
    segments = _check(rec)
    assert rec.cuts(segments)  # the runs longer than 30 s were cut, in pauses


def test_a_window_without_any_pause_is_cut_at_its_quietest() -> None:
    t = np.arange(70 * SR) / SR
    hum = 0.2 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.05 * t))
    seg = Segmenter(make_vad("energy"))
    segments = seg.feed(hum.astype(np.float32)) + seg.finish()
    assert len(segments) >= 3 and all(s.end - s.start <= 30 * SR for s in segments)
    assert segments[0].start == 0 and segments[-1].end == len(t)
    assert all(a.end == b.start for a, b in zip(segments, segments[1:], strict=False))


# --- sounds that are not speech ---------------------------------------------------------------


def _sounds(path: Path) -> list[tuple[int, int]]:
    """Tones, a chirp and noise bursts between silences (nothing a VAD calls speech)."""
    rng = np.random.default_rng(3)
    parts, spans, pos = [np.zeros(SR, np.float32)], [], SR
    for kind in ("tone", "chirp", "noise", "tone", "noise"):
        t = np.arange(int(1.5 * SR)) / SR
        if kind == "tone":
            x = 0.3 * np.sin(2 * np.pi * 660 * t)
        elif kind == "chirp":
            x = 0.3 * np.sin(2 * np.pi * (300 + 900 * t) * t)
        else:
            x = 0.2 * rng.standard_normal(t.size)
        spans.append((pos, pos + t.size))
        parts += [x.astype(np.float32), np.zeros(3 * SR, np.float32)]
        pos += t.size + 3 * SR
    sf.write(path, np.concatenate(parts), SR, subtype="PCM_16")
    return spans


def _transcribe_cli(tiny_gguf: tuple[Path, Path], *args: str | Path) -> tuple[int, str]:
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "qaudio_local", "transcribe", *map(str, args)]
    cmd += ["--model-file", str(tiny_gguf[0]), "--mmproj-file", str(tiny_gguf[1])]
    cmd += ["--max-tokens", "3", "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stderr


def test_a_prompt_about_sounds_gets_every_sound_and_speech_alone_says_what_it_found(
    tiny_gguf: tuple[Path, Path], tmp_path: Path
) -> None:
    import srt

    path = tmp_path / "sounds.wav"
    spans = _sounds(path)
    out = tmp_path / "out"
    code, err = _transcribe_cli(
        tiny_gguf, path, "--prompt", "Describe the sounds.", "-o", "srt", "--output-dir", out
    )
    assert code == 0, err
    cues = list(srt.parse((out / "sounds.srt").read_text()))
    assert len(cues) == len(spans)
    for cue, (a, b) in zip(cues, spans, strict=True):  # each sound, whole, in its own cue
        assert cue.start.total_seconds() <= a / SR and cue.end.total_seconds() >= b / SR
    assert "5 segment(s) of sound found by energy" in err

    code, err = _transcribe_cli(tiny_gguf, path, "-o", "srt", "--output-dir", tmp_path / "plain")
    assert code == 0, err
    assert (tmp_path / "plain" / "sounds.srt").read_text() == ""
    assert "0 segment(s) of speech found by silero" in err
    notes = [ln for ln in err.splitlines() if ln.startswith("note: ")]
    assert len(notes) == 1 and "no speech was found" in notes[0] and "--prompt" in notes[0]


def test_events_say_where_speech_starts_in_order() -> None:
    """feed_events: each stretch opens with a SpeechStart at its segment's first sample;
    a cut piece is not final and the piece after it starts where it ends; a burst too
    short to be speech is dropped (and said to be); the segments are those of feed()."""
    from qaudio_local.audio.vad import SpeechDropped, SpeechStart, VadOptions

    long = Recording([("pause", 1.0), *[("say", "long")] * 3, ("pause", 3.0), ("say", "a")])
    plain = Recording([("pause", 1.0), ("say", "a"), ("pause", 3.0)])
    burst = np.zeros(2 * SR, np.float32)
    burst[SR : SR + SR // 10] = plain.audio[plain.spans[0][0] : plain.spans[0][0] + SR // 10]
    for rec, blocks in ((long.audio, SR // 50), (burst, 480)):
        seg = Segmenter(make_vad("silero"), VadOptions(min_speech_s=0.25))
        events = []
        for i in range(0, len(rec), blocks):
            events += seg.feed_events(rec[i : i + blocks])
        events += seg.finish_events()
        if rec is burst:
            assert [type(e) for e in events] == [SpeechStart, SpeechDropped]
            assert events[0].start == events[1].start < events[1].end
            continue
        kinds = ["start" if isinstance(e, SpeechStart) else e.final for e in events]
        assert kinds == ["start", False, True, "start", True], kinds
        pieces = [e for e in events if isinstance(e, SpeechSegment)]
        assert events[0].start == pieces[0].start and events[3].start == pieces[2].start
        assert pieces[0].end == pieces[1].start  # cut, not dropped: nothing is lost
        whole = Segmenter(make_vad("silero")).feed(rec)  # all at once: the same cuts
        assert [(p.start, p.end) for p in whole] == [(p.start, p.end) for p in pieces[:2]]
