"""Where a 30 s window's time goes in the ggml encoder, op kind by op kind.

Times each kind of op of one encoder layer (and the convolution stem) on its own, at the
real shapes, for each projector weight type, and prints the estimate of a window built from
them beside the rate torch gets on the same matrix products (float32 and bfloat16, when
torch is installed): the profile behind README's "what the profile shows". Q8_0 runs on
the matrix units where the CPU-kernel plan would put the encoder's weights there.

    .venv/bin/python scripts/profile_encoder.py                      # real shapes, 2-4 min
    .venv/bin/python scripts/profile_encoder.py --types F16 --positions 250   # a 5 s window
    .venv/bin/python scripts/profile_encoder.py --smoke              # tiny shapes (a check)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from qaudio_dev.bench.encoder_ops import TYPES, Dims, ops, time_op


def _best(fn: Callable[[], object], repeats: int = 5) -> float:
    fn()  # a warm-up call: thread pool, first-touch memory
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def torch_rates(d: Dims, positions: int, threads: int) -> dict[str, float]:
    """G(FL)OP/s torch gets on the layer's products per dtype, and on its attention.

    Keys: ``float32`` and ``bfloat16`` (the four projections and the feed-forward products,
    through ``linear`` as ``nn.Linear`` runs them) and ``attention float32`` (one layer's
    ``scaled_dot_product_attention``). Empty without torch. A dtype whose small probe runs
    at under a quarter of float32's is left out: torch emulates it on this CPU (bfloat16
    without AVX-512), and the layer's products would take many minutes to say only that.
    """
    try:
        import torch
    except ImportError:
        return {}
    torch.set_num_threads(threads)
    shapes = [(d.d_model, d.d_model)] * 4 + [(d.d_model, d.ffn), (d.ffn, d.d_model)]
    flops = sum(2.0 * positions * k * m for k, m in shapes)
    probe = {}
    for name in ("float32", "bfloat16"):
        a = torch.randn(256, 256).to(getattr(torch, name))
        probe[name] = 1.0 / max(_best(lambda a=a: a @ a, 3), 1e-9)
    out = {}
    for name in ("float32", "bfloat16"):
        if probe[name] < probe["float32"] / 4:
            print(f"torch {name}: no fast kernel on this CPU, left out")
            continue
        dtype = getattr(torch, name)
        pairs = [
            (torch.randn(positions, k, dtype=dtype), torch.randn(m, k, dtype=dtype))
            for k, m in shapes
        ]

        def products(pairs: list = pairs) -> None:
            for x, w in pairs:
                torch.nn.functional.linear(x, w)

        out[name] = flops / _best(products) / 1e9
    hd = d.d_model // d.heads
    q, k, v = (torch.randn(1, d.heads, positions, hd) for _ in range(3))
    seconds = _best(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v))
    out["attention float32"] = 4.0 * positions * positions * d.d_model / seconds / 1e9
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--positions", type=int, default=1500, help="1500 = a 30 s window")
    ap.add_argument("--types", default="F32,F16,BF16,Q8_0", help="comma list")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes (a plumbing check)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    types = [t.strip().upper() for t in args.types.split(",")]
    if not set(types) <= set(TYPES):
        ap.error(f"--types takes {', '.join(TYPES)}")
    d = Dims(d_model=64, heads=4, ffn=256, layers=2, mels=16) if args.smoke else Dims()
    if args.smoke:
        args.positions = min(args.positions, 100)
    from qaudio_local.engine.cpu_probe import kernel_plan

    amx = kernel_plan("auto", text_quantized=False, projector_quantized=True).encoder_extra_bufts
    results: dict = {"dims": asdict(d), "positions": args.positions, "threads": args.threads}
    for name in types:
        rows, layer_s = [], 0.0
        for op in ops(d, args.positions, TYPES[name]):
            s = time_op(op, threads=args.threads, amx=amx and name == "Q8_0")
            per_window = s * (op.per_layer * d.layers if op.per_layer else 1)
            rate = op.flops / s / 1e9 if op.flops else None
            rows.append({"op": op.name, "ms": s * 1e3, "window_s": per_window, "gflops": rate})
            layer_s += per_window
        results[name] = {"rows": rows, "window_s": layer_s, "amx": amx and name == "Q8_0"}
        where = " (matrix units)" if results[name]["amx"] else ""
        print(f"\n{name}{where}: a window of {args.positions} positions ~ {layer_s:.2f} s\n")
        print("| op | ms each | s per window | share | G(FL)OP/s |")
        print("|---|---|---|---|---|")
        for r in rows:
            rate = f"{r['gflops']:.0f}" if r["gflops"] else "-"
            share = 100 * r["window_s"] / layer_s
            print(f"| {r['op']} | {r['ms']:.1f} | {r['window_s']:.2f} | {share:.0f}% | {rate} |")
    rates = torch_rates(d, args.positions, args.threads)
    results["torch_gflops"] = rates
    if rates:
        said = ", ".join(f"{k} {v:.0f}" for k, v in rates.items())
        print(f"\ntorch on the same layer's products (and attention), GFLOP/s: {said}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
