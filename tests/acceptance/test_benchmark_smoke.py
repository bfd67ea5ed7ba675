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
    assert not (tmp_path / "RESULTS.md").exists()  # smoke mode never overwrites the real table
