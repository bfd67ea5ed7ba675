"""Progress of an extraction: a rich bar on a terminal, log lines elsewhere, and progress.json.

On a terminal the bar shows units, windows/s, tokens/s and the ETA. Where output is not a terminal
(`ray job logs -f`, a batch log) a plain line is logged every `log_every` seconds instead. Either
way `progress.json` beside the store is rewritten so that a user or a dashboard can poll it.

Example::

    with ExtractProgress(total_units=10, total_windows=320, total_tokens=50_000, json_url="runs/x/progress.json") as p:
        p.advance({"windows": [0, 32], "tokens": 5000})
"""

from __future__ import annotations

import json
import logging
import sys
import time

import fsspec
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

log = logging.getLogger("attnsim")


class _Rate(ProgressColumn):
    def __init__(self, field: str, unit: str):
        super().__init__()
        self.field, self.unit = field, unit

    def render(self, task) -> Text:
        elapsed = task.elapsed or 0.0
        value = task.fields.get(self.field, 0) / elapsed if elapsed > 0 else 0.0
        return Text(f"{value:,.0f} {self.unit}/s", style="cyan")


class ExtractProgress:
    def __init__(self, total_units: int, total_windows: int, total_tokens: int, json_url: str | None, done_units: int = 0, log_every: float = 10.0):
        self.total_units, self.total_windows, self.total_tokens = total_units, total_windows, total_tokens
        self.json_url = json_url
        self.done_units = done_units
        self.windows = self.tokens = 0
        self.started = time.monotonic()
        self.last_log = 0.0
        self.log_every = log_every
        self.tty = sys.stderr.isatty()
        self.bar = None

    def __enter__(self) -> "ExtractProgress":
        if self.tty:
            self.bar = Progress(
                TextColumn("extract"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("units"),
                _Rate("windows", "windows"),
                _Rate("tokens", "tokens"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                transient=False,
            )
            self.bar.start()
            self.task = self.bar.add_task("extract", total=self.total_units, completed=self.done_units, windows=0, tokens=0)
        self._write_json("running")
        return self

    def advance(self, info: dict) -> None:
        self.done_units += 1
        self.windows += info["windows"][1] - info["windows"][0]
        self.tokens += info["tokens"]
        if self.bar is not None:
            self.bar.update(self.task, advance=1, windows=self.windows, tokens=self.tokens)
        now = time.monotonic()
        if not self.tty and (now - self.last_log >= self.log_every or self.done_units == self.total_units):
            self.last_log = now
            s = self.snapshot("running")
            log.warning(
                "extract: %d/%d units, %.1f windows/s, %.0f tokens/s, ETA %s",
                s["units_done"], s["units_total"], s["windows_per_second"], s["tokens_per_second"], _fmt(s["eta_seconds"]),
            )
        self._write_json("running")

    def snapshot(self, state: str) -> dict:
        elapsed = time.monotonic() - self.started
        rate = self.windows / elapsed if elapsed > 0 else 0.0
        per_unit = elapsed / max(self.done_units, 1) if self.windows else None
        remaining = self.total_units - self.done_units
        return {
            "state": state,
            "units_done": self.done_units,
            "units_total": self.total_units,
            "windows_done_this_session": self.windows,
            "windows_total": self.total_windows,
            "tokens_total": self.total_tokens,
            "windows_per_second": round(rate, 3),
            "tokens_per_second": round(self.tokens / elapsed, 1) if elapsed > 0 else 0.0,
            "elapsed_seconds": round(elapsed, 1),
            "eta_seconds": round(per_unit * remaining, 1) if per_unit is not None else None,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    def _write_json(self, state: str) -> None:
        if self.json_url is None:
            return
        try:
            with fsspec.open(self.json_url, "w") as f:
                json.dump(self.snapshot(state), f, indent=1)
        except OSError as e:  # progress is advisory: never fail a run over it
            log.debug("could not write %s: %s", self.json_url, e)

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.bar is not None:
            self.bar.stop()
        self._write_json("failed" if exc_type else "done")


def _fmt(seconds) -> str:
    if seconds is None:
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"
