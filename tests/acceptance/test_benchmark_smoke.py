"""The benchmark harness in smoke mode, so it never rots (numbers are never asserted: shared machine)."""

from __future__ import annotations

import json

from benchmarks.harness import GOALS, main


def test_harness_smoke(tmp_path):
    results = main(["--smoke", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "results.json").read_text())
    for key in GOALS:
        assert key in saved and saved[key] > 0, key
    assert results["corpus_tokens"] > 0
    stages = saved["run_stage_seconds"]  # as `attnsim run` printed them, in its order
    assert list(stages) == ["start", "prepare", "extract", "reduce", "report"] and 0 < sum(stages.values()) < saved["run_seconds"]
    assert not (tmp_path / "RESULTS.md").exists()  # smoke mode never overwrites the real table


def test_harness_smoke_extract_only(tmp_path, capsys):
    """The GPU machine's form (extract rows only, plus the serial comparison), here on the CPU."""
    results = main(["--smoke", "--extract-only", "--compare-serial", "--out", str(tmp_path)])
    assert results["serial_over_overlapped_default"] > 0 and results["extract_over_bare_serial_default"] > 0
    assert "reduce_seconds" not in results and "run_seconds" not in results
    table = capsys.readouterr().out
    assert "one unit at a time" in table and "extract_over_bare_default" in table and "reduce_over_extract" not in table
