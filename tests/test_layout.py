"""The package's layering holds: no lower layer imports a higher one, and no import cycles.

Every import counts, at module level or inside a function (a lazy import couples modules
just the same); only imports under ``if TYPE_CHECKING:`` are left out. So does a module the
package starts as a child process by name (``[sys.executable, "-m", "qaudio_local.x.y"]``,
the name written there or in a module constant): a lower layer may not run a higher one
either, except for the launches allowed by name below, each with its reason. The map below
is the one ARCHITECTURE.md explains.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "qaudio_local"

# sub-package -> layer; a module may import its own sub-package, the root modules, and
# sub-packages of a lower layer only (same layer, other sub-package: not allowed)
LAYERS = {
    "audio": 1,
    "engine": 2,
    "convert": 3,
    "models": 3,
    "remote": 3,
    "selftest": 4,
    "transcription": 4,
    "chat": 4,
    "live": 5,
    "server": 6,
    "cli": 7,
}
ROOT_MODULES = {"errors", "config", "paths"}  # import nothing else of the package
EXEMPT = {"", "__main__"}  # the public API's lazy table and `python -m`, above everything
PUBLIC_ONLY = {"models": "engine"}  # models sees engine through its public names only
# (launcher, child) -> why a module may start a higher layer's module as a child process.
ALLOWED_LAUNCHES = {
    ("engine.cpu_probe", "selftest.kernel_probe"): (
        "AudioModel (engine) needs the CPU-kernel verdict when it loads, and the probe runs tiny "
        "quantized models that only the converter makes (convert/, above the engine since it "
        "uses the engine's llama.cpp quantizer). The child that builds and runs them lives in "
        "selftest/, which may import both; nothing of it is loaded in the engine's process. "
        "The alternatives: a second GGUF writer inside the engine, or AudioModel no longer "
        "probing by itself"
    ),
}


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if _is_type_checking(node):
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _module_names(pkg_dir: Path) -> dict[str, Path]:
    """Module name (relative to the package, the root ``""``) -> its file."""
    modules: dict[str, Path] = {}
    for path in pkg_dir.rglob("*.py"):
        parts = list(path.relative_to(pkg_dir).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def import_graph(pkg_dir: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (names relative to the package)."""
    pkg = pkg_dir.name
    modules = _module_names(pkg_dir)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_pkg = path.name == "__init__.py"
        here = [pkg, *name.split(".")] if name else [pkg]
        if not is_pkg:
            here = here[:-1]
        targets: set[str] = set()
        for node in _imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                bases = [(a.name, []) for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    up = here[: len(here) - node.level + 1]
                    base = ".".join([*up, *([base] if base else [])])
                bases = [(base, [a.name for a in node.names])]
            for base, names in bases:
                if base != pkg and not base.startswith(pkg + "."):
                    continue
                rel = base[len(pkg) + 1 :]
                subs = [f"{rel}.{n}" if rel else n for n in names]
                hits = [s for s in subs if s in modules]
                targets.update(hits or [rel])
        graph[name] = targets - {name}
    return graph


def _launched(tree: ast.AST) -> list[str]:
    """Module names run as ``python -m NAME``: the item after ``"-m"`` in a list or tuple
    literal, a string or a module-level constant holding one."""
    constants = {
        t.id: node.value.value
        for node in getattr(tree, "body", [])
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
        for t in node.targets
        if isinstance(t, ast.Name)
    }
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.List | ast.Tuple):
            continue
        for flag, item in zip(node.elts, node.elts[1:], strict=False):
            if not (isinstance(flag, ast.Constant) and flag.value == "-m"):
                continue
            if isinstance(item, ast.Constant) and isinstance(item.value, str):
                found.append(item.value)
            elif isinstance(item, ast.Name) and item.id in constants:
                found.append(constants[item.id])
    return found


def launch_graph(pkg_dir: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it starts as child processes by name."""
    pkg = pkg_dir.name
    modules = _module_names(pkg_dir)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        names = _launched(ast.parse(path.read_text()))
        launched = {m[len(pkg) + 1 :] for m in names if m.startswith(pkg + ".")}
        graph[name] = (launched & set(modules)) - {name}
    return graph


def _component(module: str) -> str:
    """``"engine.model"`` -> ``"engine"``, ``"errors"`` -> ``"errors"``, the root -> ``""``."""
    return module.split(".")[0]


def layer_violations(pkg_dir: Path) -> list[str]:
    """Every import that breaks the layering, as ``"importer -> imported: why"``."""
    problems = []
    imports, launches = import_graph(pkg_dir), launch_graph(pkg_dir)
    for mod in sorted(imports):
        src = _component(mod)
        if src in EXEMPT:
            continue
        edges = [(t, "import") for t in sorted(imports[mod])]
        edges += [(t, "launch") for t in sorted(launches[mod]) if (mod, t) not in ALLOWED_LAUNCHES]
        for tgt, how in edges:
            dst = _component(tgt)
            may = "may not import" if how == "import" else "may not run (python -m)"
            if src in ROOT_MODULES and dst != src:
                problems.append(f"{mod} -> {tgt}: root modules import nothing of the package")
            elif src in ROOT_MODULES:
                continue  # errors/ is a package: its modules import each other
            elif src not in LAYERS:
                problems.append(f"{mod}: sub-package {src!r} is not in the layer map")
            elif dst in ROOT_MODULES or dst == "" or dst == src:
                continue
            elif dst not in LAYERS:
                problems.append(f"{mod} -> {tgt}: {dst!r} is not in the layer map")
            elif LAYERS[dst] >= LAYERS[src]:
                problems.append(
                    f"{mod} -> {tgt}: {src} (layer {LAYERS[src]}) {may} {dst} (layer {LAYERS[dst]})"
                )
            elif PUBLIC_ONLY.get(src) == dst and tgt != dst:
                problems.append(f"{mod} -> {tgt}: {src} uses {dst}'s public names only")
    return problems


def import_cycles(pkg_dir: Path) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan's algorithm)."""
    graph = import_graph(pkg_dir)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return cycles


def test_the_package_keeps_its_layers() -> None:
    assert layer_violations(PACKAGE_DIR) == []


def test_no_import_cycles() -> None:
    assert import_cycles(PACKAGE_DIR) == []


def test_every_sub_package_is_in_the_map() -> None:
    subs = {p.name for p in PACKAGE_DIR.iterdir() if (p / "__init__.py").exists()}
    assert subs <= set(LAYERS) | ROOT_MODULES
    roots = {p.stem for p in PACKAGE_DIR.glob("*.py")} - {"__init__", "__main__"}
    assert roots | (subs - set(LAYERS)) == ROOT_MODULES


def test_the_map_lists_every_module() -> None:
    """ARCHITECTURE.md names every module of the package and of qaudio_dev, and nothing
    that is gone."""
    repo = PACKAGE_DIR.parent
    text = (repo / "ARCHITECTURE.md").read_text(encoding="utf-8")
    modules = {
        p.relative_to(repo).as_posix()
        for root in ("qaudio_local", "qaudio_dev")
        for p in (repo / root).rglob("*.py")
        if not (p.name == "__init__.py" and root == "qaudio_dev")
        and not (p.name == "__init__.py" and p.parent.name not in ("qaudio_local", "errors"))
        and "__pycache__" not in p.parts
    }
    missing = sorted(m for m in modules if f"`{m}`" not in text)
    assert missing == [], f"ARCHITECTURE.md does not list {missing}"
    listed = set(re.findall(r"`((?:qaudio_local|qaudio_dev)/[\w/]+\.py)`", text))
    assert sorted(listed - modules - _inits(repo)) == [], (
        "ARCHITECTURE.md lists modules that are gone"
    )


def _inits(repo: Path) -> set[str]:
    return {p.relative_to(repo).as_posix() for p in repo.glob("qaudio_*/**/__init__.py")}


def test_no_module_is_too_long() -> None:
    """A room, not a hall: no module of the package over 500 lines."""
    long = {
        p.relative_to(PACKAGE_DIR).as_posix(): n
        for p in PACKAGE_DIR.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 500
    }
    assert long == {}


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / "pkg" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_the_guard_fails_on_bad_imports(tmp_path: Path) -> None:
    pkg = _write(
        tmp_path,
        {
            "__init__.py": "",
            "errors.py": "from .config import X\n",
            "config.py": "",
            "audio/__init__.py": "",
            "audio/decode.py": "def f():\n    from ..engine import model\n",  # lazy, still counts
            "engine/__init__.py": "",
            "engine/model.py": "from ..cli.main import main\nfrom ..errors import E\n",
            "models/__init__.py": "",
            "models/hardware.py": "from ..engine.model import AudioModel\nfrom ..engine import x\n",
            "convert/__init__.py": "from ..models import hardware\n",
            "cli/__init__.py": "",
            "cli/main.py": "from ..engine import model\nfrom ..models import hardware\n",
            "gadgets/__init__.py": "from ..errors import E\n",
            "typing_only.py": "",
        },
    )
    problems = layer_violations(pkg)
    assert "errors -> config: root modules import nothing of the package" in problems
    assert (
        "audio.decode -> engine.model: audio (layer 1) may not import engine (layer 2)" in problems
    )
    assert "engine.model -> cli.main: engine (layer 2) may not import cli (layer 7)" in problems
    assert "models.hardware -> engine.model: models uses engine's public names only" in problems
    assert "convert -> models.hardware: convert (layer 3) may not import models (layer 3)" in (
        problems
    )
    assert "gadgets: sub-package 'gadgets' is not in the layer map" in problems
    assert not any(p.startswith("cli.main") for p in problems)  # the top may import anything
    assert not any("models.hardware -> engine:" in p for p in problems)  # public names: fine
    assert len(problems) == 6


def test_the_guard_finds_cycles_and_skips_type_checking(tmp_path: Path) -> None:
    pkg = _write(
        tmp_path,
        {
            "__init__.py": "",
            "audio/__init__.py": "",
            "audio/a.py": "from . import b\n",
            "audio/b.py": "def f():\n    from .a import g\n",
            "audio/c.py": "import typing\nif typing.TYPE_CHECKING:\n    from . import d\n",
            "audio/d.py": "from .c import h\n",
        },
    )
    assert import_cycles(pkg) == [["audio.a", "audio.b"]]


def test_the_guard_sees_children_started_by_module_name(tmp_path: Path) -> None:
    pkg = _write(
        tmp_path,
        {
            "__init__.py": "",
            "engine/__init__.py": "",
            "engine/probe.py": (
                'import sys\nCHILD = "pkg.cli.main"\n'
                "def run():\n    return [sys.executable, '-m', CHILD, 'x']\n"
            ),
            "engine/check.py": "CMD = ('python', '-m', 'pkg.engine.child')\n",  # same layer
            "engine/child.py": "from . import check\n",
            "audio/__init__.py": "",
            "audio/decode.py": "ARGS = ['-m', 'pkg.engine.probe', '-m', 'json.tool']\n",
            "cli/__init__.py": "",
            "cli/main.py": "",
        },
    )
    assert launch_graph(pkg)["engine.probe"] == {"cli.main"}
    assert launch_graph(pkg)["engine.check"] == {"engine.child"}
    problems = layer_violations(pkg)
    assert problems == [
        "audio.decode -> engine.probe: audio (layer 1) may not run (python -m) engine (layer 2)",
        "engine.probe -> cli.main: engine (layer 2) may not run (python -m) cli (layer 7)",
    ]
    assert import_cycles(pkg) == []  # a child process is not an import: no cycle through it


def test_every_allowed_launch_is_still_made() -> None:
    """The exceptions stay exactly as wide as the code needs: each one is really launched."""
    launches = launch_graph(PACKAGE_DIR)
    for launcher, child in ALLOWED_LAUNCHES:
        assert child in launches[launcher], (launcher, child)
