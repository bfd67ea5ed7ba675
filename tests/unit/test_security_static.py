"""Security properties checked on the source and the config, without running anything:
no shell command is built from strings, Ray's token authentication is never switched off, and a
store path from a config cannot climb out of its run folder."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from attnsim.config import RunConfig
from attnsim.errors import UserError

REPO = Path(__file__).resolve().parents[2]
CODE_DIRS = ("attnsim", "jobs", "benchmarks", "cluster")


def python_files() -> list[Path]:
    return sorted(p for d in CODE_DIRS for p in (REPO / d).rglob("*.py"))


SUBPROCESS_CALLS = {"run", "call", "check_call", "check_output", "Popen"}


def shell_uses(tree: ast.AST) -> list[str]:
    """Calls that hand a string to a shell: os.system/os.popen, subprocess with shell=True, or
    subprocess given a command string built from pieces (f-string, +, %, .format)."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        last = name.split(".")[-1]
        if name in ("os.system", "os.popen") or last in ("getoutput", "getstatusoutput"):
            found.append(f"{name}() at line {node.lineno}")
        elif last in SUBPROCESS_CALLS and ("subprocess" in name or last == "Popen"):
            if any(k.arg == "shell" and not (isinstance(k.value, ast.Constant) and k.value.value is False) for k in node.keywords):
                found.append(f"{name}(shell=...) at line {node.lineno}")
            first = node.args[0] if node.args else None
            built = isinstance(first, (ast.JoinedStr, ast.BinOp)) or (
                isinstance(first, ast.Call) and isinstance(first.func, ast.Attribute) and first.func.attr == "format"
            )
            if built:
                found.append(f"{name}(<command string>) at line {node.lineno}")
    return found


def test_the_shell_check_catches_what_it_looks_for():
    bad = "import os, subprocess\nos.system('rm ' + x)\nsubprocess.run(f'ls {d}')\nsubprocess.Popen('a {}'.format(b))\nsubprocess.call(cmd, shell=True)\n"
    assert len(shell_uses(ast.parse(bad))) == 4
    good = "import subprocess, sys\nsubprocess.run([sys.executable, '-m', 'attnsim.cli', path], check=True)\n"
    assert shell_uses(ast.parse(good)) == []


def test_no_shell_string_is_built_anywhere_in_the_code():
    files = python_files()
    assert len(files) > 10
    problems = {str(p.relative_to(REPO)): uses for p in files if (uses := shell_uses(ast.parse(p.read_text(), str(p))))}
    assert not problems, f"shell strings (pass an argument list instead): {problems}"


def test_ray_token_authentication_is_never_switched_off():
    """Ray (>= 2.6x) enables token auth for a new cluster unless RAY_AUTH_MODE says otherwise."""
    pattern = re.compile(r"""RAY_AUTH_MODE["']?\s*[:=,]\s*["']?disabled|AUTH_MODE["']?\s*:\s*["']disabled""", re.I)
    texts = [p for d in CODE_DIRS for p in (REPO / d).rglob("*") if p.is_file() and p.suffix in (".py", ".yaml", ".yml", ".sh", ".sbatch", "")]
    offenders = [str(p.relative_to(REPO)) for p in texts if pattern.search(p.read_text(errors="replace"))]
    assert not offenders, f"token authentication switched off in {offenders}"
    readme = (REPO / "README.md").read_text()
    assert "RAY_AUTH_TOKEN" in readme and "token authentication" in readme.lower()


@pytest.mark.parametrize("out", ["runs/x", "/abs/runs/x", "s3://bucket/runs/x", "memory://runs/x"])
@pytest.mark.parametrize("store", ["../elsewhere.zarr", "a/../../b.zarr", "..", "./../x.zarr"])
def test_a_relative_store_cannot_escape_the_run_folder_whatever_the_folder(out, store):
    with pytest.raises(UserError, match="escapes the run folder"):
        RunConfig.from_dict({"out": out, "store": store})


@pytest.mark.parametrize("store", ["store.zarr", "sub/dir/store.zarr", "a/../b.zarr"])
def test_a_relative_store_inside_the_run_folder_is_fine(store):
    assert RunConfig.from_dict({"out": "s3://bucket/runs/x", "store": store}).store_url.startswith("s3://bucket/runs/x/")
