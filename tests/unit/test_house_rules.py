"""Habits that keep the code readable: no module over 300 lines and no function over 60, unless a
comment says `long:` and why: on the module's first line, or on the function's `def` line or the
line above it (above its decorators)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MAX_MODULE, MAX_FUNCTION = 300, 60


def sources():
    for folder in ("attnsim", "jobs", "benchmarks"):
        yield from sorted((REPO / folder).rglob("*.py"))


def test_modules_stay_short():
    long = []
    for path in sources():
        lines = path.read_text().splitlines()
        if len(lines) > MAX_MODULE and "long:" not in lines[0]:
            long.append(f"{path.relative_to(REPO)}: {len(lines)} lines")
    assert not long, "modules over 300 lines (split them, or say why with `long:` on line 1): " + "; ".join(long)


def test_functions_stay_short():
    long = []
    for path in sources():
        text = path.read_text()
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                size = node.end_lineno - node.lineno + 1
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                reason = "long:" in lines[node.lineno - 1] or (first >= 2 and "long:" in lines[first - 2])
                if size > MAX_FUNCTION and not reason:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({size} lines)")
    assert not long, "functions over 60 lines (split them, or say why with `# long:` on the def line): " + "; ".join(long)
