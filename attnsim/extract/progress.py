"""Progress of an extraction: a rich bar on a terminal, log lines elsewhere, and progress.json.

On a terminal the bar shows units, windows/s, tokens/s and the ETA. Where output is not a terminal
(`ray job logs -f`, a SLURM or Kubernetes log) one plain line is logged at the start, after the first
unit, every `log_every` seconds, and at the end, e.g.

    extract: 12/14 units (85.7%), 384 windows this session, 12.3 windows/s, 2,100 tokens/s, elapsed 0:00:31, ETA 0:00:05

Either way `progress.json` in the run folder (beside the store) is rewritten after every unit so that
a user or a dashboard can poll it (`state` is running, done or failed).

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
    def __init__(
        self,
        total_units: int,
        total_windows: int,
        total_tokens: int,
        json_url: str | None,
        done_units: int = 0,
        log_every: float = 10.0,
        tty: bool | None = None,
    ):
        self.total_units, self.total_windows, self.total_tokens = total_units, total_windows, total_tokens
        self.json_url = json_url
        self.done_units = done_units  # including units a previous session finished
        self.session_units = 0  # the rates and the ETA come from this session's units only
        self.windows = self.tokens = 0
        self.started = time.monotonic()
        self.started_at = _now()
        self.last_log = self.started
        self.log_every = log_every
        self.tty = sys.stderr.isatty() if tty is None else tty
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
        else:
            log.warning(
                "extract: %d of %d units to do (%d done before), %s windows, %s tokens in all; progress in %s",
                self.total_units - self.done_units,
                self.total_units,
                self.done_units,
                f"{self.total_windows:,}",
                f"{self.total_tokens:,}",
                self.json_url or "(not saved)",
            )
        self._write_json("running")
        return self

    def advance(self, info: dict) -> None:
        self.done_units += 1
        self.session_units += 1
        self.windows += info["windows"][1] - info["windows"][0]
        self.tokens += info["tokens"]
        if self.bar is not None:
            self.bar.update(self.task, advance=1, windows=self.windows, tokens=self.tokens)
        now = time.monotonic()
        due = self.session_units == 1 or now - self.last_log >= self.log_every  # the last line comes from __exit__
        if not self.tty and due:
            self.last_log = now
            log.warning("extract: %s", self.line(self.snapshot("running")))
        self._write_json("running")

    def snapshot(self, state: str) -> dict:
        elapsed = time.monotonic() - self.started
        remaining = self.total_units - self.done_units
        per_unit = elapsed / self.session_units if self.session_units else None
        return {
            "stage": "extract",
            "state": state,
            "units_done": self.done_units,
            "units_total": self.total_units,
            "percent": round(100.0 * self.done_units / self.total_units, 1) if self.total_units else 100.0,
            "units_done_this_session": self.session_units,
            "windows_done_this_session": self.windows,
            "windows_total": self.total_windows,
            "tokens_done_this_session": self.tokens,
            "tokens_total": self.total_tokens,
            "windows_per_second": round(self.windows / elapsed, 3) if elapsed > 0 else 0.0,
            "tokens_per_second": round(self.tokens / elapsed, 1) if elapsed > 0 else 0.0,
            "elapsed_seconds": round(elapsed, 1),
            "eta_seconds": 0.0 if remaining == 0 else (round(per_unit * remaining, 1) if per_unit is not None else None),
            "started": self.started_at,
            "updated": _now(),
        }

    @staticmethod
    def line(s: dict) -> str:
        """One log line from a snapshot: units, windows/s, tokens/s, elapsed, ETA."""
        return (
            f"{s['units_done']}/{s['units_total']} units ({s['percent']:.1f}%), "
            f"{s['windows_done_this_session']:,} windows this session, {s['windows_per_second']:,.1f} windows/s, "
            f"{s['tokens_per_second']:,.0f} tokens/s, elapsed {_fmt(s['elapsed_seconds'])}, ETA {_fmt(s['eta_seconds'])}"
        )

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
        state = "failed" if exc_type else "done"
        if not self.tty:
            log.warning("extract %s: %s", state, self.line(self.snapshot(state)))
        self._write_json(state)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _fmt(seconds) -> str:
    if seconds is None:
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"
