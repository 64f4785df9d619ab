"""The module map, kept by the suite: rooms by role, one meaning per module name, no import cycle.

``plugins/cmms_mlflow`` is laid out like Airflow's providers (``providers/common/sql``: ``hooks/
operators/ sensors/``) and Cosmos: a module lives in the room of its role (docs/plugin.md lists them).
A module name means one thing across ``include/cmms_pm`` and ``plugins/cmms_mlflow``, so a traceback
or a grep for ``promotion.py`` finds one file. And no two of our modules import each other, directly
or around a loop, not even inside a function: an import that only works because it runs late is a
piece of logic in the wrong room.
"""

from __future__ import annotations

import ast
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[1]
PLUGIN = PROJECT_DIR / "plugins" / "cmms_mlflow"
DOMAIN = PROJECT_DIR / "include" / "cmms_pm"

#: The plugin's rooms and what each holds.
ROOMS = {
    "hooks": "where MLflow lives and how to talk to it: the hook, per-session client settings, locks",
    "registry": "the registered model's state: snapshot → plan → apply, promotions, history, pruning",
    "tracking": "the MLflow runs we write and read: training, tuning, evaluation, scoring, outcomes",
    "integrations": "Airflow and the world around it: assets, links, lineage, metrics, notifiers, sources",
    "www": "the api-server side: routes, authorization, read models, warm champions, the Models page",
    "operators": "the operators, one module per DAG family (<family>_ops.py) and their base",
}
#: What stays at the top of the plugin: what Airflow discovers, and what every room shares.
TOP_LEVEL = {"__init__", "plugin", "provider_info", "exceptions", "records", "factory"}
#: Files that are not Python modules, by room.
ASSETS = {"www": {"static"}}

#: Module names allowed twice, with the reason. ``exceptions``: each package's typed errors, by the
#: convention of Airflow (``airflow.exceptions``) and of every provider; one meaning, two packages.
SHARED_NAMES = {"exceptions": {"cmms_pm/exceptions.py", "cmms_mlflow/exceptions.py"}}


def _modules(package: Path) -> dict[str, Path]:
    """Every module of ``package`` by dotted name (a package by its own name)."""
    modules = {}
    for file in sorted(package.rglob("*.py")):
        parts = file.relative_to(package.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = file
    return modules


def test_every_plugin_module_lives_in_a_known_room():
    misplaced = []
    for entry in sorted(PLUGIN.iterdir()):
        if entry.name == "__pycache__":
            continue
        if entry.is_dir():
            if entry.name not in ROOMS:
                misplaced.append(f"{entry.name}/ is not a room ({', '.join(ROOMS)})")
                continue
            if not (entry / "__init__.py").is_file():
                misplaced.append(f"{entry.name}/ has no __init__.py")
            for inner in sorted(entry.iterdir()):
                if inner.name == "__pycache__" or inner.suffix == ".py":
                    continue
                if inner.name not in ASSETS.get(entry.name, set()):
                    misplaced.append(f"{entry.name}/{inner.name}: rooms hold modules, not sub-rooms or files")
        elif entry.suffix != ".py" or entry.stem not in TOP_LEVEL:
            misplaced.append(f"{entry.name} belongs in a room (the top level is {sorted(TOP_LEVEL)})")
    assert not misplaced, "\n".join(misplaced)
    # the map is not vacuous: every room holds modules
    rooms_used = {path.parent.name for path in PLUGIN.glob("*/*.py") if path.stem != "__init__"}
    assert rooms_used == set(ROOMS), rooms_used ^ set(ROOMS)


def test_a_module_name_means_one_thing_across_both_packages():
    homes: dict[str, set[str]] = {}
    for package in (DOMAIN, PLUGIN):
        for file in package.rglob("*.py"):
            if file.stem != "__init__":
                homes.setdefault(file.stem, set()).add(file.relative_to(package.parent).as_posix())
    assert len(homes) > 60, sorted(homes)  # both packages were read
    twice = {name: sorted(paths) for name, paths in homes.items() if len(paths) > 1}
    unexplained = {name: paths for name, paths in twice.items() if set(paths) != SHARED_NAMES.get(name)}
    assert not unexplained, f"one name, several modules: {unexplained}"


def _runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` except the bodies of ``if TYPE_CHECKING:`` (imports for annotations
    only: they never run, every module has ``from __future__ import annotations``)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and ast.unparse(child.test) in (
                "TYPE_CHECKING",
                "typing.TYPE_CHECKING",
            ):
                stack.extend(child.orelse)
                continue
            stack.append(child)


def _import_graph() -> dict[str, dict[str, str]]:
    """Our modules → our modules they import when they run (module top or inside a function), with
    the line, for the message."""
    modules = {**_modules(DOMAIN), **_modules(PLUGIN)}

    def ours(dotted: str) -> str | None:
        # ``from cmms_mlflow.registry import history``: the submodule; ``from x import name``: x
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    graph: dict[str, dict[str, str]] = {}
    for name, file in modules.items():
        edges: dict[str, str] = {}
        for node in _runtime_nodes(ast.parse(file.read_text(), str(file))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.ImportFrom):  # a relative import: none today, keep it so
                raise AssertionError(f"{file}:{node.lineno}: relative import (the house uses absolute ones)")
            else:
                continue
            for target in targets:
                imported = ours(target)
                if imported and imported != name:
                    edges.setdefault(imported, f"{file.relative_to(PROJECT_DIR)}:{node.lineno}")
        graph[name] = edges
    return graph


def _a_cycle(graph: dict[str, dict[str, str]]) -> list[str] | None:
    """One import cycle (as the path that closes it), or None; depth-first, white/grey/black."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_import_cycle_among_our_modules_not_even_inside_functions():
    graph = _import_graph()
    assert sum(map(len, graph.values())) > 100, "the scan found too few imports to be reading our code"
    cycle = _a_cycle(graph)
    assert cycle is None, "import cycle:\n" + "\n".join(
        f"  {a} -> {b}  ({graph[a][b]})" for a, b in zip(cycle, cycle[1:], strict=False)
    )


def test_the_cycle_check_finds_a_cycle_through_a_function_level_import():
    """The check can fail: a loop closed inside a function is found and printed with its lines."""
    graph = {"a": {"b": "a.py:1"}, "b": {"c": "b.py:9"}, "c": {"a": "c.py:40 (in a function)"}, "d": {}}
    assert _a_cycle(graph) == ["a", "b", "c", "a"]
    assert _a_cycle({"a": {"b": ""}, "b": {}, "c": {"a": ""}}) is None


def _airflow_imports(file: Path) -> list[str]:
    """``module:line`` of every import of ``airflow`` or ``airflow.*`` in ``file``, wherever it is."""
    found = []
    for node in ast.walk(ast.parse(file.read_text(), str(file))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        else:
            continue
        found += [f"{name}:{node.lineno}" for name in names if name.partition(".")[0] == "airflow"]
    return found


def test_the_www_room_reaches_airflow_only_through_airflow_internal():
    """An Airflow upgrade that moves the api-server's security, the ORM models, the trigger endpoint or
    the asset manager touches one file: ``www/airflow_internal.py``."""
    www = PLUGIN / "www"
    internal = www / "airflow_internal.py"
    assert _airflow_imports(internal), "airflow_internal.py imports nothing from Airflow: the scan is broken"
    elsewhere = {
        file.relative_to(PLUGIN).as_posix(): imports
        for file in sorted(www.glob("*.py"))
        if file != internal and (imports := _airflow_imports(file))
    }
    assert not elsewhere, f"Airflow imported outside www/airflow_internal.py: {elsewhere}"


def test_operators_and_hooks_use_airflows_public_interface():
    """Outside the api-server side, Airflow is the Task SDK (``airflow.sdk``) and its providers;
    ``plugin.py`` registers through ``airflow.plugins_manager`` (the plugin interface)."""
    public = ("airflow.sdk", "airflow.providers.", "airflow.configuration", "airflow.utils.deprecation_tools")
    allowed = {"plugin.py": ("airflow.plugins_manager",)}
    internal = {}
    for file in sorted(PLUGIN.rglob("*.py")):
        relative = file.relative_to(PLUGIN).as_posix()
        if relative.startswith("www/"):
            continue
        ok = public + allowed.get(relative, ())
        bad = [i for i in _airflow_imports(file) if not i.split(":")[0].startswith(ok)]
        if bad:
            internal[relative] = bad
    assert not internal, f"Airflow internals imported outside www/airflow_internal.py: {internal}"


def test_the_scan_counts_function_level_imports_and_skips_annotation_only_ones():
    tree = ast.parse(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import a\nelse:\n    import b\n"
        "def f():\n    import c\n    if TYPE_CHECKING:\n        import d\n"
    )
    assert {n.names[0].name for n in _runtime_nodes(tree) if isinstance(n, ast.Import)} == {"b", "c"}
