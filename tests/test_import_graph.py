"""The modules of ckpt_tools import each other without cycles (lazy imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

import ckpt_tools

PACKAGE = Path(ckpt_tools.__file__).parent


def _module_name(path: Path) -> str:
    parts = ("ckpt_tools", *path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path, modules: set[str]) -> set[str]:
    """ckpt_tools modules `path` imports anywhere (functions too), TYPE_CHECKING aside."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # `from . import fp8`
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    edges = set()
    for target in found:
        while target:  # importing a.b.c runs the packages a.b and a first (own ones aside)
            if target in modules and target != name and not name.startswith(target + "."):
                edges.add(target)
            target = target.rpartition(".")[0]
    return edges


def test_import_graph_has_no_cycles():
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    graph = {_module_name(p): _imports(p, modules) for p in paths}
    # the walk sees imports
    assert graph["ckpt_tools.commands.validate"] >= {"ckpt_tools.inventory.inspect"}
    # lazy ones too
    assert "ckpt_tools.inventory.mp_layout" in graph["ckpt_tools.inventory.inspect"]

    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                walk(nxt)
        path.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            walk(module)


# -- imports inside functions ----------------------------------------------------------------
# Deferred to keep an optional extra or a heavy library off the import path: always allowed.
HEAVY = ("numpy", "ml_dtypes", "matplotlib", "ray", "s3fs", "fsspec", "torch", "transformers",
         "huggingface_hub", "tqdm", "multiprocessing", "concurrent.futures",
         "httpx2", "certifi")  # the Hub client's HTTP stack (remote.http_range)
# ckpt_tools modules imported inside a function, each with why. Most keep `ckpt --help` and
# the header-only commands from importing numpy-backed modules; none hides a cycle (the
# graph above counts them). Shrink this list; a new entry needs its reason.
DEFERRED = {
    ("cli/__init__.py", "..error_report"): "CLI start-up: only on an error",
    ("cli/__init__.py", ".render"): "CLI start-up",
    ("cli/conventions.py", ".render"): "CLI start-up",
    ("cli/make_tiny.py", "..reference.deepseek"): "CLI start-up: numpy only when run",
    ("cli/make_tiny.py", "..commands.tiny"): "CLI start-up: numpy only when run",
    ("cli/download.py", "..commands.download"): "CLI start-up: the Hub client only when run",
    ("cli/download.py", "..commands.download_plan"): "CLI start-up: the Hub client only when run",
    ("cli/convert.py", "..commands.convert"): "CLI start-up: the library (numpy) only when run",
    ("cli/convert.py", "..execution.parallel"): "CLI start-up: the executor only when run",
    ("cli/convert.py", "..formats.kernels"): "CLI start-up: the kernels' chooser only when run",
    ("cli/convert.py", "..io.index"): "CLI start-up: file sizes only when run",
    ("cli/diff.py", "..commands.diff"): "CLI start-up: numpy only when run",
    ("cli/plotting.py", "..commands.plot"): "CLI start-up: matplotlib only with --plot",
    ("cli/plotting.py", "..commands"): "CLI start-up: matplotlib only with --plot",
    ("cli/reshard.py", "..commands.reshard"): "CLI start-up: numpy only when run",
    ("cli/verify.py", "..commands.forward"): "CLI start-up: numpy only when run",
    ("cli/info.py", "..remote.stores"): "CLI start-up: the remote clients only with --remote",
    ("configs/parse.py", "..io.source"): "start-up: a preset reads no file "
                                         "(readers, remote clients)",
    ("configs/sources.py", "..io.source"): "start-up: a preset reads no file "
                                           "(readers, remote clients)",
    ("cli/verify.py", "..commands.verify"): "CLI start-up: numpy only when run",
    ("cli/schema.py", "..schemas"): "CLI start-up: every model only for `schema`",
    ("commands/diff.py", "..inventory.checkpoint"): "numpy only for checkpoint directories",
    ("commands/info.py", "..inventory.checkpoint"): "numpy only for checkpoint directories",
    ("formats/kernels.py", "."): "numba (the compiled kernels) only when a kernel is first used",
    ("commands/tensor_diff.py", "..formats.mxfp4"): "numpy: only when values are compared",
    ("inventory/inspect.py", ".checkpoint"): "numpy: the inventory itself reads headers only",
    ("inventory/inspect.py", ".mp_layout"): "numpy: only model-parallel directories pay for it",
    ("execution/parallel.py", ".ray_executor"): "the ray extra",
    ("remote/stores.py", "..io.hub"): "the huggingface_hub extra",
    ("remote/stores.py", "."): "http.client (remote.http_range): only when the Hub is read",
    ("commands/validate.py", ".value_scan"): "numpy: only with --deep",
}


def _function_imports() -> set[tuple[str, str]]:
    found = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        for fn in ast.walk(ast.parse(path.read_text())):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    found.update((rel, a.name) for a in node.names)
                elif isinstance(node, ast.ImportFrom):
                    found.add((rel, "." * node.level + (node.module or "")))
    return found


def test_imports_inside_functions_only_defer_heavy_or_optional_ones():
    imports = _function_imports()
    ours = {(rel, mod) for rel, mod in imports
            if mod.startswith(".") or mod.startswith("ckpt_tools")}
    heavy = imports - ours
    assert {mod for _, mod in heavy if not mod.startswith(HEAVY)} == set()
    assert sorted(ours - DEFERRED.keys()) == []  # a new one: give its reason in DEFERRED
    assert sorted(DEFERRED.keys() - ours) == []  # gone: remove it from DEFERRED
