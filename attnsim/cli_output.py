"""How the `attnsim` command speaks: its consoles, quiet libraries, and each failure as one line
with its exit code (2 a user error; 3, 130, 143 a stopped run: `attnsim.executors.lifecycle`)."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from attnsim.errors import UserError
from attnsim.logs import quiet_libraries

# Piped or logged output (ray job logs, CI) has no width: give tables room instead of rich's 80 columns.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def quiet() -> None:
    quiet_libraries(fmt="%(asctime)s %(name)s %(message)s")


def guard(fn):
    """Run fn, turning a UserError into one line and exit code 2; a run stopped by a signal or a
    failed cluster into one line with the resume hint and its own code (attnsim.executors.lifecycle)."""
    from attnsim.executors import lifecycle

    try:
        with lifecycle.stop_on_signals():
            return fn()
    except UserError as e:
        fail(str(e))
    except lifecycle.RunStopped as e:
        lifecycle.stop_local_ray()
        fail(str(e), e.exit_code)
    except KeyboardInterrupt:
        code, line = lifecycle.interrupt_exit()
        fail(line, code)
