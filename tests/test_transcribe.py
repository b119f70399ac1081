"""Long-form transcription on the tiny model: structure and timing, not words.

Recordings are assembled from real synthetic speech (tests/data/speech-*.flac, made with
espeak-ng by scripts/make_speech_clips.sh) and quiet noise, at known sample offsets, so
the checks know where speech is: segment edges in the silences, every clip covered, no
segment over 30 s, nothing for silence, exact samples, subtitles that parse.
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import srt
import webvtt

from qaudio_local.audio.stream import AudioStream, read_range
from qaudio_local.audio.vad import FRAME, Segmenter, VadOptions, make_vad
from qaudio_local.engine.model import AudioModel
from qaudio_local.engine.options import ModelOptions
from qaudio_local.transcription import FORMATS, TranscribeOptions, transcribe, write_outputs
from qaudio_local.transcription.journal import Journal
from qaudio_local.transcription.writers import timestamp
from tests.support.audio import MINUTE, SR, make_recording
from tests.support.files import current_umask, mode, umask

Pair = tuple[Path, Path]


def check_segments(segments: list, truth: list, total: int) -> None:
    """Segment bounds (in samples: ``start``/``end``, or ``start_sample``/``end_sample``)."""
    segments = [
        SimpleNamespace(start=s.start_sample, end=s.end_sample) if hasattr(s, "start_sample") else s
        for s in segments
    ]
    opts = VadOptions()
    max_len = int(opts.max_segment_s * SR)
    prev_end = 0
    for s in segments:
        assert 0 <= s.start < s.end <= total
        assert s.end - s.start <= max_len, "a segment is longer than 30 s"
        assert s.start >= prev_end, "segments overlap"
        prev_end = s.end
        for a, b in truth:  # an edge is never inside a clip's speech (its words)
            assert not (a + 0.05 * SR < s.start < b - 0.05 * SR), (s.start, a, b)
            assert not (a + 0.05 * SR < s.end < b - 0.05 * SR), (s.end, a, b)
        assert any(min(s.end, b) - max(s.start, a) > 0 for a, b in truth), "a silent segment"
    for a, b in truth:  # every clip is inside the segments (edges within a frame)
        covered = sum(max(0, min(s.end, b) - max(s.start, a)) for s in segments)
        assert covered >= (b - a) - 2 * FRAME, ("uncovered speech", a, b)


def test_segments_fall_in_the_silences_and_cover_the_speech(tmp_path: Path) -> None:
    path = tmp_path / "minute.wav"
    truth = make_recording(path, MINUTE)
    seg = Segmenter(make_vad())
    out = []
    with AudioStream(path) as stream:
        for block in stream.blocks():
            out += seg.feed(block)
    out += seg.finish()
    check_segments(out, truth, seg.total)
    assert len(out) >= 4  # the 33 s stretch was cut in two
    for s in out:  # exact samples: what the model hears is the file at those offsets
        np.testing.assert_array_equal(s.audio, read_range(path, s.start, s.end))
    first = out[0]  # starts at the first word, padded by 0.4 s (within a frame or two)
    assert abs(first.start - (truth[0][0] - int(0.4 * SR))) <= 3 * FRAME
    assert seg.speech_samples < seg.total - 15 * SR  # the silences were left out


@pytest.fixture(scope="module")
def model(tiny_gguf: Pair):
    with AudioModel(*tiny_gguf, ModelOptions(n_ctx=4096, n_threads=2, n_parallel=4)) as m:
        yield m


def test_transcribe_a_minute_into_every_format(model: AudioModel, tmp_path: Path) -> None:
    path = tmp_path / "minute.flac"
    truth = make_recording(path, MINUTE)
    tr = transcribe(model, path, TranscribeOptions(language="english"))
    segments = list(tr)
    assert tr.info.duration == pytest.approx(sf.info(str(path)).duration, abs=1e-3)
    assert [s.id for s in segments] == list(range(len(segments)))
    check_segments(segments, truth, int(tr.info.duration * SR))
    for s in segments:
        assert s.start == s.start_sample / SR and s.end == s.end_sample / SR
        assert s.tokens and s.avg_logprob < 0 and 0 <= s.no_speech_prob <= 1
    with umask(0o027):
        paths = write_outputs(tmp_path / "out" / "minute", FORMATS, segments, tr.info)
    assert [p.name for p in paths] == [
        "minute.txt",
        "minute.srt",
        "minute.vtt",
        "minute.json",
        "minute.verbose.json",
    ]
    assert [mode(p) for p in paths] == [0o640] * 5  # as the umask says, not mkstemp's 0o600
    paths[0].chmod(0o600)
    write_outputs(tmp_path / "out" / "minute", ["txt"], segments, tr.info)
    assert mode(paths[0]) == 0o600  # a file written again keeps its mode
    assert sorted((tmp_path / "out").iterdir()) == sorted(paths)  # no temporary file left
    subs = list(srt.parse(paths[1].read_text()))
    cues = list(webvtt.read(str(paths[2])))
    assert len(subs) == len(cues) == sum(1 for s in segments if s.text.strip())
    for a, b in zip(subs, subs[1:], strict=False):
        assert a.start < a.end <= b.start
    assert subs[0].start.total_seconds() == pytest.approx(segments[0].start, abs=1e-3)
    assert cues[-1].end == timestamp(segments[-1].end)
    verbose = json.loads(paths[4].read_text())
    assert verbose["language"] == "english" and verbose["task"] == "transcribe"
    assert verbose["duration"] == pytest.approx(tr.info.duration, abs=1e-3)
    assert len(verbose["segments"]) == len(segments)
    assert {"id", "seek", "start", "end", "text", "tokens", "avg_logprob"} <= set(
        verbose["segments"][0]
    )


def test_translation_keeps_the_speech_segmentation_a_prompt_of_ones_own_cuts_by_sound(
    model: AudioModel, tmp_path: Path
) -> None:
    path = tmp_path / "m.wav"
    make_recording(path, MINUTE[:6])
    base = [(s.start_sample, s.end_sample) for s in transcribe(model, path)]
    translated = transcribe(model, path, TranscribeOptions(task="translate"))
    assert [(s.start_sample, s.end_sample) for s in translated] == base
    assert translated.info.segmented_by == "speech"
    described = transcribe(model, path, TranscribeOptions(prompt="Describe the sounds."))
    by_sound = [(s.start_sample, s.end_sample) for s in described]
    energy = transcribe(model, path, TranscribeOptions(vad="energy"))
    assert by_sound == [(s.start_sample, s.end_sample) for s in energy]
    assert described.info.segmented_by == "sound" and described.info.vad == "energy"
    asked = TranscribeOptions(prompt="Describe the sounds.", vad="silero")  # asked for: kept
    assert [(s.start_sample, s.end_sample) for s in transcribe(model, path, asked)] == base
    assert TranscribeOptions(task="translate").instruction(None).startswith("Translate")


def test_silence_gives_no_segment(model: AudioModel, tmp_path: Path) -> None:
    path = tmp_path / "quiet.wav"
    make_recording(path, [("sil", 45)])
    tr = transcribe(model, path, TranscribeOptions(language="english"))
    assert list(tr) == [] and tr.info.duration == pytest.approx(45.0)


def test_each_segment_stands_alone_unless_conditioned(tiny_gguf: Pair, tmp_path: Path) -> None:
    """Without condition_on_previous_text a segment's prompt is its instruction and its
    audio only: its text is that audio's, alone (what a live session's turn gets too)."""
    path = tmp_path / "two.wav"
    make_recording(path, [("sil", 1), ("say", "a"), ("sil", 3), ("say", "b"), ("sil", 2.5)])
    with AudioModel(*tiny_gguf, ModelOptions(n_ctx=2048, n_threads=2, flash_attn="off")) as m:
        o = TranscribeOptions(language="english", deterministic=True)
        segs = list(transcribe(m, path, o))
        assert len(segs) == 2
        audio = read_range(path, segs[1].start_sample, segs[1].end_sample)
        sampling = o.sampling_for(len(audio) / SR)  # the segment's token limit
        alone = m.generate(o.instruction("english"), [audio], sampling=sampling, cold=True)
        assert segs[1].tokens == alone.tokens
        conditioned = list(transcribe(m, path, replace(o, condition_on_previous_text=True)))
        assert conditioned[0].tokens == segs[0].tokens
        assert conditioned[1].prompt_tokens > segs[1].prompt_tokens  # the text before it


def _cli(*args: str | Path, **kw: object) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "qaudio_local", "transcribe", *map(str, args)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _run_cli(pair: Pair, *args: str | Path) -> tuple[int, str, str, int]:
    """Run `qaudio transcribe`; (exit code, stdout, stderr, peak RSS in bytes)."""
    proc = _cli(*args, "--model-file", pair[0], "--mmproj-file", pair[1], "--threads", "2")
    _, status, usage = os.wait4(proc.pid, 0)
    out, err = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    code = os.waitstatus_to_exitcode(status)
    return code, out, err, usage.ru_maxrss * 1024


TEN_MINUTES = [("sil", 20), *(MINUTE * 5)]  # about 6 minutes


@pytest.mark.slow
def test_resume_after_kill_gives_the_same_output(tiny_gguf: Pair, tmp_path: Path) -> None:
    """Byte-identical with --deterministic (each segment alone, from an empty cache); with
    several in flight, which share a batch and which cells they reuse change the rounding."""
    path = tmp_path / "ten.wav"
    make_recording(path, TEN_MINUTES)
    args = [path, "-o", "srt", "-o", "verbose_json", "--deterministic", "--language", "english"]
    code, _, err, _ = _run_cli(tiny_gguf, *args, "--output-dir", tmp_path / "whole")
    assert code == 0, err
    journal = tmp_path / "cut" / "ten.qaudio-journal.jsonl"
    proc = _cli(
        *args,
        "--output-dir",
        tmp_path / "cut",
        "--model-file",
        tiny_gguf[0],
        "--mmproj-file",
        tiny_gguf[1],
    )
    deadline = time.monotonic() + 120
    while not (journal.exists() and journal.read_text().count("\n") >= 4):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "cut" / "ten.srt").exists()  # no half-written output
    kept = len(Journal(journal, json.loads(journal.read_text().splitlines()[0])).done)
    code, out, err, _ = _run_cli(tiny_gguf, *args, "--output-dir", tmp_path / "cut")
    assert code == 0, err
    said = re.search(r"ten.wav: resuming (\d+) segments from the journal \((.+)\)", err)
    assert said and int(said.group(1)) == kept >= 3 and Path(said.group(2)) == journal, err
    assert not journal.exists()  # done: the journal is gone
    for name in ("ten.srt", "ten.verbose.json"):
        assert (tmp_path / "cut" / name).read_text() == (tmp_path / "whole" / name).read_text()


@pytest.mark.slow
def test_two_hours_in_flat_memory(tiny_gguf: Pair, tmp_path: Path) -> None:
    """Peak RSS for 2 h of audio within 10% of 10 min: the file is never loaded whole.

    Speech every 2.5 minutes, so that the 10 minutes already hold as many segments as
    there are worker threads (each warms up its own malloc arena once)."""
    every_150_s = [("sil", 70), ("say", "a"), ("sil", 1), ("say", "b"), ("sil", 66)]
    short, long = tmp_path / "short.wav", tmp_path / "long.wav"
    make_recording(short, every_150_s * 4)
    truth = make_recording(long, every_150_s * 48)
    assert sf.info(str(long)).duration > 7150
    rss = {}
    for p in (short, long):
        code, out, err, rss[p] = _run_cli(
            tiny_gguf, p, "-o", "json", "-o", "verbose_json", "--output-dir", tmp_path, "--quiet"
        )
        assert code == 0, err
    assert rss[long] < 1.10 * rss[short], rss
    verbose = json.loads((tmp_path / "long.verbose.json").read_text())
    starts = [s["start"] for s in verbose["segments"]]
    assert len(starts) == 48 and verbose["duration"] == pytest.approx(7200, abs=10)
    for (a, _), start in zip(truth[::2], starts, strict=True):  # no drift after 2 hours
        assert abs(start - (a / SR - 0.4)) < 0.1
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss > 0


@pytest.mark.slow
def test_a_folder_with_a_bad_file_and_stdin(tiny_gguf: Pair, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    make_recording(folder / "one.wav", MINUTE[:4])
    make_recording(folder / "sub" / "two.flac", MINUTE[4:8])
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    code, out, err, _ = _run_cli(tiny_gguf, folder, "-o", "txt", "--output-dir", tmp_path / "o")
    assert code == 1  # one failed
    assert "error: " in err and "broken.wav" in err and "Traceback" not in err
    assert "done: 2 of 3 files" in err
    assert (tmp_path / "o" / "one.txt").exists() and (tmp_path / "o" / "sub" / "two.txt").exists()
    assert mode(tmp_path / "o" / "one.txt") == 0o666 & ~current_umask()
    code, out, err, _ = _run_cli(tiny_gguf, folder, "-o", "txt", "--output-dir", tmp_path / "o")
    assert "already transcribed" in err  # finished files are not done again ...
    assert "done: 0 of 3 files (2 already transcribed, skipped), 0:00 of audio" in err  # ... and
    # counted as such (broken.wav failed again)
    proc = subprocess.run(
        [sys.executable, "-m", "qaudio_local", "transcribe", "-", "-o", "srt,txt"]
        + ["--output-dir", str(tmp_path / "s"), "--model-file", str(tiny_gguf[0])]
        + ["--mmproj-file", str(tiny_gguf[1])],
        input=(folder / "one.wav").read_bytes(),
        capture_output=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "s" / "stdin.srt").exists() and b"-->" in proc.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "qaudio_local", "transcribe", str(folder / "one.wav"), "-o", "doc"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "choose from txt, srt" in bad.stderr


def test_run_points_long_audio_to_transcribe(tiny_model: AudioModel) -> None:
    from qaudio_local.errors import ContextOverflowError

    with pytest.raises(ContextOverflowError, match="qaudio transcribe"):
        tiny_model.generate("Hi", [np.zeros(6 * 60 * SR, np.float32) + 0.01])
