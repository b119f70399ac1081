"""The Markdown block for README.md (tables, goals, extrapolation), written between its
bench markers, and the facts about the machine and versions it states."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from qaudio_dev.bench.goals import extrapolation, goals
from qaudio_dev.bench.settings import BEGIN, END, GIB, N_BATCH, PARALLEL, Sizes
from qaudio_dev.bench.view import View, median, ratio, show, span

RUNNERS = (
    ("engine", "qaudio engine"),
    ("llama_bench", "llama-bench (native)"),
    ("llama_py", "llama_cpp.Llama"),
)


def ttft_table(v: View, m: dict[str, Any]) -> list[str]:
    sides = ["faithful", "mtmd", "transformers float32", "transformers bfloat16"]
    lines = [
        "| clip | path | audio tokens | first token s | end to end s | peak RSS GiB "
        "| first token / faithful | end to end / faithful | RSS / faithful |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for seconds in m["clips"]:
        base = {k: v.clip("faithful", seconds, k) for k in ("first_s", "total_s")}
        base_rss = v.rss("ttft", side="faithful")
        for side in sides:
            kind = "hf" if side.startswith("transformers") else "ttft"
            if not v.pick(kind, side=side):
                continue
            first, total = v.clip(side, seconds, "first_s"), v.clip(side, seconds, "total_s")
            tokens, rss = v.clip(side, seconds, "audio_tokens"), v.rss(kind, side=side)
            lines.append(
                f"| {seconds:g} s | {side} | {show(tokens, '.0f')} "
                f"| {span(v.clips(side, seconds, 'first_s'))} "
                f"| {span(v.clips(side, seconds, 'total_s'))} "
                f"| {show(rss)} | {show(ratio(first, base['first_s']), '.2f', 'x')} "
                f"| {show(ratio(total, base['total_s']), '.2f', 'x')} "
                f"| {show(ratio(rss, base_rss), '.2f', 'x')} |"
            )
    return lines


def decode_table(v: View, m: dict[str, Any]) -> list[str]:
    bw = v.copy_bps()
    lines = [
        "| GGUF | read per token GiB | runner | prefill tok/s | decode tok/s "
        "| decode / llama-bench | decode x bytes / copy bandwidth | peak RSS GiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for quant in v.quants:
        per_token = m["gguf"][quant]["per_token"]
        native = v.value("llama_bench", "decode_tps", quant=quant)
        for kind, label in RUNNERS:
            if not v.pick(kind, quant=quant):
                continue
            dec = v.value(kind, "decode_tps", quant=quant)
            frac = None if dec is None or not bw else dec * per_token / bw
            lines.append(
                f"| {quant} | {per_token / GIB:.2f} | {label} "
                f"| {span(v.values(kind, 'prefill_tps', quant=quant), '.1f')} "
                f"| {span(v.values(kind, 'decode_tps', quant=quant))} "
                f"| {show(ratio(dec, native), '.3f')} | {show(frac, '.0%')} "
                f"| {show(v.rss(kind, quant=quant))} |"
            )
    return lines


def same_process(v: View) -> list[str]:
    """The engine against ``Llama`` in one process, a paragraph (none if not measured)."""
    found = {q: v.paired(q) for q in v.quants}
    if not any(found.values()):
        return []
    rows = v.pick("pair")
    return [
        f"**Same process, taking turns**: the engine and llama_cpp.Llama loaded side by side "
        f"on one GGUF, {rows[0]['tokens']} tokens each turn, {len(rows[0]['pairs'])} turns per "
        "round (who goes first alternates), so the host's drift hits both alike; engine / "
        "Llama, median (range) of every turn: "
        + ", ".join(f"{q} {span(x, '.3f')}" for q, x in found.items() if x)
        + ".",
        "",
    ]


def parallel_table(v: View) -> list[str]:
    rows = v.pick("parallel")
    lines = ["| sequences | aggregate decode tok/s | vs 1 sequence |", "|---|---|---|"]
    one = median(r["rates"]["1"] for r in rows)
    for n in PARALLEL:
        rates = [r["rates"][str(n)] for r in rows]
        rate = median(rates)
        lines.append(f"| {n} | {span(rates, '.1f')} | {show(ratio(rate, one), '.2f', 'x')} |")
    return lines


def render_report(doc: dict[str, Any]) -> str:
    v, m = View(doc), doc["meta"]
    bw = v.copy_bps()
    g = m["gguf"]
    lines = [
        BEGIN + " (written by scripts/bench.py; do not edit by hand) -->",
        f"**Measured** {m['date']} on {m['machine']}; Python {m['versions']['python']}, "
        + ", ".join(f"{k} {val}" for k, val in m["versions"].items() if k != "python")
        + f". `{m['command']}` took {m['wall_min']:.0f} min (models cached in `{m['work']}`).",
        "",
        f"Model: {m['model']}. {m['threads']} threads. Figures are medians (with the range "
        f"in brackets) of {m['repeats']} rounds for the first token and "
        f"{m['decode_repeats']} for prefill, decode and parallel sequences; each round "
        "interleaves the sides it compares in a rotating order, each side runs in its own "
        "process (peak RSS from `wait4`, the most of any round), caches are cleared before "
        "every timed request. The machine is shared, so single figures move; read the ratios.",
        "",
        f"**Time to first token and end to end** (first token + {m['answer']} tokens; this "
        f"project: {m['e2e_quant']} text GGUF ({g[m['e2e_quant']]['total'] / GIB:.2f} GiB) + "
        f"F16 projector ({m['mmproj_bytes'] / GIB:.2f} GiB); transformers: the same checkpoint, "
        "CPU, `AutoProcessor` + `generate`, greedy; a text-only warm-up in every process):",
        "",
        *ttft_table(v, m),
        "",
        f"**Prefill and decode on the same GGUF** (prefill: {m['positions']} positions, for the "
        f"engine a prompt of 750 audio tokens{m['standin']} and its text, for the other two as "
        f"many text tokens; decode: {m['tokens']} tokens after a short prompt; batch "
        f"{N_BATCH}, flash attention on, f16 KV cache). Memory copy bandwidth measured in the "
        "same run: "
        f"{show(None if bw is None else bw / 1e9, '.1f')} GB/s (numpy copy of {m['copy_mib']} MiB, "
        "bytes read + written, best of 1 and all threads):",
        "",
        *decode_table(v, m),
        "",
        *same_process(v),
        f"**Parallel sequences through the engine** ({m['parallel_quant']}, {m['tokens']} "
        "tokens each, all started in the same step):",
        "",
        *parallel_table(v),
        "",
        "**Goals**:",
        "",
    ]
    goal_lines, notes = goals(v, m)
    lines += goal_lines
    lines += ["", *[f"- {n}" for n in notes], *[f"- Notes: {n}" for n in m["notes"]]]
    if v.errors():
        lines += [f"- A measurement failed: {e}" for e in v.errors()]
    lines += [
        "",
        f"**Extrapolated, not measured**: the full model's 32 text layers from the {m['layers']} "
        "measured (decode time per token scaled by the weights it reads, which the GGUF tensor "
        "sizes give; the text model's share of the first token by the layer count; peak memory "
        "by the added layers' weights).",
        "",
        *extrapolation(v, m),
        "",
        "No GPU was lent to this run: there are no GPU figures.",
        END,
    ]
    return "\n".join(lines) + "\n"


def write_readme(readme: Path, block: str) -> None:
    """Replace what lies between the bench markers, and nothing else."""
    text = readme.read_text(encoding="utf-8")
    start = text.find(BEGIN)
    end = text.find(END, start)
    if start < 0 or end < 0:
        raise SystemExit(f"{readme} has no {BEGIN} ... {END} markers")
    readme.write_text(text[:start] + block.rstrip("\n") + text[end + len(END) :], encoding="utf-8")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    system = f"{platform.system()} {platform.release()}"
    return f"{cpu}, {os.cpu_count()} cores, {ram:.0f} GiB RAM, {system}"


def versions(bench_dir: Path | None, hf: bool) -> dict[str, str]:
    import llama_cpp

    out = {"python": platform.python_version(), "llama-cpp-python": llama_cpp.__version__}
    out["numpy"] = np.__version__
    if bench_dir is not None:
        proc = subprocess.run(
            [str(bench_dir / "llama-bench"), "--version"], capture_output=True, text=True
        )
        found = re.search(r"version: (\S+ \(\S+\))", proc.stdout + proc.stderr)
        out["llama-bench"] = found.group(1) if found else "unknown version"
    if hf:
        import torch
        import transformers

        out |= {"torch": torch.__version__, "transformers": transformers.__version__}
    return out


def describe_model(sizes: Sizes) -> str:
    a, t = sizes.audio, sizes.text
    return (
        f"synthetic Qwen2-Audio with random weights, encoder d_model {a['d_model']} x "
        f"{a['layers']} layers ({a['heads']} heads, ffn {a['ffn']}), text model hidden "
        f"{t['hidden']} x **{t['layers']} of 32 layers** ({t['heads']} heads, {t['kv_heads']} KV "
        f"heads, ffn {t['ffn']}, vocab {sizes.vocab or 'of the tiny tokenizer'})"
    )
