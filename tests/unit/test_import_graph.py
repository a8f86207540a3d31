"""No import cycle in src/nextai: the module-level imports between nextai's modules form a DAG (imports inside
functions and under TYPE_CHECKING are deferred on purpose and not counted)."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(path: Path, modules: set[str]) -> set[str]:
    """nextai modules imported by the module's own top-level statements (and its if/try blocks)."""
    found: set[str] = set()
    statements = list(ast.parse(path.read_text(encoding="utf-8")).body)
    while statements:
        node = statements.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            statements.extend(node.orelse)
            continue
        if isinstance(node, (ast.If, ast.Try)):
            statements.extend(node.body + node.orelse + getattr(node, "finalbody", []))
            for handler in getattr(node, "handlers", []):
                statements.extend(handler.body)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
    return {name for name in found if name in modules}


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in (SRC / "nextai").rglob("*.py")}
    return {name: top_level_imports(path, set(paths)) - {name} for name, path in paths.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_finder_sees_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_in_nextai():
    graph = import_graph()
    assert len(graph) > 50 and graph["nextai.cli"]  # the walk found the package and its imports
    assert cycles(graph) == []


def test_the_entry_point_imports_nothing_heavy():
    """`nextai --help` starts at once: nextai.main imports only small nextai modules at the top level."""
    assert import_graph()["nextai.main"] <= {"nextai", "nextai.clock", "nextai.errors", "nextai.quiet"}


def test_the_packages_load_their_classes_on_first_use():
    """`nextai.modules` and `nextai.data` import QLoRAModule / DatasetSource only when asked (configs name them as
    `class_path: nextai.data.DatasetSource`), so `nextai plan` reads the batch arithmetic without Lightning."""
    import subprocess
    import sys

    probe = ("import sys, nextai.modules.settings, nextai.data.batching, nextai.bench.plan\n"
             "print(*sorted(m for m in ('lightning', 'transformers', 'datasets', 'peft') if m in sys.modules))\n"
             "from nextai.data import DatasetSource\nfrom nextai.modules import QLoRAModule\n"
             "print(DatasetSource.__module__, QLoRAModule.__module__)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == ["", "nextai.data.dataset nextai.modules.qlora"]
