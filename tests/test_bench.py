"""A guard on scripts/bench.py: its smoke mode runs end to end and writes well-formed tables.

Only the structure is checked, never a timing: the smoke mode runs the tiny model through
every side the benchmark has except transformers and llama-bench (neither needed here), each
in its own child process, and writes its block into a copy of a README.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.bench
ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- bench:start", "<!-- bench:end -->"
BEFORE, AFTER = "# Title\n\n## Performance\n\n", "\n\n### Next section\n\nkept as it was\n"


def script_env(**extra: str) -> dict[str, str]:
    """The environment of a script run: this checkout's packages first, whatever is installed."""
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, **extra}


def tables(block: str) -> list[list[list[str]]]:
    """Every Markdown table in ``block``, as rows of stripped cells."""
    found: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*block.splitlines(), ""]:
        if line.startswith("|"):
            assert line.endswith("|"), line
            current.append([c.strip() for c in line[1:-1].split("|")])
        elif current:
            found.append(current)
            current = []
    return found


def table_with(found: list[list[list[str]]], first_header: str) -> list[list[str]]:
    matches = [t for t in found if t[0][0] == first_header]
    assert len(matches) == 1, f"one table starting with {first_header!r}"
    return matches[0]


WORK: dict[str, Path] = {}  # the smoke run's work folder (its saved raw figures)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    tmp = tmp_path_factory.mktemp("bench")
    readme = tmp / "README.md"
    readme.write_text(f"{BEFORE}{BEGIN} (old) -->\nold table\n{END}{AFTER}", encoding="utf-8")
    cmd = [sys.executable, str(ROOT / "scripts" / "bench.py"), "--smoke"]
    cmd += ["--work", str(tmp / "work"), "--readme", str(readme)]
    env = script_env()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "work folder (cached models and tools): " + str(tmp / "work") in proc.stderr
    WORK["smoke"] = tmp / "work"
    return proc.stdout, readme.read_text(encoding="utf-8")


def test_the_block_replaces_only_what_lies_between_the_markers(smoke: tuple[str, str]) -> None:
    out, readme = smoke
    assert out.startswith(BEGIN) and out.rstrip().endswith(END)
    assert readme == BEFORE + out.rstrip("\n") + AFTER
    assert "old table" not in readme


def test_every_table_is_well_formed(smoke: tuple[str, str]) -> None:
    found = tables(smoke[0])
    assert len(found) == 5  # first token, decode, parallel, goals, extrapolation
    for table in found:
        width = len(table[0])
        assert all(len(row) == width for row in table), table
        assert all(set(cell) <= set("-") and cell for cell in table[1]), table[1]
        assert len(table) > 2


def test_first_token_rows_hold_numbers(smoke: tuple[str, str]) -> None:
    table = table_with(tables(smoke[0]), "clip")
    rows = {(r[0], r[1]): r for r in table[2:]}
    assert set(rows) == {(c, p) for c in ("5 s", "30 s") for p in ("faithful", "mtmd")}
    assert rows[("5 s", "faithful")][2] == "125"
    assert rows[("30 s", "faithful")][2] == "750"
    for row in rows.values():
        first, total, rss = (float(x) for x in row[3:6])
        assert 0 < first <= total and rss > 0


def test_decode_rows_cover_each_gguf_and_runner(smoke: tuple[str, str]) -> None:
    table = table_with(tables(smoke[0]), "GGUF")
    seen = {(r[0], r[2]) for r in table[2:]}
    assert seen == {
        (q, runner) for q in ("F16", "Q4_K_M") for runner in ("qaudio engine", "llama_cpp.Llama")
    }
    for row in table[2:]:
        assert float(row[3]) > 0 and float(row[4]) > 0 and row[6].endswith("%")


def test_parallel_goals_and_extrapolation_are_labelled(smoke: tuple[str, str]) -> None:
    out = smoke[0]
    found = tables(out)
    assert [r[0] for r in table_with(found, "sequences")[2:]] == ["1", "2", "4", "8"]
    verdicts = [r[2] for r in table_with(found, "goal (issue 14)")[2:]]
    assert verdicts and all(v == "met" or v.startswith(("**missed**", "n/a")) for v in verdicts)
    assert table_with(found, "quantity")[0][2] == "extrapolated to 32 layers"
    assert "**Extrapolated, not measured**" in out
    assert "A measurement failed" not in out


def test_the_engine_is_also_timed_against_llama_in_one_process(smoke: tuple[str, str]) -> None:
    line = next(x for x in smoke[0].splitlines() if x.startswith("**Same process"))
    found = re.findall(r"(F16|Q4_K_M) (\d+\.\d+) \((\d+\.\d+)-(\d+\.\d+)\)", line)
    assert [q for q, *_ in found] == ["F16", "Q4_K_M"], line
    for _q, mid, low, high in found:
        assert 0 < float(low) <= float(mid) <= float(high), line


def test_every_side_obeys_the_cpu_kernel_verdict(tmp_path: Path) -> None:
    """Where llama.cpp's fast kernels fault (the test seam makes any machine one such), the
    smoke run still finishes: the engine, ``Llama`` and llama.cpp's tools all load quantized
    models with the portable kernels."""
    from qaudio_local.engine.cpu_probe import SEAM_ENV

    env = script_env(**{SEAM_ENV: "SIGSEGV", "QAUDIO_CACHE_DIR": str(tmp_path / "cache")})
    cmd = [sys.executable, str(ROOT / "scripts" / "bench.py"), "--smoke"]
    cmd += ["--work", str(tmp_path / "work")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "A measurement failed" not in proc.stdout
    decode = table_with(tables(proc.stdout), "GGUF")
    assert {r[0] for r in decode[2:]} == {"F16", "Q4_K_M"}


def test_a_run_changes_no_tracked_file_unless_asked(smoke: tuple[str, str], tmp_path: Path) -> None:
    """Re-rendering a saved run without --write-readme or --readme prints the block and
    leaves README.md alone; with --readme it writes there."""
    saved = next(WORK["smoke"].glob("run-*.json"))
    readme = ROOT / "README.md"
    before = (readme.read_bytes(), readme.stat().st_mtime_ns)
    cmd = [sys.executable, str(ROOT / "scripts" / "bench.py"), "--render", str(saved)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=script_env())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(BEGIN)
    assert (readme.read_bytes(), readme.stat().st_mtime_ns) == before
    copy = tmp_path / "README.md"
    copy.write_text(f"{BEFORE}{BEGIN} -->\n{END}{AFTER}", encoding="utf-8")
    proc = subprocess.run(
        [*cmd, "--readme", str(copy)], capture_output=True, text=True, timeout=120, env=script_env()
    )
    assert proc.returncode == 0, proc.stderr
    assert copy.read_text(encoding="utf-8") == BEFORE + proc.stdout.rstrip("\n") + AFTER
