"""The repository around the package keeps its shape (issue 19, item 7).

- no test module imports another test module (shared helpers live in ``tests/support/``),
  and every import of the tests' own code is absolute (``from tests.support.x import ...``);
- no script edits ``sys.path`` or imports another script: what scripts share is the
  ``qaudio_dev`` package;
- ``qaudio_local`` imports neither ``qaudio_dev`` nor ``tests``, and ``qaudio_dev`` does not
  import ``tests``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> list[tuple[int, str]]:
    """(relative level, module) of every import in ``path``, at any depth."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(0, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if base in ("", "tests") and not node.level:
                found += [(0, f"{base}.{alias.name}".strip(".")) for alias in node.names]
            else:
                found.append((node.level, base))
    return found


def _python_files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def test_no_test_module_imports_another_and_imports_are_absolute() -> None:
    problems = []
    for path in _python_files("tests"):
        for level, module in _imports(path):
            if level:
                problems.append(f"{path.name}: relative import (level {level}) of {module!r}")
            elif module.startswith("tests.") and not module.startswith("tests.support"):
                problems.append(f"{path.name}: imports {module}")
    assert problems == []


def test_scripts_share_code_through_qaudio_dev_only() -> None:
    scripts = {p.stem for p in (ROOT / "scripts").glob("*.py")}
    problems = []
    for path in sorted((ROOT / "scripts").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        if "sys.path" in text:
            problems.append(f"{path.name} edits sys.path")
        for _level, module in _imports(path):
            if module.split(".")[0] in scripts | {"scripts", "tests"}:
                problems.append(f"{path.name} imports {module}")
    assert problems == []


def test_the_package_imports_no_dev_tooling() -> None:
    problems = []
    for folder, banned in (("qaudio_local", {"qaudio_dev", "tests"}), ("qaudio_dev", {"tests"})):
        for path in _python_files(folder):
            for level, module in _imports(path):
                if not level and module.split(".")[0] in banned:
                    problems.append(f"{path.relative_to(ROOT)} imports {module}")
    assert problems == []
