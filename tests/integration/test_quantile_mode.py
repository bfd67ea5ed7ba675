"""High pairs by the per-head corpus quantile of S (mode `quantile`), checked against numpy."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import zarr
from helpers import extract_in_process

from attnsim.config import RunConfig
from attnsim.reduce.stage import reduce_store


@pytest.fixture(scope="module")
def dense_run(tiny_bert, corpus_dir, tmp_path_factory):
    cfg = RunConfig(
        model=tiny_bert,
        corpus=corpus_dir,
        out=str(tmp_path_factory.mktemp("q")),
        max_tokens=32,
        windows_per_shard=4,
        tiers=["dense"],
        high_mode="quantile",
        quantile=0.9,
        bootstrap=0,
    )
    extract_in_process(cfg)
    return cfg


def candidates(root):
    """S values of every candidate pair (i real, j valid, j != i), per (layer, head)."""
    s = root["similarity"][:].astype(np.float32)  # (W, L, H, T, T)
    sid = root["sentence_id"][:]
    w, l, h, t, _ = s.shape
    real_i = (sid >= 0)[:, None, None, :, None]
    ok = real_i & np.isfinite(s) & ~np.eye(t, dtype=bool)
    return s, ok


def test_thresholds_and_counts_match_numpy(dense_run):
    cfg = dense_run
    summary = reduce_store(cfg)
    root = zarr.open_group(cfg.store_url, mode="r")
    s, ok = candidates(root)
    thresholds = np.asarray(summary["quantile_thresholds"])  # (L, H)
    heads = pl.read_parquet(f"{cfg.stats_url}/head_stats.parquet").sort(["layer", "head"])
    n_layers, n_heads = thresholds.shape
    for l in range(n_layers):
        for h in range(n_heads):
            values = s[:, l, h][ok[:, l, h]]
            exact = np.quantile(values, cfg.quantile)
            width = 2 * np.abs(values).max() / 16384  # the histogram's bin width
            ties = 2 * float(np.spacing(np.float16(exact)))  # S is stored as float16: values are discrete
            assert abs(thresholds[l, h] - exact) <= width + ties
            above = int((values > thresholds[l, h]).sum())
            row = heads.filter((pl.col("layer") == l) & (pl.col("head") == h)).to_dicts()[0]
            assert row["n_high_all"] == above
            # the defining property of a q-quantile, up to the histogram's resolution
            slack = width + ties
            assert (values > thresholds[l, h] + slack).mean() <= 1 - cfg.quantile + 1e-9
            assert (values < thresholds[l, h] - slack).mean() <= cfg.quantile + 1e-9
    saved = json.loads(open(f"{cfg.stats_url}/summary.json").read())
    assert saved["high_mode"] == "quantile"
