"""Proof by planting (issue 11): stores whose heads follow a known rule, through the real reduce.

A random head must score chance (every ratio's CI covering 1 in at least 90% of 50 seeds) and get
no specialised label; a local head (k nearest) must not pass for a sentence head; each planted
specialist gets its own label and no other.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from planted import CLASSES, HEADS, K, planted_arrays, write_planted_store

from attnsim.config import LabelRule, RunConfig
from attnsim.reduce.pairs import block_partial, topk_pairs
from attnsim.reduce.stage import reduce_store
from attnsim.reduce.statistics import head_table, layer_table

RATIOS = (
    "mean_distance_ratio",
    "same_sentence_share_ratio",
    "repetition_share_ratio",
    "separator_share_ratio",
    "cls_share_ratio",
    "sep_token_share_ratio",
    "final_punct_share_ratio",
    "same_sentence_ratio_matched",
)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("planted")
    url = write_planted_store(str(tmp / "store.zarr"), seed=7, vectors=True)
    reduce_store(RunConfig(out=str(tmp), bootstrap=100, dask_scheduler="synchronous"), url=url)
    heads = pl.read_parquet(tmp / "stats" / "head_stats.parquet")
    decay = pl.read_parquet(tmp / "stats" / "distance_decay.parquet")
    return {HEADS[r["head"]]: r for r in heads.to_dicts()}, decay


def test_each_planted_head_gets_its_label_and_no_other(planted):
    rows, _ = planted
    labels = {name: row["label"] for name, row in rows.items()}
    assert labels == {"random": "broad", "local": "local", "sentence": "sentence", "repetition": "repetition", "anchor": "anchor", "separator": "separator"}


def test_random_head_scores_chance(planted):
    rows, decay = planted
    r = rows["random"]
    for name in RATIOS + ("top_anchor_share_ratio", "local_share_ratio"):
        assert r[name] == pytest.approx(1.0, abs=0.25), name  # one seed, 24 windows: sampling noise only
    assert math.isnan(r["decay_length"])  # the ratio to chance does not decay
    ratio = decay.filter(pl.col("head") == HEADS.index("random"))
    # P(d) itself falls with d for a random head (short windows hold short distances); the ratio is flat
    near, far = ratio.filter(pl.col("distance") <= 10), ratio.filter(pl.col("distance").is_between(60, 100))
    assert near["n_high"].sum() / (near["p_chance"] * near["n_all"]).sum() == pytest.approx(1.0, abs=0.1)
    assert far["n_high"].sum() / (far["p_chance"] * far["n_all"]).sum() == pytest.approx(1.0, abs=0.1)


def test_local_head_is_not_a_sentence_head(planted):
    rows, _ = planted
    local = rows["local"]
    assert local["same_sentence_ratio_matched"] == pytest.approx(1.0, abs=0.05)  # locality explains it
    assert local["same_sentence_enrichment"] > 3  # what the raw enrichment (the old label's input) says
    assert local["local_share"] == 1.0  # k = 4 nearest: every pair at d <= 2
    assert rows["sentence"]["same_sentence_ratio_matched"] > 1.2


def test_specialists_score_their_feature_far_above_chance(planted):
    rows, _ = planted
    assert rows["separator"]["separator_share"] == 1.0 and rows["separator"]["separator_share_ratio"] > 10
    assert rows["separator"]["final_punct_share"] > 0.5  # the inner '.' tokens are never targets
    assert rows["anchor"]["top_anchor_share"] > 0.25 and rows["anchor"]["top_anchor_share_ratio"] > 5
    assert rows["repetition"]["repetition_share_ratio"] > 5


def _layer_of_random_heads(seed: int, n_windows: int = 40, n_boot: int = 200) -> dict:
    """The real reduce's block function and statistics on one block of 4 random heads."""
    a = planted_arrays(seed, n_windows, heads=("random",) * 4)
    part = block_partial(
        a["input_ids"], a["sentence_id"], a["length"], topk_pairs(a["topk_index"], a["sentence_id"]), None, CLASSES, (1, 4), n_boot, seed, 0, k=K
    ).sorted()
    heads, _ = head_table(part, str, LabelRule())
    layers, _ = layer_table(part, heads)
    return layers.to_dicts()[0] | {"labels": set(heads["label"])}


def test_random_heads_ci_covers_one_in_90_percent_of_seeds():
    covered = {name: 0 for name in RATIOS}
    for seed in range(50):
        row = _layer_of_random_heads(seed)
        assert row["labels"] == {"broad"}, seed
        for name in RATIOS:
            covered[name] += row[f"{name}_ci_low"] <= 1.0 <= row[f"{name}_ci_high"]
    coverage = {name: n / 50 for name, n in covered.items()}
    assert all(c >= 0.9 for c in coverage.values()), coverage


def test_chance_matches_a_monte_carlo_random_head():
    """The closed form against sampling: the mean over many random heads of each share."""
    a = planted_arrays(3, 12, heads=("random",) * 16)
    part = block_partial(
        a["input_ids"], a["sentence_id"], a["length"], topk_pairs(a["topk_index"], a["sentence_id"]), None, CLASSES, (1, 16), 0, 0, 0, k=K
    ).sorted()
    heads, _ = head_table(part, str, LabelRule())
    for name in ("mean_distance", "same_sentence_share", "separator_share", "final_punct_share", "repetition_share"):
        pooled = heads[name].mean()
        assert pooled == pytest.approx(heads[f"{name}_chance"][0], rel=0.08), name
    assert np.isclose(heads["n_high_all"].to_numpy(), part.expected("e_high_all")).all()  # k per real token, exactly


def test_raw_decay_length_of_a_random_head_is_finite_and_the_ratio_fit_is_not(planted):
    """The issue's finding, planted: P(d) of a random head falls (a finite raw decay length), its ratio does not."""
    rows, _ = planted
    assert math.isfinite(rows["random"]["decay_length_raw"]) and math.isnan(rows["random"]["decay_length"])


def test_anchor_norms_from_the_vectors_tier(planted):
    """The anchor word's vectors are planted 3x as long as the rest: its norm ratio says so (part 6)."""
    rows, _ = planted
    assert rows["anchor"]["top_anchor_norm_ratio"] == pytest.approx(3.0 / (1 + 2 * 0.03), rel=0.1)  # ~3% of tokens are it
    assert rows["separator"]["top_anchor_norm_ratio"] == pytest.approx(1.0, rel=0.1)  # '.' or [SEP]: ordinary norms
