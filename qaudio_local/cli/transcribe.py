"""``qaudio transcribe``: recordings of any length to text and subtitles, resumable."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from ..audio.limits import AUDIO_SUFFIXES
from ..errors import QAudioError, ServerConnectionError
from ..transcription.writers import FORMATS
from .main import handle_errors, main
from .options import check_model_options, load_model, model_options, sampling_from, sampling_options
from .remote import check_remote_usage, open_servers, report, server_options, shares


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """Where a recording is, on stderr: a line redrawn on a terminal, JSON lines if asked."""

    def __init__(self, name: str, total: float, as_json: bool, servers: Any = None) -> None:
        self.name, self.total, self.as_json = name, total, as_json
        self.servers = servers  # a RemoteModel: each server's share is shown too
        self.t0 = time.monotonic()
        self._drawn = 0.0
        self._tty = sys.stderr.isatty()

    def __call__(self, info: Any, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._drawn < (1.0 if self.as_json or not self._tty else 0.2):
            return
        self._drawn = now
        done, elapsed = info.duration, now - self.t0
        total = max(self.total, done)
        rtf = elapsed / done if done else 0.0
        left = rtf * (total - done) if done else 0.0
        if self.as_json:
            line = {
                "file": self.name,
                "audio_s": round(done, 2),
                "total_s": round(total, 2),
                "elapsed_s": round(elapsed, 2),
                "left_s": round(left, 2),
                "rtf": round(rtf, 4),
                "segments": info.segments,
                "done": final,
            }
            if self.servers is not None:
                line["servers"] = [
                    {"server": s.name, "done": s.done, "audio_s": round(s.audio_seconds, 2)}
                    | {"busy_s": round(s.busy_seconds, 2), "set_aside": s.set_aside}
                    for s in self.servers.pool.stats()
                ]
            click.echo(json.dumps(line), err=True)
            return
        pct = 100 * done / total if total else 100.0
        text = (
            f"{self.name}: {_duration(done)} / {_duration(total)} ({pct:.0f}%), "
            f"{info.segments} segments, elapsed {_duration(elapsed)}, left ~{_duration(left)}, "
            f"RTF {rtf:.3f}"
        )
        if self.servers is not None:
            text += f"; {shares(self.servers)}"
        if self._tty:
            click.echo(f"\r\x1b[K{text}", nl=final, err=True)
        elif final:
            click.echo(text, err=True)


def _inputs(audio: tuple[str, ...]) -> list[tuple[Any, Path]]:
    """(source, output stem relative to the output folder) for every file to transcribe."""
    out: list[tuple[Any, Path]] = []
    for a in audio:
        if a == "-":
            out.append(("-", Path("stdin")))
            continue
        p = Path(a).expanduser()
        if p.is_dir():
            files = sorted(
                f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES
            )
            if not files:
                raise click.BadParameter(f"{p} holds no audio files", param_hint="AUDIO")
            out += [(f, f.relative_to(p).with_suffix("")) for f in files]
        else:
            out.append((p, Path(p.name).with_suffix("")))
    return out


@main.command()
@click.argument("audio", nargs=-1, required=True)
@click.option(
    "-o",
    "--output-format",
    "formats",
    multiple=True,
    default=("txt", "srt"),
    show_default=True,
    help=f"Files to write: {', '.join(FORMATS)} or all; repeat, or separate with commas.",
)
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Where the files go (a folder's layout is kept).",
)
@click.option(
    "--task",
    type=click.Choice(["transcribe", "translate"]),
    default="transcribe",
    show_default=True,
    help="transcribe: the words as spoken; translate: into English.",
)
@click.option("--language", default=None, help="The spoken language (default: the model says).")
@click.option(
    "--prompt",
    default=None,
    help='Replace the instruction (e.g. "Describe the sounds and who speaks"); the '
    "segmentation and timestamps stay the same.",
)
@click.option(
    "--condition-on-previous-text",
    is_flag=True,
    help="Give each segment the previous one's text as context (segments then run in turn).",
)
@click.option(
    "--parallel",
    default=4,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Segments decoded at once.",
)
@click.option(
    "--vad",
    type=click.Choice(["auto", "silero", "energy"]),
    default="auto",
    show_default=True,
    help="What cuts the recording into segments: silero finds speech, energy finds any "
    "sound; auto: speech to transcribe or translate, any sound for a --prompt of your own.",
)
@click.option(
    "--deterministic",
    is_flag=True,
    help="One segment at a time from an empty cache: the same files on every run and "
    "resume (slower than --parallel).",
)
@click.option(
    "--keep-loops",
    is_flag=True,
    help="Let a segment whose text turns into one phrase over and over run on to the token "
    "limit, every repeat kept (by default it stops there and keeps the phrase once).",
)
@click.option("--overwrite", is_flag=True, help="Transcribe again files whose outputs exist.")
@click.option("--json-progress", is_flag=True, help="Progress as JSON lines on stderr.")
@click.option("--quiet", is_flag=True, help="Do not print the segments on stdout.")
@sampling_options
@model_options
@server_options
@handle_errors
@click.pass_context
def transcribe(ctx: click.Context, audio: tuple[str, ...], **opts: Any) -> None:
    """Transcribe, translate or annotate recordings of any length, with timestamps.

    AUDIO is one or more files, folders (every audio file inside) or '-' for standard
    input. Speech is found by voice activity and cut at pauses into segments of at most
    30 s; silence is never sent to the model, and timestamps are exact sample offsets.
    Finished segments are kept in a journal next to the outputs: run the same command
    again after an interruption and it resumes. Outputs are written whole or not at all.

    \b
    Examples:
      qaudio transcribe meeting.flac
      qaudio transcribe lectures/ -o srt -o vtt --output-dir subs
      qaudio transcribe interview.mp3 --task translate -o verbose_json
      qaudio transcribe field.wav --prompt "Describe the sounds and who speaks." -o all
      qaudio transcribe archive/ --server http://gpu1:8000 --server http://gpu2:8000@4

    With --server the segments go to whichever server has room (files in turn); a request
    that fails is sent to another one, and a server that keeps failing is set aside and
    tried again later. --deterministic then runs the servers' requests side by side:
    start them with `qaudio serve --deterministic` for outputs equal to a local run's.
    """
    from ..transcription import TranscribeOptions

    formats = output_formats(opts.pop("formats"))
    remote = check_remote_usage(ctx, opts)
    if not remote:
        check_model_options(opts)
    inputs = _inputs(audio)
    if [s for s, _ in inputs].count("-") > 1:
        raise click.UsageError("'-' (standard input) can be given once")
    parallel = opts["parallel"]
    options = TranscribeOptions(
        task=opts["task"],
        language=opts["language"],
        prompt=opts["prompt"],
        condition_on_previous_text=opts["condition_on_previous_text"],
        vad=opts["vad"],
        sampling=sampling_from(opts, logprobs=True, stop_loops=not opts["keep_loops"]),
        parallel=parallel,
        deterministic=opts["deterministic"],
    )
    t0 = time.monotonic()
    done: list[tuple[str, Any]] = []
    failed: list[tuple[str, str]] = []
    skipped = 0
    if remote:
        model = open_servers(opts)
        options = replace(options, parallel=None)  # as many as the servers take
    else:
        model = load_model(opts, parallel=parallel, deterministic=opts["deterministic"])
    with model:
        for source, rel in inputs:
            name = "stdin" if source == "-" else str(source)
            try:
                info = _one(model, source, opts["output_dir"] / rel, formats, options, opts)
            except (QAudioError, OSError) as exc:
                if len(inputs) == 1 or isinstance(exc, ServerConnectionError):
                    raise  # every server is down: the next file would fail the same way
                click.echo(f"error: {name}: {exc}", err=True)
                failed.append((name, str(exc)))
                continue
            if info is None:
                skipped += 1
            else:
                done.append((name, info))
        if remote:
            report(model)
    _summary(done, failed, skipped, time.monotonic() - t0, len(inputs))
    if failed:
        sys.exit(1)


def output_formats(given: tuple[str, ...]) -> list[str]:
    """The -o values (repeated or comma-separated, "all") as format names, in order, once."""
    names = [f.strip().lower() for g in given for f in g.split(",") if f.strip()]
    if "all" in names:
        return list(FORMATS)
    bad = [n for n in names if n not in FORMATS]
    if bad:
        raise click.BadParameter(
            f"{', '.join(bad)}: choose from {', '.join(FORMATS)} or all", param_hint="-o"
        )
    return list(dict.fromkeys(names))


def _one(
    model: Any, source: Any, stem: Path, formats: list[str], options: Any, opts: dict[str, Any]
) -> Any:
    from ..transcription import transcribe, write_outputs
    from ..transcription.journal import SUFFIX
    from ..transcription.writers import output_path, timestamp

    name = "stdin" if source == "-" else Path(source).name
    journal = stem.with_name(stem.name + SUFFIX)
    targets = [output_path(stem, f) for f in formats]
    if not opts["overwrite"] and all(t.exists() for t in targets) and not journal.exists():
        click.echo(f"{name}: already transcribed ({targets[0]}); --overwrite to redo it", err=True)
        return None
    data = sys.stdin.buffer.read() if source == "-" else source
    tr = transcribe(model, data, options, journal=journal)
    resumed = len(tr.journal.done) if tr.journal is not None else 0
    if resumed:  # else the progress would start part way with no word why
        n = f"{resumed} segment{'s' if resumed > 1 else ''}"
        click.echo(f"{name}: resuming {n} from the journal ({journal})", err=True)
    servers = model if hasattr(model, "pool") else None  # a RemoteModel
    progress = Progress(name, tr.declared_duration, opts["json_progress"], servers)
    tr.progress = progress
    segments = []
    try:
        for seg in tr:
            segments.append(seg)
            if not opts["quiet"]:
                click.echo(f"[{timestamp(seg.start)} --> {timestamp(seg.end)}] {seg.text}")
    except KeyboardInterrupt:
        click.echo(err=True)
        click.echo(
            f"interrupted: {len(segments)} segments of {name} are kept in {journal}; run the "
            "same command again to go on from there",
            err=True,
        )
        sys.exit(130)
    progress(tr.info, final=True)
    paths = write_outputs(stem, formats, segments, tr.info)
    tr.journal.remove()  # type: ignore[union-attr]
    info = tr.info
    found = f"{info.segments} segment(s) of {info.segmented_by} found by {info.vad}"
    click.echo(f"{name}: {found}; wrote {', '.join(str(p) for p in paths)}", err=True)
    if info.segments == 0 and info.duration > 0:
        click.echo(f"note: {_nothing_found(info)}", err=True)
    return tr.info


def _nothing_found(info: Any) -> str:
    """What to say when a recording gave no segment at all (the outputs are empty)."""
    if info.segmented_by == "speech":
        return (
            f"no speech was found in {info.source} ({_duration(info.duration)}), so nothing "
            "was sent to the model and the outputs are empty; for sounds or music, give a "
            '--prompt of your own (e.g. --prompt "Describe the sounds."), which segments by '
            "sound, or --vad energy"
        )
    return (
        f"no sound above the noise floor was found in {info.source} "
        f"({_duration(info.duration)}): it is silent or nearly so, and the outputs are empty"
    )


def _summary(
    done: list[tuple[str, Any]], failed: list[tuple[str, str]], skipped: int, secs: float, n: int
) -> None:
    """One line for several files: how many were transcribed now, skipped as done before,
    and how much audio the ones done now held."""
    if n < 2:
        return
    audio = sum(i.duration for _, i in done)
    speech = sum(i.speech for _, i in done)
    rtf = f", RTF {secs / audio:.3f}" if audio else ""
    before = f" ({skipped} already transcribed, skipped)" if skipped else ""
    click.echo(
        f"done: {len(done)} of {n} files{before}, {_duration(audio)} of audio "
        f"({_duration(speech)} of speech) in {_duration(secs)}{rtf}",
        err=True,
    )
    for name, why in failed:
        click.echo(f"failed: {name}: {why}", err=True)
