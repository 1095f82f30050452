"""The structure holds: two floors (the runtime never imports the trainer), no import cycles, small modules,
and commands that are plugins, so a user's own `training` package cannot hide any of them."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: source folder -> import name (the trainer's folder is installed under another name)
PACKAGES = {"wildlife_vision": "wildlife_vision", "training": "wildlife_vision_train"}
MAX_MODULE_LINES = 700

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = None


def project_modules() -> Dict[str, Path]:
    """Every project module by its import name."""
    out: Dict[str, Path] = {}
    for folder, name in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [name, *rel.parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    out["wildlife_vision.exported_models"] = ROOT / "exported_models" / "__init__.py"
    return out


def _imports(module: str, path: Path, known: Set[str]) -> Iterator[Tuple[str, int]]:
    """(imported project module, line) for every import in the file, at any depth (lazy imports count)."""
    is_pkg = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # `from pkg import sub` imports the submodule when there is one
            names = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in known else prefix for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:  # `import a.b.c` binds a; count the deepest project module named
                name = name.rpartition(".")[0]
            if name and name != module:
                yield name, node.lineno


def import_graph() -> Dict[str, Set[str]]:
    mods = project_modules()
    known = set(mods)
    return {m: {t for t, _ in _imports(m, p, known)} for m, p in mods.items()}


def strongly_connected(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Tarjan's algorithm; components with more than one module are import cycles."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    out: List[List[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))

    sys.setrecursionlimit(max(1000, 10 * len(graph)))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    cycles = [c for c in strongly_connected(import_graph()) if len(c) > 1]
    assert not cycles, f"import cycles: {cycles}"


def test_the_cycle_finder_finds_a_cycle():
    assert [c for c in strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) if len(c) > 1] == [
        ["a", "b", "c"]]


def test_the_runtime_never_imports_the_trainer():
    graph = import_graph()
    bad = {m: sorted(t for t in targets if t.startswith("wildlife_vision_train"))
           for m, targets in graph.items() if m.startswith("wildlife_vision.") or m == "wildlife_vision"}
    assert not {m: t for m, t in bad.items() if t}, bad
    for path in (ROOT / "wildlife_vision").rglob("*.py"):  # nor names its modules in strings
        text = path.read_text(encoding="utf-8")
        assert "wildlife_vision_train." not in text and "\"training." not in text, path


def test_the_trainer_uses_the_runtime():
    graph = import_graph()
    trainer = {t for m, ts in graph.items() if m.startswith("wildlife_vision_train") for t in ts}
    assert any(t.startswith("wildlife_vision.") for t in trainer)


def test_no_module_is_over_700_lines():
    long = {}
    for path in sorted(ROOT.rglob("*.py")):
        if any(part in {".venv", ".git", "build", "dist"} or part.startswith(".") for part in
               path.relative_to(ROOT).parts):
            continue
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_MODULE_LINES:
            long[str(path.relative_to(ROOT))] = n
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def _declared_commands() -> List[str]:
    if tomllib is None:
        pytest.skip("reading pyproject.toml needs Python 3.11's tomllib")
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return list(data["project"]["entry-points"]["wildlife_vision.commands"])


def _help_from(folder: Path, extra_path: str = "") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if extra_path:
        env["PYTHONPATH"] = extra_path
    return subprocess.run([sys.executable, "-m", "wildlife_vision", "--help"], capture_output=True, text=True,
                          cwd=folder, env=env, timeout=120)


def _listed_commands(help_text: str) -> Set[str]:
    lines = help_text.split("positional arguments:", 1)[-1].split("options:", 1)[0].splitlines()
    return {line.split()[0] for line in lines if line.startswith("    ") and not line.startswith("     ")}


def test_a_users_own_training_package_hides_no_command(tmp_path):
    """`python -m wildlife_vision --help` from a folder holding an unrelated `training/` package (the current
    folder comes first on sys.path with -m) still lists every command, and the trainer still imports."""
    user = tmp_path / "project"
    (user / "training").mkdir(parents=True)
    (user / "training" / "__init__.py").write_text("raise ImportError('this is the user\\'s own training package')\n")
    for name in ("cli.py", "train.py", "benchmark.py", "export.py"):
        (user / "training" / name).write_text("raise ImportError('not wildlife-vision')\n")
    proc = _help_from(user)
    assert proc.returncode == 0, proc.stderr
    listed = _listed_commands(proc.stdout)
    expected = {"predict", "info", "train", "evaluate", "export", "benchmark", "model-card", "data"}
    assert expected <= listed, (sorted(listed), proc.stdout)
    assert set(_declared_commands()) - {"predict"} <= listed | {"predict"}
    assert "unavailable" not in proc.stderr, proc.stderr
    probe = subprocess.run([sys.executable, "-c", "import wildlife_vision_train.cli as c; print(c.__file__)"],
                           capture_output=True, text=True, cwd=user, timeout=120)
    assert probe.returncode == 0 and str(ROOT / "training") in probe.stdout, probe.stderr


def test_a_broken_plugin_costs_only_its_own_commands(tmp_path):
    """A third-party plugin that fails to import is named on stderr; every other command still works."""
    site = tmp_path / "site"
    dist = site / "broken_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[wildlife_vision.commands]\nbroken = broken_plugin_module:register\n")
    proc = _help_from(tmp_path, extra_path=str(site))
    assert proc.returncode == 0, proc.stderr
    assert "'broken' commands are unavailable" in proc.stderr
    assert {"predict", "train", "data"} <= _listed_commands(proc.stdout)


def test_help_imports_no_training_stack():
    code = textwrap.dedent("""
        import sys, contextlib, io
        from wildlife_vision.cli import build_parser
        with contextlib.redirect_stdout(io.StringIO()):
            build_parser().format_help()
        heavy = sorted({m.split('.')[0] for m in sys.modules} & {"torch", "timm", "albumentations", "matplotlib"})
        print(",".join(heavy))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
