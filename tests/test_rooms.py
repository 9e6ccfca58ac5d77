"""Rooms a newcomer can hold in mind: no module in ``lookalike/`` over ~600 lines and no function over ~80.

The test prints every offender (module and lines, or function, where it starts and its length), so a failure says
where to cut. Generated tables and data files are not Python and are not counted."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "lookalike"
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def long_modules() -> list[str]:
    out = []
    for path in _modules():
        n = len(path.read_text().splitlines())
        if n > MAX_MODULE_LINES:
            out.append(f"{path.relative_to(PACKAGE.parent)}: {n} lines")
    return out


def long_functions() -> list[str]:
    out = []
    for path in _modules():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                n = node.end_lineno - start + 1
                if n > MAX_FUNCTION_LINES:
                    out.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}: {n} lines")
    return out


def test_no_module_over_600_lines():
    offenders = long_modules()
    print("\n".join(offenders))
    assert not offenders, "modules to split:\n" + "\n".join(offenders)


def test_no_function_over_80_lines():
    offenders = long_functions()
    print("\n".join(offenders))
    assert not offenders, "functions to split:\n" + "\n".join(offenders)
