"""``qaudio`` in process through click's ``CliRunner``, and ``qaudio run`` on the tiny pair."""

from __future__ import annotations

import inspect
from pathlib import Path

from click.testing import CliRunner, Result

from qaudio_local.cli.main import main

MAX_TOKENS = 8  # the answer length of every run_args() run
Pair = tuple[Path, Path]


def runner() -> CliRunner:
    """A runner that keeps stderr apart from stdout on every click 8.x."""
    if "mix_stderr" in inspect.signature(CliRunner).parameters:  # click < 8.2
        return CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    return CliRunner()


def invoke(*args: str | Path, stdin: bytes | None = None) -> Result:
    """Run ``qaudio ARGS`` in process; an exception escaping the CLI fails the test."""
    result = runner().invoke(main, [str(a) for a in args], input=stdin)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"the CLI leaked {result.exception!r}") from result.exception
    return result


def run_args(pair: Pair, *audio: str | Path, extra: tuple[str, ...] = ()) -> list[str]:
    """Arguments of ``qaudio run`` on the tiny pair: short answers, small context."""
    model, mmproj = pair
    options = {
        "--model-file": model,
        "--mmproj-file": mmproj,
        "--max-tokens": MAX_TOKENS,
        "--n-ctx": 2048,
        "--threads": 2,
    }
    # extra comes last: a repeated option takes its last value (e.g. another --n-ctx)
    return ["run", *map(str, audio), *(str(x) for kv in options.items() for x in kv), *extra]
