"""``scripts/bench.py``: the command line, and one run from building to the README block."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import qaudio_dev.bench
from qaudio_dev.bench.build import build_in_child, llama_tools
from qaudio_dev.bench.report import describe_model, machine, render_report, versions, write_readme
from qaudio_dev.bench.run import Runner, measure
from qaudio_dev.bench.settings import QUANTS, SMOKE_AUDIO, SMOKE_TEXT, Settings, Sizes
from qaudio_dev.synthetic import REAL_AUDIO, REAL_TEXT, REAL_VOCAB

ROOT = Path(__file__).resolve().parents[2]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(qaudio_dev.bench.__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one repeat, the 5 s clip, fewer tokens")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, no transformers/llama-bench")
    ap.add_argument("--work", type=Path, default=Path.home() / ".cache" / "qaudio-bench")
    ap.add_argument("--layers", type=int, default=4, help="text layers of the model (of 32)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeats", type=int, default=None, help="first-token rounds (default 2)")
    ap.add_argument("--decode-repeats", type=int, default=None, help="decode rounds (default 4)")
    ap.add_argument("--tokens", type=int, default=None, help="decode tokens (default 64)")
    ap.add_argument("--answer", type=int, default=None, help="end-to-end tokens (default 32)")
    ap.add_argument("--e2e-quant", default="Q4_K_M", choices=QUANTS)
    ap.add_argument("--parallel-quant", default="Q4_K_M", choices=QUANTS)
    ap.add_argument("--llama-bin", type=Path, default=None, help="a folder with llama-bench")
    ap.add_argument("--no-llama-bench", action="store_true", help="skip llama-bench")
    ap.add_argument("--no-transformers", action="store_true", help="skip transformers")
    ap.add_argument(
        "--write-readme",
        action="store_true",
        help="also write the table between README.md's bench markers (only when asked: the "
        "README is a tracked file)",
    )
    ap.add_argument(
        "--readme", type=Path, default=None, help="write the table into this file's markers"
    )
    ap.add_argument("--no-readme", action="store_true", help=argparse.SUPPRESS)  # the default
    ap.add_argument("--render", type=Path, default=None, help="re-render a saved run's JSON")
    return ap.parse_args(argv)


def readme_target(args: argparse.Namespace) -> Path | None:
    """Where the table goes besides stdout: only where asked (``--readme PATH``, or
    ``--write-readme`` for this checkout's README.md); a run changes no tracked file else."""
    if args.readme is not None:
        return Path(args.readme)
    return ROOT / "README.md" if args.write_readme else None


def settings_from(args: argparse.Namespace) -> tuple[Settings, Sizes]:
    small = args.smoke or args.quick
    if args.smoke:
        sizes = Sizes(SMOKE_AUDIO, {**SMOKE_TEXT, "layers": 2}, None)
    else:
        sizes = Sizes(REAL_AUDIO, {**REAL_TEXT, "layers": args.layers}, REAL_VOCAB)
    s = Settings(
        work=args.work.expanduser().resolve(),
        layers=sizes.text["layers"],
        threads=args.threads,
        repeats=args.repeats or (1 if small else 2),
        decode_repeats=args.decode_repeats or (1 if small else 4),
        tokens=args.tokens or (16 if args.smoke else 32 if args.quick else 64),
        answer=args.answer or (8 if args.smoke else 16 if args.quick else 32),
        clips=(5.0,) if args.quick else (5.0, 30.0),
        quants=("F16", "Q4_K_M") if args.smoke else QUANTS,
        e2e_quant=args.e2e_quant,
        parallel_quant=args.parallel_quant,
        hf=not (args.smoke or args.no_transformers),
        smoke=args.smoke,
        copy_mib=64 if args.smoke else 1024,
    )
    return s, sizes


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.render:
        block = render_report(json.loads(args.render.read_text()))
        print(block, end="")
        target = readme_target(args)
        if target is not None:
            write_readme(target, block)
        return

    def log(msg: str) -> None:
        print(f"[bench] {msg}", file=sys.stderr, flush=True)

    t_start = time.perf_counter()
    s, sizes = settings_from(args)
    s.work.mkdir(parents=True, exist_ok=True)
    log(f"work folder (cached models and tools): {s.work}")
    models = build_in_child(s.work, sizes, s.quants)
    notes = []
    bench_dir = None
    if not (args.smoke or args.no_llama_bench):
        bench_dir, how = llama_tools(s.work, args.llama_bin, log)
        if bench_dir is None:
            log(f"no llama-bench: {how}")
        notes.append(f"llama-bench: {how}." if bench_dir else f"no llama-bench figures: {how}.")
    with tempfile.TemporaryDirectory(prefix="qaudio-bench-") as tmp:
        run = Runner(Path(tmp), strict=args.smoke, log=log)
        measure(s, models, bench_dir, run)
    cmd = "scripts/bench.py " + " ".join(sys.argv[1:] if argv is None else argv)
    doc = {
        "meta": {
            "date": datetime.date.today().isoformat(),
            "machine": machine(),
            "versions": versions(bench_dir, s.hf),
            "command": f".venv/bin/python {cmd.strip()}",
            "work": str(s.work).replace(str(Path.home()), "~"),
            "wall_min": (time.perf_counter() - t_start) / 60,
            "model": describe_model(sizes),
            "layers": s.layers,
            "text": sizes.text,
            "threads": s.threads,
            "repeats": s.repeats,
            "decode_repeats": s.decode_repeats,
            "tokens": s.tokens,
            "answer": s.answer,
            "clips": list(s.clips),
            "e2e_quant": s.e2e_quant,
            "parallel_quant": s.parallel_quant,
            "copy_mib": s.copy_mib,
            "gguf": models.gguf_bytes,
            "mmproj_bytes": models.mmproj.stat().st_size,
            "positions": models.prompt_positions,
            "standin": (
                " (from a 64-wide stand-in encoder: the text model's cost does not depend on "
                "the values)"
                if models.decode_mmproj != models.mmproj
                else ""
            ),
            "notes": notes,
        },
        "records": run.records,
    }
    saved = s.work / f"run-{sizes.name}.json"
    saved.write_text(json.dumps(doc, indent=1))
    log(f"raw figures: {saved}")
    block = render_report(doc)
    print(block, end="")
    target = readme_target(args)
    if target is not None:
        write_readme(target, block)
        log(f"wrote the table into {target}")
