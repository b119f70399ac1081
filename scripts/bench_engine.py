"""Benchmark the engine: parallel decoding, and what prefix reuse saves a conversation.

Two parts, each measured side by side in one run (ratios, not absolute times, are what
to read on a shared machine):

1. ``--decode``: aggregate decode tokens/s with 1, 2, 4 and 8 sequences on a synthetic
   text model of the real width (hidden 4096, 32 heads, ffn 11008; ``--layers`` of them,
   F16), against a plain one-sequence loop over the same context (what the runtime did
   before the engine) and, if ``--llama-bin`` holds llama.cpp's ``llama-batched-bench``
   (built from the sources vendored in the llama-cpp-python sdist), against it on the
   same GGUF.
2. ``--turns``: time to first token of a conversation's second turn (a text question)
   after a first turn with a 29.9 s clip, against the same prompt cold, with the real
   encoder size (d_model 1280, 32 layers).

    .venv/bin/python scripts/bench_engine.py --decode --turns --work ~/.cache/qaudio-bench

Needs ~4 GB of RAM and ~3 GB of disk in --work (the models are built once and reused).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np

from qaudio_dev.bench.rates import engine_rate, fast_kernels
from qaudio_dev.synthetic import REAL_AUDIO, REAL_TEXT, SMALL_AUDIO, build_synthetic
from qaudio_local.engine.model import AudioModel
from qaudio_local.engine.options import ModelOptions, SamplingOptions
from qaudio_local.engine.prompt import Message, user

WIDE_TEXT = REAL_TEXT  # the real width; each part picks its number of layers


def build(work: Path, name: str, audio: dict, text: dict) -> tuple[Path, Path]:
    """The F16 pair of a synthetic model in ``work/name``, built on the first run only."""
    synth = build_synthetic(work / name, audio, text)
    if synth.built_s:
        size = synth.gguf["F16"].stat().st_size / 2**30
        print(f"built {name}: {size:.2f} GiB text model in {synth.built_s:.0f} s")
    return synth.gguf["F16"], synth.mmproj


# --- 1. parallel decoding ---------------------------------------------------------------------


def plain_loop_rate(model: AudioModel, tokens: int) -> float:
    """One sequence, one token per llama_decode, greedy: the loop before the engine."""
    lib, ctx = model._llama, model._ctx
    sched = model._scheduler
    assert sched is not None
    with sched.held():  # the engine's thread stays idle while this loop owns the context
        mem = lib.llama_get_memory(ctx)
        lib.llama_memory_clear(mem, True)
        ids = model.tokenize("Sequence 0: say something.")
        batch = lib.llama_batch_init(512, 0, 1)
        sampler = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        lib.llama_sampler_chain_add(sampler, lib.llama_sampler_init_greedy())
        try:
            for i, tok in enumerate(ids):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = tok, i, 1
                batch.seq_id[i][0], batch.logits[i] = 0, i == len(ids) - 1
            batch.n_tokens = len(ids)
            assert lib.llama_decode(ctx, batch) == 0
            pos = len(ids)
            t0 = time.perf_counter()
            for _ in range(tokens - 1):
                tok = lib.llama_sampler_sample(sampler, ctx, -1)
                batch.n_tokens = 1
                batch.token[0], batch.pos[0], batch.n_seq_id[0] = tok, pos, 1
                batch.seq_id[0][0], batch.logits[0] = 0, True
                assert lib.llama_decode(ctx, batch) == 0
                pos += 1
            dt = time.perf_counter() - t0
        finally:
            lib.llama_batch_free(batch)
            lib.llama_sampler_free(sampler)
            lib.llama_memory_clear(mem, True)
    model.clear_cache()  # the engine's bookkeeping must not trust the cleared cells
    return (tokens - 1) / dt


def batched_bench(binary: Path, model: Path, threads: int, tokens: int) -> dict[int, float]:
    """llama.cpp's own llama-batched-bench: S_TG (decode t/s) per number of sequences."""
    cmd = [str(binary), "-m", str(model), "-c", "4096", "-b", "512", "-ub", "512", "-npp", "16"]
    cmd += ["-ntg", str(tokens), "-npl", "1,2,4,8", "-t", str(threads), "-fa", "on"]
    if not fast_kernels(model):
        cmd.append("--no-repack")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rates = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        # columns: PP, TG, B, N_KV, T_PP s, S_PP t/s, T_TG s, S_TG t/s, T s, S t/s
        if len(cells) >= 10 and cells[2].isdigit():
            rates[int(cells[2])] = float(cells[7])
    return rates


def bench_decode(args: argparse.Namespace) -> None:
    text = {**WIDE_TEXT, "layers": args.layers}
    model_path, mmproj = build(args.work, f"wide-{args.layers}l", SMALL_AUDIO, text)
    opts = ModelOptions(n_ctx=4096, n_threads=args.threads, n_parallel=8, prefix_cache=0)
    rows: dict[str, list[float]] = {}
    bench = args.llama_bin / "llama-batched-bench" if args.llama_bin else None
    with AudioModel(model_path, mmproj, opts) as model:
        engine_rate(model, 1, 8)  # warm up
        for _ in range(args.repeats):  # interleaved: each repeat runs everything once
            plain = plain_loop_rate(model, args.tokens)
            rows.setdefault("plain loop, 1 sequence", []).append(plain)
            for n in (1, 2, 4, 8):
                model.clear_cache()
                rows.setdefault(f"engine, {n}", []).append(engine_rate(model, n, args.tokens))
            if bench is not None and bench.exists():
                for n, rate in batched_bench(bench, model_path, args.threads, args.tokens).items():
                    rows.setdefault(f"llama, {n}", []).append(rate)
    size = model_path.stat().st_size / 2**30
    print(
        f"\ndecode, {size:.2f} GiB F16 model of width 4096 ({args.layers} layers), "
        f"{args.threads} threads, {args.tokens} tokens per sequence, median of {args.repeats}\n"
    )
    med = {k: statistics.median(v) for k, v in rows.items()}
    ref = {n: med[f"llama, {n}"] for n in (1, 2, 4, 8) if f"llama, {n}" in med}
    print("| sequences | engine tok/s | vs 1 sequence | llama-batched-bench tok/s | engine / it |")
    print("|---|---|---|---|---|")
    for n in (1, 2, 4, 8):
        e = med[f"engine, {n}"]
        r = ref.get(n)
        rs = f"{r:.1f} | {e / r:.2f}" if r else "- | -"
        print(f"| {n} | {e:.1f} | {e / med['engine, 1']:.2f}x | {rs} |")
    plain = med["plain loop, 1 sequence"]
    print(
        f"\none sequence: engine {med['engine, 1']:.1f} tok/s, plain loop {plain:.1f} tok/s "
        f"(engine / plain {med['engine, 1'] / plain:.2f})"
    )


# --- 2. a conversation's second turn ---------------------------------------------------------


def ttft(model: AudioModel, messages: list[Message]) -> tuple[float, int]:
    t0 = time.perf_counter()
    gen = model.stream(messages=messages, sampling=SamplingOptions(max_tokens=4))
    chunks = iter(gen)
    next(chunks)
    dt = time.perf_counter() - t0
    for _ in chunks:
        pass
    assert gen.result is not None
    return dt, gen.result.usage.cached_tokens


def bench_turns(args: argparse.Namespace) -> None:
    model_path, mmproj = build(args.work, "real-encoder", REAL_AUDIO, {**WIDE_TEXT, "layers": 1})
    rng = np.random.default_rng(1)
    t = np.arange(int(29.9 * 16000)) / 16000
    clip = (0.4 * np.sin(2 * np.pi * 180 * t) + 0.05 * rng.standard_normal(t.size)).astype("f4")
    turn1 = [user(clip, "What is in this recording?")]
    opts = ModelOptions(n_ctx=2048, n_threads=args.threads)
    cold_s, warm_s = [], []
    with AudioModel(model_path, mmproj, opts) as model:
        for _ in range(args.repeats):
            model.clear_cache()
            first = model.generate(messages=turn1, sampling=SamplingOptions(max_tokens=8))
            turn2 = [*turn1, Message("assistant", (first.text,)), user("And how long is it?")]
            warm, cached = ttft(model, turn2)
            model.clear_cache()
            cold, _ = ttft(model, turn2)
            warm_s.append(warm)
            cold_s.append(cold)
    w, c = statistics.median(warm_s), statistics.median(cold_s)
    print(
        f"\nturn 2 after a 29.9 s clip, real encoder size, {args.threads} threads, median of "
        f"{args.repeats}: time to first token {w:.2f} s with reuse ({cached} prompt positions "
        f"reused) vs {c:.2f} s cold: {w / c:.3f} of cold ({c / w:.0f}x faster)"
    )


def bench_chat(args: argparse.Namespace) -> None:
    """Time to first token of each turn of a 10-turn conversation with three clips."""
    from qaudio_local.chat import Conversation

    model_path, mmproj = build(args.work, "real-encoder", REAL_AUDIO, {**WIDE_TEXT, "layers": 1})
    rng = np.random.default_rng(2)
    t = np.arange(5 * 16000) / 16000

    def clip(hz: float) -> np.ndarray:
        x = 0.4 * np.sin(2 * np.pi * hz * t) + 0.05 * rng.standard_normal(t.size)
        return x.astype("f4")

    turns = [
        ("What is this?", [clip(180)]),
        ("Is it loud?", []),
        ("And this one?", [clip(260)]),
        ("Compare them.", []),
        ("Which is longer?", []),
        ("Here is a third.", [clip(340)]),
        ("Summarise all three.", []),
        ("Anything else?", []),
        ("Thanks. One more question?", []),
        ("Goodbye.", []),
    ]
    opts = ModelOptions(n_ctx=4096, n_threads=args.threads)
    rows = []
    with AudioModel(model_path, mmproj, opts) as model:
        conv = Conversation(model, sampling=SamplingOptions(max_tokens=24))
        for text, audio in turns:
            t0 = time.perf_counter()
            gen = conv.ask(text, audio)
            chunks = iter(gen)
            next(chunks)
            first = time.perf_counter() - t0
            for _ in chunks:
                pass
            u = gen.result.usage  # type: ignore[union-attr]
            rows.append((text, len(audio), first, u.prompt_tokens, u.cached_tokens))
    print(f"\nconversation at real encoder size, {args.threads} threads (5 s clips)\n")
    print("| turn | new clip | first token s | prompt tokens | reused |")
    print("|---|---|---|---|---|")
    for i, (_text, n_clip, first, prompt, cached) in enumerate(rows, 1):
        print(f"| {i} | {'yes' if n_clip else ''} | {first:.2f} | {prompt} | {cached} |")
    text_turns = [r[2] for r in rows if not r[1]]
    print(
        f"\ntext-only turns: first token in {min(text_turns):.2f}-{max(text_turns):.2f} s while "
        f"the prompt grew from {rows[1][3]} to {rows[-1][3]} tokens"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--decode", action="store_true", help="parallel decoding throughput")
    ap.add_argument("--turns", action="store_true", help="second-turn time to first token")
    ap.add_argument("--chat", action="store_true", help="time to first token over 10 turns")
    ap.add_argument("--work", type=Path, default=Path.home() / ".cache" / "qaudio-bench")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--layers", type=int, default=3, help="text layers of the decode model")
    ap.add_argument("--tokens", type=int, default=48, help="tokens per sequence")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--llama-bin", type=Path, default=None, help="folder with llama-batched-bench")
    args = ap.parse_args()
    if not (args.decode or args.turns or args.chat):
        ap.error("pass --decode, --turns and/or --chat")
    args.work.mkdir(parents=True, exist_ok=True)
    if args.decode:
        bench_decode(args)
    if args.turns:
        bench_turns(args)
    if args.chat:
        bench_chat(args)


if __name__ == "__main__":
    main()
