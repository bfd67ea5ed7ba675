"""progress.json and the progress log lines, on a fake clock (no model, no Ray)."""

from __future__ import annotations

import json
import logging

import fsspec
import pytest

from attnsim.extract import progress as progress_module
from attnsim.extract.progress import ExtractProgress


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(progress_module.time, "monotonic", c)
    return c


def read(url: str) -> dict:
    with fsspec.open(url) as f:
        return json.load(f)


def test_progress_json_through_a_run(tmp_path, clock, caplog):
    url = str(tmp_path / "progress.json")
    caplog.set_level(logging.INFO, logger="attnsim")
    with ExtractProgress(4, 40, 1000, url, done_units=1, log_every=30, tty=False) as p:
        first = read(url)
        assert first["state"] == "running" and first["stage"] == "extract"
        assert (first["units_done"], first["units_total"], first["percent"]) == (1, 4, 25.0)
        assert first["eta_seconds"] is None  # no unit of this session yet: no rate to extrapolate
        clock.now += 20
        p.advance({"windows": [10, 20], "tokens": 250})
        s = read(url)
        assert (s["units_done"], s["units_done_this_session"], s["windows_done_this_session"]) == (2, 1, 10)
        assert s["windows_per_second"] == 0.5 and s["tokens_per_second"] == 12.5
        assert s["eta_seconds"] == 40.0  # 20 s per unit of this session, 2 units left
        assert s["windows_total"] == 40 and s["tokens_total"] == 1000 and s["elapsed_seconds"] == 20.0
        clock.now += 10
        p.advance({"windows": [20, 30], "tokens": 250})  # 10 s after the last line: no new line yet
        clock.now += 10
        p.advance({"windows": [30, 40], "tokens": 250})
    done = read(url)
    assert done["state"] == "done" and done["units_done"] == 4 and done["percent"] == 100.0 and done["eta_seconds"] == 0.0

    lines = [r.getMessage() for r in caplog.records if r.name == "attnsim"]
    assert lines[0] == f"extract: 3 of 4 units to do (1 done before), 40 windows, 1,000 tokens in all; progress in {url}"
    assert lines[1] == "extract: 2/4 units (50.0%), 10 windows this session, 0.5 windows/s, 12 tokens/s, elapsed 0:00:20, ETA 0:00:40"
    assert lines[2] == "extract done: 4/4 units (100.0%), 30 windows this session, 0.8 windows/s, 19 tokens/s, elapsed 0:00:40, ETA 0:00:00"
    assert len(lines) == 3


def test_eta_of_a_resumed_run_counts_only_this_session(clock):
    p = ExtractProgress(100, 1000, 10_000, None, done_units=90, tty=False)
    clock.now += 10
    p.advance({"windows": [900, 910], "tokens": 100})
    s = p.snapshot("running")
    assert s["units_done"] == 91
    assert s["eta_seconds"] == 90.0  # 10 s per unit now, 9 left (not 10 s / 91 units done in all)


def test_a_failed_run_says_so(tmp_path, clock):
    url = str(tmp_path / "progress.json")
    with pytest.raises(RuntimeError):
        with ExtractProgress(3, 9, 90, url, tty=False):
            raise RuntimeError("actor died too often")
    assert read(url)["state"] == "failed"


def test_progress_json_on_object_storage(clock):
    url = "memory://attnsim-progress-test/run/progress.json"
    with ExtractProgress(1, 5, 50, url, tty=False) as p:
        clock.now += 2
        p.advance({"windows": [0, 5], "tokens": 50})
    assert read(url)["state"] == "done"
    fsspec.filesystem("memory").rm("/attnsim-progress-test", recursive=True)
