"""A loop that asserts only inside its body passes when it runs zero times: every such loop in the
tests asserts first that what it iterates is not empty (or asserts something after it).

An AST scan of tests/: a ``for`` whose body holds an ``assert`` is guarded when an earlier ``assert``
of the same block names its iterable, an ``assert`` follows the loop in the same block, or the
iterable cannot be empty (a non-empty literal, ``range`` of a positive constant, or a name bound to
a non-empty literal at module level or earlier in the block).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _has_assert(nodes: list[ast.stmt]) -> bool:
    return any(isinstance(node, ast.Assert) for stmt in nodes for node in _walk(stmt))


def _walk(node: ast.AST) -> Iterator[ast.AST]:
    """``ast.walk`` that does not enter nested functions or classes (their asserts run elsewhere)."""
    yield node
    for child in ast.iter_child_nodes(node):
        if not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            yield from _walk(child)


def _names(node: ast.AST) -> set[str]:
    """Names and attribute paths in ``node`` (``a``, ``a.b``), the words an assertion about it uses."""
    found = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            found.add(sub.id)
        elif isinstance(sub, ast.Attribute):
            found.add(ast.unparse(sub))
    return found


def _non_empty_literal(node: ast.AST, constants: dict[str, ast.AST]) -> bool:
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return bool(node.elts) and not any(isinstance(e, ast.Starred) for e in node.elts)
    if isinstance(node, ast.Dict):
        return bool(node.keys) and None not in node.keys
    if isinstance(node, ast.Constant) and isinstance(node.value, str | bytes):
        return bool(node.value)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        args = node.args
        if node.func.id == "range" and args and all(isinstance(a, ast.Constant) for a in args):
            return len(range(*(a.value for a in args))) > 0
        if node.func.id in ("enumerate", "sorted", "reversed", "list", "tuple") and args:
            return _non_empty_literal(args[0], constants)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and not node.args:
        if node.func.attr in ("items", "keys", "values"):
            return _non_empty_literal(node.func.value, constants)
    if isinstance(node, ast.GeneratorExp | ast.ListComp) and len(node.generators) == 1:
        generator = node.generators[0]
        return not generator.ifs and _non_empty_literal(generator.iter, constants)
    if isinstance(node, ast.Name) and node.id in constants:
        return _non_empty_literal(constants[node.id], {})
    return False


def _literal_assignments(statements: list[ast.stmt]) -> dict[str, ast.AST]:
    return {
        target.id: stmt.value
        for stmt in statements
        if isinstance(stmt, ast.Assign)
        for target in stmt.targets
        if isinstance(target, ast.Name)
    }


def unguarded_loops(source: str) -> list[int]:
    """Line numbers of the ``for`` loops of ``source`` that assert only inside their body, unguarded."""
    tree = ast.parse(source)
    found: list[int] = []
    _scan(tree.body, _literal_assignments(tree.body), followed=False, found=found)
    return sorted(found)


def _scan(block: list[ast.stmt], constants: dict[str, ast.AST], *, followed: bool, found: list[int]) -> None:
    """Check the loops of ``block``; ``followed``: an assert comes after the block in an enclosing one
    (an assert after an outer loop also guards the loops inside it)."""
    for index, stmt in enumerate(block):
        after = followed or _has_assert(block[index + 1 :])
        known = {**constants, **_literal_assignments(block[:index])}
        if isinstance(stmt, ast.For | ast.AsyncFor) and _has_assert(stmt.body) and not after:
            words = _names(stmt.iter)
            earlier = [n for s in block[:index] for n in _walk(s) if isinstance(n, ast.Assert)]
            if not _non_empty_literal(stmt.iter, known) and not any(words & _names(a.test) for a in earlier):
                found.append(stmt.lineno)
        nested = isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        for child in _child_blocks(stmt):
            _scan(child, constants if nested else known, followed=False if nested else after, found=found)


def _child_blocks(stmt: ast.stmt) -> Iterator[list[ast.stmt]]:
    for name in ("body", "orelse", "finalbody"):
        block = getattr(stmt, name, None)
        if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
            yield block
    for handler in getattr(stmt, "handlers", []):
        yield handler.body
    for case in getattr(stmt, "cases", []):
        yield case.body


def test_every_loop_that_asserts_only_inside_checks_first_that_it_will_run():
    offenders = [
        f"{path.relative_to(TESTS.parent)}:{line}"
        for path in sorted(TESTS.rglob("*.py"))
        for line in unguarded_loops(path.read_text())
    ]
    assert not offenders, (
        "loops that assert only inside their body (they pass when they run zero times); assert the "
        "iterable is not empty first:\n" + "\n".join(offenders)
    )


def test_the_scan_tells_a_guarded_loop_from_an_unguarded_one():
    unguarded = "def test():\n    rows = fetch()\n    for row in rows:\n        assert row.ok\n"
    assert unguarded_loops(unguarded) == [3]
    for guarded in (
        "def test():\n    rows = fetch()\n    assert rows\n    for row in rows:\n        assert row.ok\n",
        "def test():\n    rows = fetch()\n    assert len(rows) == 3\n    for r in rows:\n        assert r\n",
        "def test():\n    for row in fetch():\n        assert row.ok\n    assert done()\n",
        "def test():\n    for kind in ('a', 'b'):\n        assert check(kind)\n",
        "KINDS = ('a', 'b')\ndef test():\n    for kind in KINDS:\n        assert check(kind)\n",
        "def test():\n    for i in range(3):\n        assert check(i)\n",
        "def test():\n    calls = [1, 2]\n    for call in calls:\n        assert check(call)\n",
        "def test():\n    for row in fetch():\n        print(row)\n",
        "def test():\n    for a in fetch():\n        for b in a:\n            assert b\n    assert seen()\n",
    ):
        assert unguarded_loops(guarded) == [], guarded
