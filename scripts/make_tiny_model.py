"""Write the tiny random Qwen2-Audio checkpoint (Hugging Face layout) to a directory.

Usage: ``python scripts/make_tiny_model.py OUT_DIR [--seed N] [--dtype float32] [--shards 1]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, write the checkpoint and list what was written.

    Args:
        argv: Arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0 on success, 1 when the checkpoint could not be written.
    """
    from qaudio_local.convert.tiny import DTYPES, make_tiny_checkpoint
    from qaudio_local.errors import QAudioError

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="directory to write (created if missing)")
    parser.add_argument("--seed", type=int, default=0, help="weights seed (default 0)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="stored weight type")
    parser.add_argument("--shards", type=int, default=1, help="number of safetensors files")
    args = parser.parse_args(argv)
    try:
        out = make_tiny_checkpoint(
            args.out_dir, seed=args.seed, dtype=args.dtype, shards=args.shards
        )
    except (QAudioError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in sorted(out.iterdir()):
        print(f"{path.stat().st_size:>10,d}  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
