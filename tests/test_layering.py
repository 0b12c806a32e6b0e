"""The package's layering contract, checked on its import graph (grimp, the engine of import-linter).

Imports inside functions count like top-level ones; imports under ``if TYPE_CHECKING:`` do not (they never run).
The layers, highest first, are documented in docs/architecture.md; this file is their one definition.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "libs" / "sqltune"
MAX_MODULE_LINES = 600

# Highest first. A layer may import any layer below it, never one above. Siblings in one Layer are
# independent of each other unless marked otherwise; a name absent from the package is skipped.
LAYERS: list[tuple[str, ...] | str] = [
    "configdoc",  # documents every layer's config classes
    ("cli", "pipeline", "ask"),
    "k8s",  # the pipeline promotes through its builders and cluster client
    ("train", "export", "serving"),
    "evaluation",  # metrics and scoring, also used by training's rewards
    "agent",  # execute-and-repair and schema linking (serving, `sqltune ask` and evaluation use it)
    "generation",
    "models",
    "prompts",
    "data",
    ("sql", "storage", "fixtures"),
    "config",
    "errors",
]

# Modules over MAX_MODULE_LINES today, with what has to move out of them. Each is an expected failure
# (strict: once the module is short enough the mark must go).
TOO_LONG: dict[str, str] = {}

# Cycles known today inside one subpackage, with what breaks them.
KNOWN_CYCLES: dict[str, str] = {}


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("sqltune", exclude_type_checking_imports=True, cache_dir=None)


def _present(graph: grimp.ImportGraph, tail: str) -> bool:
    return f"sqltune.{tail}" in graph.modules


def _layers(graph: grimp.ImportGraph) -> list[grimp.Layer]:
    out = []
    for layer in LAYERS:
        tails = [t for t in ((layer,) if isinstance(layer, str) else layer) if _present(graph, t)]
        if tails:
            out.append(grimp.Layer(*tails, independent=True))
    return out


def _describe(graph: grimp.ImportGraph, deps) -> str:
    lines = []
    for dep in sorted(deps, key=lambda d: (d.importer, d.imported)):
        for route in dep.routes:
            chain = " -> ".join([*route.heads, *route.middle, *route.tails][:6])
            lines.append(f"{dep.importer} imports {dep.imported}: e.g. {chain}")
    return "\n".join(lines)


def test_no_layer_imports_a_higher_one(graph) -> None:
    """No import runs back up a layer, and siblings of one layer do not import each other."""
    deps = graph.find_illegal_dependencies_for_layers(_layers(graph), containers={"sqltune"})
    assert not deps, "imports against the layering (see LAYERS in tests/test_layering.py):\n" + _describe(graph, deps)


def test_evaluation_does_not_import_serving(graph) -> None:
    chain = graph.find_shortest_chain(importer="sqltune.evaluation", imported="sqltune.serving", as_packages=True)
    assert chain is None, f"sqltune.evaluation reaches sqltune.serving: {' -> '.join(chain or [])}"


def _subpackages() -> list[str]:
    return sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())


def _cycles(graph: grimp.ImportGraph, prefix: str) -> list[list[str]]:
    """Strongly connected components of more than one module among the modules under ``prefix``."""
    nodes = sorted(m for m in graph.modules if m == prefix or m.startswith(prefix + "."))
    inside = set(nodes)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm; the package is small enough for recursion
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.find_modules_directly_imported_by(v) & inside:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in nodes:
        if v not in index:
            visit(v)
    return found


@pytest.mark.parametrize(
    "subpackage",
    [pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=KNOWN_CYCLES[name]))
     if name in KNOWN_CYCLES else name for name in _subpackages()],
)
def test_no_import_cycle_inside(graph, subpackage: str) -> None:
    cycles = _cycles(graph, f"sqltune.{subpackage}")
    assert not cycles, f"import cycles in sqltune.{subpackage}: {cycles}"


def test_no_import_cycle_between_subpackages(graph) -> None:
    edges: dict[str, set[str]] = {}
    for module in graph.modules:
        parts = module.split(".")
        if len(parts) < 2:
            continue
        for imported in graph.find_modules_directly_imported_by(module):
            other = imported.split(".")
            if len(other) >= 2 and other[1] != parts[1]:
                edges.setdefault(parts[1], set()).add(other[1])
    cycles = [(a, b) for a, targets in edges.items() for b in targets if a < b and a in edges.get(b, set())]
    assert not cycles, f"subpackages importing each other: {cycles}"


def test_import_sqltune_never_loads_torch() -> None:
    code = "import sys, sqltune; import sqltune.config, sqltune.errors; print(sorted(m for m in ('torch', 'ray', " \
           "'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"`import sqltune` loaded {out.stdout.strip()}"


# Modules that must import without torch, Ray or transformers: configs, data, SQL, storage, the serving ingress,
# generation's request types and the CLI's startup path (each package's __init__ included).
TORCH_FREE = [
    "sqltune.cli", "sqltune.configdoc", "sqltune.config", "sqltune.sql", "sqltune.data", "sqltune.storage",
    "sqltune.prompts", "sqltune.generation", "sqltune.generation.request", "sqltune.serving",
    "sqltune.serving.api", "sqltune.serving.protocol", "sqltune.serving.backend", "sqltune.train",
    "sqltune.train.config", "sqltune.evaluation", "sqltune.evaluation.config", "sqltune.export",
    "sqltune.k8s", "sqltune.k8s.cli", "sqltune.pipeline", "sqltune.pipeline.cli", "sqltune.tune",
]


def test_light_modules_never_load_torch() -> None:
    code = "import importlib, sys, json\n" \
           f"mods = {TORCH_FREE!r}\n" \
           "heavy = {}\n" \
           "for m in mods:\n" \
           "    before = {x for x in ('torch', 'ray', 'transformers') if x in sys.modules}\n" \
           "    importlib.import_module(m)\n" \
           "    now = {x for x in ('torch', 'ray', 'transformers') if x in sys.modules} - before\n" \
           "    if now: heavy[m] = sorted(now)\n" \
           "print(json.dumps(heavy))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "{}", f"these modules must stay light (import torch in torch-only ones): {out.stdout}"


def test_the_model_replica_imports_only_torch_of_the_model_stack() -> None:
    """A replica's cold start pays for its imports: the engine and the replica load torch, but not peft,
    bitsandbytes, transformers or torch's compiler stack (those come with the model's loader, if needed)."""
    code = "import sys, json, sqltune.serving.replica, sqltune.generation.engine\n" \
           "print(json.dumps(sorted(m for m in ('peft', 'bitsandbytes', 'transformers', 'accelerate', " \
           "'torch._dynamo', 'torch._inductor') if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"the replica's imports loaded {out.stdout.strip()}"


def _modules() -> list[tuple[str, int]]:
    return sorted((p.relative_to(PACKAGE).as_posix(), len(p.read_text().splitlines())) for p in PACKAGE.rglob("*.py"))


@pytest.mark.parametrize(
    "path,lines",
    [pytest.param(path, n, marks=pytest.mark.xfail(strict=True, reason=TOO_LONG[path])) if path in TOO_LONG
     else (path, n) for path, n in _modules()],
    ids=[path for path, _ in _modules()],
)
def test_module_is_short(path: str, lines: int) -> None:
    assert lines <= MAX_MODULE_LINES, (
        f"libs/sqltune/{path} has {lines} lines (limit {MAX_MODULE_LINES}): split it by concern"
    )


def test_logging_is_configured_only_through_setup_logging() -> None:
    """Library modules create loggers; configuring handlers is sqltune.log.setup_logging's, called by entry points."""
    files = [*PACKAGE.rglob("*.py"), *(ROOT / "jobs").glob("*.py"), *(ROOT / "serve").glob("*.py")]
    offenders = [
        f"{p.relative_to(ROOT).as_posix()}:{i}"
        for p in files if p != PACKAGE / "log.py"
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if "basicConfig(" in line or ".addHandler(" in line
    ]
    assert not offenders, f"configure logging with sqltune.log.setup_logging from the entry point instead: {offenders}"


def _imports_inside_functions(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import statement nested in a function body of ``path``."""
    found: list[tuple[int, str]] = []

    def walk(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if in_function and isinstance(child, ast.Import):
                found.extend((child.lineno, alias.name) for alias in child.names)
            elif in_function and isinstance(child, ast.ImportFrom):
                found.append((child.lineno, "." * child.level + (child.module or "")))
            walk(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    walk(ast.parse(path.read_text(), filename=str(path)), False)
    return found


def test_no_stdlib_import_inside_a_function() -> None:
    """Standard-library imports belong at the module's top; only optional heavy dependencies may wait for the
    branch that needs them."""
    files = [*PACKAGE.rglob("*.py"), *(ROOT / "jobs").rglob("*.py"), *(ROOT / "serve").rglob("*.py")]
    offenders = [
        f"{p.relative_to(ROOT).as_posix()}:{line}: import {module}"
        for p in sorted(files)
        for line, module in _imports_inside_functions(p)
        if module.split(".")[0] in sys.stdlib_module_names
    ]
    assert not offenders, "move these standard-library imports to the top of their module:\n" + "\n".join(offenders)
