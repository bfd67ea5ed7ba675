"""The README's main command: `attnsim run` on the embedded defaults (minilm on the Lee corpus)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import polars as pl
import pytest

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "COLUMNS": "200"}


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("fresh")
    r = subprocess.run([sys.executable, "-m", "attnsim.cli", "run"], cwd=cwd, capture_output=True, text=True, env=ENV, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    return cwd / "runs" / "default", r


def test_run_prints_summary_and_paths(default_run):
    out, r = default_run
    assert "per layer" in r.stdout and "mean dist" in r.stdout
    for path in (
        "store.zarr",
        "stats/head_stats.parquet",
        "stats/distance_decay.parquet",
        "stats/anchors.parquet",
        "stats/layer_summary.parquet",
        "stats/summary.json",
        "report/report.html",
        "report/head_map.png",
    ):
        assert (out / path).exists(), path
        if not path.startswith("report/"):
            assert path.split("/")[-1] in r.stdout
    assert "report" in r.stdout


def test_statistics_cover_every_head(default_run):
    out, _ = default_run
    heads = pl.read_parquet(out / "stats" / "head_stats.parquet")
    assert heads.height == 6 * 12  # minilm: 6 layers x 12 heads
    assert heads["n_high"].min() > 0
    summary = json.loads((out / "stats" / "summary.json").read_text())
    assert summary["corpus"]["documents"] == 300
    assert summary["windows"] == summary["corpus"]["windows"]


def test_info_describes_the_store(default_run):
    out, _ = default_run
    r = subprocess.run([sys.executable, "-m", "attnsim.cli", "info", str(out / "store.zarr")], capture_output=True, text=True, env=ENV)
    assert r.returncode == 0, r.stderr
    for word in ("minilm", "bert", "6 layers x 12 heads", "lee", "tokens", "default", "units"):
        assert word in r.stdout, word


# `attnsim <command> <store>` in process, then the heavy libraries it imported, on the last line.
IMPORTED = """
import sys
from attnsim.cli import main
sys.argv = ["attnsim", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
print(sorted(m for m in ("torch", "transformers", "dask.array", "ray", "matplotlib") if m in sys.modules))
"""


@pytest.mark.parametrize("command", ["info", "verify"])
def test_store_commands_import_no_model_or_cluster_library(default_run, command):
    """`attnsim info` and `verify` read the store only: importing transformers or torch for them cost
    most of their time (info 2.2-3.0 s against 0.7-0.8 s, benchmarks/RESULTS.md)."""
    out, _ = default_run
    r = subprocess.run([sys.executable, "-c", IMPORTED, command, str(out / "store.zarr")], capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"


def test_rerun_resumes_without_recomputing(default_run):
    out, _ = default_run
    before = {p: p.stat().st_mtime_ns for p in (out / "store.zarr" / "topk_index").rglob("*") if p.is_file()}
    r = subprocess.run([sys.executable, "-m", "attnsim.cli", "extract", "--out", str(out), "--local"], capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "extracted 0 units" in r.stdout
    after = {p: p.stat().st_mtime_ns for p in (out / "store.zarr" / "topk_index").rglob("*") if p.is_file()}
    assert before == after
