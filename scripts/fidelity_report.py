"""Print the fidelity table for README.md: faithful and mtmd audio paths vs the reference.

Builds the tiny Qwen2-Audio, converts it to f32 GGUFs, and for each clip compares the
last-position logits and a 20-token greedy continuation of both audio paths against
transformers (see qaudio_dev/reference.py for what "the reference" is). Then times the
encode and prefill of a 5 s clip on both paths, side by side in the same run.

    .venv/bin/python scripts/fidelity_report.py          # needs the [parity] extra + torch
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from qaudio_dev.fidelity import (
    CASES,
    N_GREEDY,
    QUIET_PEAK,
    compare,
    make_clip,
    reference_run,
)
from qaudio_dev.reference import ReferenceModel
from qaudio_local.convert import convert_checkpoint
from qaudio_local.convert.tiny import make_tiny_checkpoint
from qaudio_local.engine.model import AudioModel, ModelOptions


def _label(seconds: float, peak: float, stereo: bool) -> str:
    kind = "quiet" if peak == QUIET_PEAK else "normal"
    return f"{seconds:g} s {kind}{' stereo' if stereo else ''}"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = make_tiny_checkpoint(Path(tmp) / "tiny")
        pair = convert_checkpoint(ckpt, Path(tmp) / "gguf", outtype="f32")
        ref = ReferenceModel(ckpt)
        models = {
            path: AudioModel(
                pair.model_path,
                pair.mmproj_path,
                ModelOptions(n_ctx=8192, kv_type="f32", audio_path=path),
            )
            for path in ("faithful", "mtmd")
        }
        print(
            "| clip | audio tokens ref / faithful / mtmd | max abs diff faithful / mtmd "
            "| cosine faithful / mtmd | top-1 faithful / mtmd "
            f"| greedy match (of {N_GREEDY}) faithful / mtmd |"
        )
        print("|---|---|---|---|---|---|")
        for seconds, peak, stereo in CASES:
            clip = make_clip(seconds, peak, stereo)
            expected = reference_run(ref, clip)
            f, m = (compare(models[p], expected, clip) for p in ("faithful", "mtmd"))
            print(
                f"| {_label(seconds, peak, stereo)} | {f.ref_tokens} / {f.audio_tokens} / "
                f"{m.audio_tokens} | {f.max_abs:.1e} / {m.max_abs:.1e} | {f.cosine:.6f} / "
                f"{m.cosine:.4f} | {'yes' if f.top1 else 'no'} / {'yes' if m.top1 else 'no'}"
                f" | {f.greedy_match} / {m.greedy_match} |"
            )
        _timings(models)
        for model in models.values():
            model.close()


def _timings(models: dict[str, AudioModel], repeats: int = 5) -> None:
    """Median encode and prefill time of a 5 s clip, both paths interleaved in one run."""
    clip = make_clip(5.0)
    runs: dict[str, list[tuple[float, float, int]]] = {p: [] for p in models}
    for _ in range(repeats):
        for path, model in models.items():
            model.clear_cache()  # time the cold path: no reused encoding or cells
            r = model.generate("Transcribe.", [clip])
            runs[path].append((r.timings.encode_ms, r.timings.prefill_ms, r.usage.audio_tokens))
    print("\n5 s clip, tiny model, CPU, median of", repeats, "interleaved runs:\n")
    print("| path | audio tokens | encode ms | prefill ms |")
    print("|---|---|---|---|")
    med = {}
    for path, rows in runs.items():
        enc = statistics.median(r[0] for r in rows)
        pre = statistics.median(r[1] for r in rows)
        med[path] = (enc, pre)
        print(f"| {path} | {rows[0][2]} | {enc:.1f} | {pre:.1f} |")
    f, m = med["faithful"], med["mtmd"]
    print(f"\nratios mtmd / faithful: encode {m[0] / f[0]:.1f}x, prefill {m[1] / f[1]:.1f}x")


if __name__ == "__main__":
    main()
