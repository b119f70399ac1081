"""Benchmark the audio encoder against what a CPU user would otherwise run, side by side.

Builds a random Qwen2-Audio whose encoder has the real dimensions (d_model 1280, 32
layers, 20 heads, ffn 5120, 128 mels; ~0.64 B parameters), its projector GGUF in each
weight type this project's encoder runs (F32, F16, BF16, Q8_0), and a random
Whisper-large-v3-shaped model converted by CTranslate2's own converter and written in
whisper.cpp's own format (F16, Q8_0). Then, in rounds
that interleave the sides in a rotating order (each side in its own process), it times a
5 s, a 30 s and a 4 x 30 s input through:

- this project's ggml encoder, each projector type;
- transformers' audio tower + projector in float32 and bfloat16 (the reference; a type
  whose products torch only emulates on this CPU, bfloat16 without AVX-512 or AMX, is left
  out and the report says so, unless named in --sides);
- CTranslate2's Whisper encoder in each compute type the CPU offers;
- whisper.cpp's encoder (the libwhisper the pywhispercpp wheel bundles) in F16 and Q8_0,
  one window at a time, each a full 30 s window (its API encodes nothing shorter);

and measures the machine's peak (large matrix products) in the same run, so that each
side's rate is printed as a fraction of the peak for its arithmetic.

    .venv/bin/python scripts/bench_encoder.py [--threads N] [--rounds N] [--keep DIR]
    .venv/bin/python scripts/bench_encoder.py --sides ggml:F16,torch:bfloat16 --inputs 30s
    .venv/bin/python scripts/bench_encoder.py --smoke      # tiny dims: checks the plumbing

Needs ~6 GB of RAM and ~12 GB of disk at real size; takes 25-45 minutes on 2 cores (less
with --keep after the first run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from qaudio_dev.bench.encoder_flops import (
    effective_peak,
    emulated,
    encoder_flops,
    peak_source,
)
from qaudio_dev.bench.encoder_inputs import WHISPER_CPP_TYPES, build_inputs

INPUTS = {"5s": 5.0, "30s": 30.0, "4x30s": 120.0}
GGML_TYPES = ("F32", "F16", "BF16", "Q8_0")
TORCH_TYPES = ("float32", "bfloat16")
CT2_TYPES = ("int8", "int8_float32", "float32", "bfloat16")
PEAK_OF = {  # the arithmetic each side mostly does
    "ggml:F32": "float32",
    "ggml:F16": "float32",  # F16 weights are widened and multiplied in F32 on CPUs
    "ggml:BF16": "bfloat16",
    "ggml:Q8_0": "int8",
    "torch:float32": "float32",
    "torch:bfloat16": "bfloat16",
    "ct2:float32": "float32",
    "ct2:bfloat16": "bfloat16",
    "ct2:int8": "int8",
    "ct2:int8_float32": "int8",
    "wcpp:F16": "float32",  # as ggml:F16: F16 weights, F32 arithmetic
    "wcpp:Q8_0": "int8",
}
WHISPER_CPP = (
    "wcpp: whisper.cpp's encoder (libwhisper from the pywhispercpp wheel), default context "
    "parameters on the CPU (flash attention on); its API always encodes a full 30 s window "
    "(1500 positions), one window per call, so every input is whole windows; its time "
    "includes the one decoder layer's cross-attention keys and values"
)


def _run_side(side: str, spec_path: Path, timeout: float | None = None) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "qaudio_dev.bench.encoder_sides", side, str(spec_path)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"side": side, "error": f"stopped after {timeout:g} s (--side-timeout)"}
    if proc.returncode != 0:
        tail = " / ".join(proc.stderr.strip().splitlines()[-3:])
        return {"side": side, "error": f"exit {proc.returncode}: {tail}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _sides(
    args: argparse.Namespace, ct2_types: set[str], wcpp_types: set[str], slow: set[str]
) -> list[str]:
    """The sides to run: ``--sides`` as given, else every side this machine has, less
    transformers in a type whose products torch only emulates here (``slow``)."""
    if args.sides:
        return args.sides.split(",")
    out = [f"ggml:{t}" for t in GGML_TYPES]
    out += [f"torch:{t}" for t in TORCH_TYPES if t not in slow]
    out += [f"ct2:{t}" for t in CT2_TYPES if t in ct2_types]
    out += [f"wcpp:{t}" for t in WHISPER_CPP_TYPES if t in wcpp_types]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds (median taken)")
    ap.add_argument("--repeats", type=int, default=1, help="timed runs per input and round")
    ap.add_argument("--sides", default="", help="comma list, e.g. ggml:Q8_0,torch:bfloat16")
    ap.add_argument("--inputs", default=",".join(INPUTS), help="comma list of " + ",".join(INPUTS))
    ap.add_argument("--keep", type=Path, default=None, help="build into (and reuse) this folder")
    ap.add_argument("--smoke", action="store_true", help="tiny dimensions (plumbing check)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument(
        "--side-timeout",
        type=float,
        default=1800.0,
        help="seconds a side may take for all its inputs before it is stopped (default 1800)",
    )
    args = ap.parse_args()
    inputs = {k: INPUTS[k] for k in args.inputs.split(",")}
    with tempfile.TemporaryDirectory(prefix="qaudio-bench-encoder-") as tmp:
        work = args.keep or Path(tmp)
        built = build_inputs(work, smoke=args.smoke, log=lambda m: print(m, flush=True))
        spec = {**built.spec, "threads": args.threads, "repeats": args.repeats, "inputs": inputs}
        spec_path = work / "spec.json"
        spec_path.write_text(json.dumps(spec))
        if built.wcpp_missing:
            print(built.wcpp_missing, flush=True)
        print("peak (matrix products)", flush=True)
        peaks: list[dict[str, float]] = [_run_side("peak", spec_path)["peak"]]
        # the smoke run keeps every side: at its tiny dimensions an emulated type is cheap
        slow = set() if args.smoke else emulated(peaks[0]) & set(TORCH_TYPES)
        sides = _sides(args, set(built.ct2_types), set(built.wcpp_types), slow)
        results: dict[str, list[dict[str, Any]]] = {s: [] for s in sides}
        for r in range(args.rounds):
            order = sides[r % len(sides) :] + sides[: r % len(sides)]
            for side in order:
                print(f"round {r + 1}/{args.rounds}: {side}", flush=True)
                results[side].append(_run_side(side, spec_path, args.side_timeout))
            peaks.append(_run_side("peak", spec_path)["peak"])
        report = _report(results, peaks, inputs, built.dims, args.threads)
        left_out = {f"torch:{t}": _left_out(t, peaks[0]) for t in sorted(slow) if not args.sides}
        report["data"]["left_out"] = left_out
        report["text"] += "".join(f"\n{side} left out: {why}" for side, why in left_out.items())
        if built.wcpp_missing:
            report["text"] += "\n" + built.wcpp_missing
        print(report["text"])
        if args.json:
            args.json.write_text(json.dumps(report["data"], indent=1))
        failed = [s for s, rs in results.items() if any("error" in x for x in rs)]
        return 1 if failed else 0


def _left_out(dtype: str, peak: dict[str, float]) -> str:
    src = peak_source(peak)[dtype]
    return (
        f"torch's {dtype} products run at {peak[dtype]:.2f} G/s on this CPU against "
        f"{peak[src]:.0f} for {src} (no fast kernel: a real-size window would take hours); "
        f"name it in --sides to run it anyway"
    )


def _median(rounds: list[dict[str, Any]], name: str) -> float | None:
    times = [t for r in rounds if "seconds" in r for t in r["seconds"][name]]
    return statistics.median(times) if times else None


def _report(
    results: dict[str, list[dict[str, Any]]],
    peaks: list[dict[str, float]],
    inputs: dict[str, float],
    dims: dict[str, int],
    threads: int,
) -> dict[str, Any]:
    measured = {k: max(p[k] for p in peaks) for k in peaks[0]}
    peak, source = effective_peak(measured), peak_source(measured)
    unit = {k: "GOP/s" if k == "int8" else "GFLOP/s" for k in measured}
    lines = [
        f"\nCPU: {_cpu()}, {threads} threads; encoder d_model {dims['d_model']} x "
        f"{dims['layers']} layers; median of every timed run",
        "peak (matrix product, best): "
        + ", ".join(f"{k} {v:.0f} {unit[k]}" for k, v in measured.items()),
        *[
            f"  torch's {k} product is slower than its {src} one on this CPU (no fast kernel):"
            f" {k} arithmetic is measured against the {src} peak"
            for k, src in source.items()
            if src != k
        ],
        "",
        "| side | " + " | ".join(f"{k} s" for k in inputs) + " | 30 s window: % of peak |",
        "|---|" + "---|" * (len(inputs) + 1),
    ]
    data: dict[str, Any] = {"peak": peak, "peak_measured": measured, "dims": dims}
    data.update(threads=threads, sides={})
    for side, rounds in results.items():
        errors = [r["error"] for r in rounds if "error" in r]
        if errors:
            lines.append(f"| {side} | failed: {errors[0][:120]} |")
            continue
        med = {k: _median(rounds, k) for k in inputs}
        data["sides"][side] = med
        frac = ""
        if med.get("30s"):
            # the padded sides compute a full window whatever the input; so does 30 s here
            rate = encoder_flops(dims, 3000) / med["30s"] / 1e9
            frac = f"{100 * rate / peak[PEAK_OF[side]]:.0f}% ({rate:.0f} G/s)"
        cells = " | ".join(f"{v:.2f}" if v is not None else "-" for v in med.values())
        lines.append(f"| {side} | {cells} | {frac} |")
    lines.append(
        f"\nA 30 s window is {encoder_flops(dims, 3000) / 1e9:.0f} GFLOP "
        f"(5 s of audio on the faithful path: {encoder_flops(dims, 500) / 1e9:.0f})."
    )
    if any(side.startswith("wcpp:") for side in results):
        lines.append(WHISPER_CPP + ".")
    return {"text": "\n".join(lines), "data": data}


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                amx = " (AMX)" if " amx_tile" in Path("/proc/cpuinfo").read_text() else ""
                return line.split(":", 1)[1].strip() + amx
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
