"""Every statistic on a tiny synthetic store whose answers are counted by hand below."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest

from attnsim.config import LabelRule, RunConfig
from attnsim.model.loading import resolve_model_source
from attnsim.reduce.stage import reduce_store
from attnsim.store.io import create_store, write_marker, write_unit
from attnsim.store.meta import MASS_CATEGORIES, Layout

CLS, SEP, A, B, C, D, E = 101, 102, 1037, 1038, 1039, 1040, 1041
T = 8


def build(tmp_path, windows_per_shard=2):
    """Two windows of different lengths, 1 layer, 2 heads, k = 1.

    w0: [CLS] a b a c [SEP] pad pad   sentences: - 0 0 1 1 -
    w1: [CLS] d d e [SEP] pad pad pad sentences: - 0 0 0 -
    head 0 (repetition): a -> the other a, d -> the other d, b/c/e -> [SEP]
    head 1 (next token): i -> i + 1
    """
    ids = np.full((2, T), -1, np.int32)
    sid = np.full((2, T), -1, np.int32)
    ids[0, :6] = [CLS, A, B, A, C, SEP]
    sid[0, :6] = [-1, 0, 0, 1, 1, -1]
    ids[1, :5] = [CLS, D, D, E, SEP]
    sid[1, :5] = [-1, 0, 0, 0, -1]
    length = np.array([6, 5], np.int32)
    topk = np.full((2, 1, 2, T, 1), -1, np.int16)
    topk[0, 0, 0, :6, 0] = [1, 3, 5, 1, 5, 1]  # rows of [CLS]/[SEP] are never counted
    topk[1, 0, 0, :5, 0] = [1, 2, 1, 4, 1]
    topk[0, 0, 1, :6, 0] = [1, 2, 3, 4, 5, 4]
    topk[1, 0, 1, :5, 0] = [1, 2, 3, 4, 3]
    mass = np.zeros((2, 1, 2, len(MASS_CATEGORIES)), np.float32)
    mass[0, 0, :, 0], mass[1, 0, :, 0] = 0.2, 0.4  # mass on [CLS]: mean 0.3

    layout = Layout(2, T, 1, 2, 4, 1, len(MASS_CATEGORIES), windows_per_shard, ("default",))
    url = str(tmp_path / f"store{windows_per_shard}.zarr")
    attrs = {
        "tiers": ["default"],
        "similarity_kind": "dot",
        "k": 1,
        "model": {"name": "synthetic"},
        "corpus": {"spec": "synthetic", "windows": 2, "tokens": 11},
        "tokenizer": {"source": resolve_model_source("minilm"), "token_classes": {"cls": CLS, "sep": SEP, "punct": [], "final_punct": []}},
    }
    root = create_store(url, layout, attrs)
    arrays = {
        "input_ids": ids,
        "sentence_id": sid,
        "length": length,
        "doc_id": np.zeros(2, np.int64),
        "char_span": np.full((2, T, 2), -1, np.int64),
        "topk_index": topk,
        "topk_value": np.zeros(topk.shape, np.float16),
        "attention_mass": mass,
    }
    for unit in range(layout.n_units):
        a, b = layout.unit_windows(unit)
        write_unit(root, layout, unit, {k: v[a:b] for k, v in arrays.items()})
        write_marker(url, unit, {"windows": [a, b]})
    return url


@pytest.fixture
def stats(tmp_path):
    url = build(tmp_path)
    cfg = RunConfig(out=str(tmp_path), bootstrap=50, labels=LabelRule(repetition_ratio=4.0, local_distance=1.0, local_ratio=1.5), dask_scheduler="synchronous")
    summary = reduce_store(cfg, url=url)
    read = lambda name: pl.read_parquet(tmp_path / "stats" / f"{name}.parquet")  # noqa: E731
    return summary, read("head_stats"), read("distance_decay"), read("layer_summary"), read("anchors")


def test_distance_decay_counts(stats):
    _, _, decay, _, _ = stats
    # real positions: w0 1..4, w1 1..3 -> ordered pairs at d=1: 6+4, d=2: 4+2, d=3: 2+0
    n_all = dict(decay.filter(pl.col("head") == 0).select("distance", "n_all").iter_rows())
    assert n_all == {1: 10, 2: 6, 3: 2}
    h0 = dict(decay.filter(pl.col("head") == 0).select("distance", "n_high").iter_rows())
    h1 = dict(decay.filter(pl.col("head") == 1).select("distance", "n_high").iter_rows())
    assert h0 == {1: 2, 2: 2, 3: 0}  # (1,3),(3,1) in w0; (1,2),(2,1) in w1
    assert h1 == {1: 5, 2: 0, 3: 0}  # 1->2, 2->3, 3->4 in w0; 1->2, 2->3 in w1
    assert decay.filter((pl.col("head") == 1) & (pl.col("distance") == 1))["p"][0] == pytest.approx(0.5)


def test_head_statistics(stats):
    _, heads, _, _, _ = stats
    h0 = heads.filter(pl.col("head") == 0).to_dicts()[0]
    h1 = heads.filter(pl.col("head") == 1).to_dicts()[0]
    p_same_all, p_rep_all = 10 / 18, 4 / 18  # 18 ordered real pairs, 10 in one sentence, 4 repeats
    assert (h0["n_high_all"], h0["n_high"]) == (7, 4)
    assert h0["mean_distance"] == pytest.approx(1.5)
    assert h0["median_distance"] == 1  # distances 1, 1, 2, 2
    assert h0["same_sentence_enrichment"] == pytest.approx(0.5 / p_same_all)
    assert h0["repetition_enrichment"] == pytest.approx(1.0 / p_rep_all)
    assert h0["separator_share"] == pytest.approx(3 / 7)
    assert h0["top_anchor_id"] == SEP and h0["top_anchor"] == "[SEP]"
    assert h0["top_anchor_share"] == pytest.approx(3 / 7)
    assert h0["top_anchor_lift"] == pytest.approx((3 / 7) / (2 / 11))  # 2 [SEP] of 11 tokens
    shares = np.array([3, 2, 2]) / 7
    assert h0["anchor_entropy_bits"] == pytest.approx(float(-(shares * np.log2(shares)).sum()))
    assert h0["label"] == "repetition"
    assert h0["mass_cls"] == pytest.approx(0.3)
    assert (h1["n_high_all"], h1["n_high"]) == (7, 5)
    assert h1["mean_distance"] == pytest.approx(1.0)
    assert h1["same_sentence_enrichment"] == pytest.approx(0.8 / p_same_all)
    assert h1["repetition_enrichment"] == pytest.approx(0.2 / p_rep_all)
    assert h1["separator_share"] == pytest.approx(2 / 7)
    assert h1["label"] == "local"
    assert math.isnan(h1["decay_length"])  # a single distance: no decay to fit


def test_layer_summary_pools_heads(stats):
    summary, _, _, layers, _ = stats
    row = layers.to_dicts()[0]
    assert row["n_high"] == 9
    assert row["mean_distance"] == pytest.approx(11 / 9)
    assert row["same_sentence_enrichment"] == pytest.approx((6 / 9) / (10 / 18))
    assert row["repetition_enrichment"] == pytest.approx((5 / 9) / (4 / 18))
    assert row["separator_share"] == pytest.approx(5 / 14)
    assert row["mean_distance_ci_low"] <= row["mean_distance_ci_high"]
    assert row["heads_repetition"] == 1 and row["heads_local"] == 1
    assert summary["windows"] == 2


def test_anchors_table(stats):
    *_, anchors = stats
    h0 = anchors.filter(pl.col("head") == 0)
    assert h0["token"].to_list()[0] == SEP
    assert dict(zip(h0["token"].to_list(), h0["count"].to_list())) == {SEP: 3, A: 2, D: 2}


def test_result_does_not_depend_on_blocks_or_scheduler(tmp_path):
    frames = []
    for wps, scheduler in ((1, "threads"), (2, "synchronous")):
        url = build(tmp_path, windows_per_shard=wps)
        out = tmp_path / f"out{wps}"
        reduce_store(RunConfig(out=str(out), bootstrap=0, dask_scheduler=scheduler), url=url)
        frames.append({n: pl.read_parquet(out / "stats" / f"{n}.parquet") for n in ("head_stats", "distance_decay", "anchors")})
    for name in frames[0]:
        assert frames[0][name].equals(frames[1][name]), name


def test_blocks_run_blas_on_one_thread_and_the_limit_is_lifted_after(tmp_path, monkeypatch):
    # dask's threads each calling a multi-threaded BLAS oversubscribe the cores (RESULTS.md).
    from threadpoolctl import threadpool_info

    import attnsim.reduce.stage as stage

    def blas_threads():
        return {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}

    seen = []
    block = stage._block
    monkeypatch.setattr(stage, "_block", lambda *a, **kw: seen.append(blas_threads()) or block(*a, **kw))
    before = blas_threads()
    url = build(tmp_path, windows_per_shard=1)
    reduce_store(RunConfig(out=str(tmp_path / "out"), bootstrap=0, dask_scheduler="threads"), url=url)
    assert len(seen) == 2 and all(threads == {1} for threads in seen)
    assert blas_threads() == before


def test_incomplete_store_is_refused(tmp_path):
    from attnsim.errors import UserError
    from attnsim.store.io import remove_marker

    url = build(tmp_path, windows_per_shard=1)
    remove_marker(url, 1)
    with pytest.raises(UserError, match="incomplete"):
        reduce_store(RunConfig(out=str(tmp_path)), url=url)


def test_summary_json_is_valid(stats, tmp_path):
    data = json.loads((tmp_path / "stats" / "summary.json").read_text())
    assert data["windows"] == 2 and len(data["layers"]) == 1


def test_chance_levels_counted_by_hand(stats):
    """The random head (k = 1): c = 1/5 in w0 (6 valid tokens), 1/4 in w1 (5); every expectation is
    c times the candidate pairs of its kind, counted from the windows in the `build` docstring."""
    _, heads, decay, layers, anchors = stats
    c0, c1 = 1 / 5, 1 / 4
    e_high = c0 * 12 + c1 * 6  # real x real ordered pairs: 4*3 and 3*2
    e_high_all = c0 * 4 * 5 + c1 * 3 * 4  # real sources x (n - 1) candidates
    e_same, e_rep = c0 * 4 + c1 * 6, c0 * 2 + c1 * 2
    e_dist = c0 * (6 * 1 + 4 * 2 + 2 * 3) + c1 * (4 * 1 + 2 * 2)
    e_sep = c0 * 4 + c1 * 3  # one [SEP] per window; no sentence-final punctuation here
    h0 = heads.filter(pl.col("head") == 0).to_dicts()[0]
    h1 = heads.filter(pl.col("head") == 1).to_dicts()[0]
    assert h0["mean_distance_chance"] == pytest.approx(e_dist / e_high)
    assert h0["mean_distance_ratio"] == pytest.approx(1.5 / (e_dist / e_high))
    assert h0["same_sentence_share_chance"] == pytest.approx(e_same / e_high)
    assert h0["repetition_share_ratio"] == pytest.approx(1.0 / (e_rep / e_high))
    assert h0["separator_share_chance"] == pytest.approx(e_sep / e_high_all)
    assert h0["cls_share"] == 0 and h0["cls_share_chance"] == pytest.approx(e_sep / e_high_all)
    assert h0["sep_token_share_ratio"] == pytest.approx((3 / 7) / (e_sep / e_high_all))
    assert h0["top_anchor_share_chance"] == pytest.approx(e_sep / e_high_all)  # [SEP]'s expected in-degree
    # matched: head 0's w0 pairs are at d = 2, where no real pair shares a sentence; w1's at d = 1, where all do
    assert h0["same_sentence_ratio_matched"] == pytest.approx(2 / 2)
    # head 1 (i -> i + 1): d = 1 everywhere; p_same(1) = 4/6 in w0 (3 pairs), 1 in w1 (2 pairs)
    assert h1["same_sentence_ratio_matched"] == pytest.approx(4 / (3 * 4 / 6 + 2 * 1))
    assert h1["local_share"] == 1.0 and h1["local_share_chance"] == pytest.approx((c0 * 6 + c1 * 4) / e_high)
    assert h0["mass_cls_chance"] == pytest.approx((1 / 6 + 1 / 5) / 2)
    assert h0["mass_cls_ratio"] == pytest.approx(0.3 / ((1 / 6 + 1 / 5) / 2))
    assert h0["mass_self_chance"] == pytest.approx((1 / 6 + 1 / 5) / 2)
    d1 = decay.filter((pl.col("head") == 1) & (pl.col("distance") == 1)).to_dicts()[0]
    assert d1["p_chance"] == pytest.approx((c0 * 6 + c1 * 4) / 10)
    assert d1["p_ratio"] == pytest.approx(0.5 / ((c0 * 6 + c1 * 4) / 10))
    row = layers.to_dicts()[0]
    assert row["separator_share_ratio"] == pytest.approx((5 / 14) / (e_sep / e_high_all))
    assert row["same_sentence_ratio_matched"] == pytest.approx(6 / (2 + 3 * 4 / 6 + 2))
    assert row["separator_share_ratio_ci_low"] <= row["separator_share_ratio_ci_high"]
    sep = anchors.filter((pl.col("head") == 0) & (pl.col("token") == SEP)).to_dicts()[0]
    assert sep["chance_share"] == pytest.approx(e_sep / e_high_all) and sep["ratio"] == pytest.approx((3 / 7) / (e_sep / e_high_all))


def test_label_rule_reads_configs_saved_with_the_old_rule():
    from pydantic import ValidationError

    old = {
        "separator_share": 0.5,
        "repetition_enrichment": 5.0,
        "repetition_share": 0.2,
        "anchor_share": 0.25,
        "anchor_lift": 5.0,
        "local_distance": 2.0,
        "sentence_enrichment": 1.5,
    }
    assert LabelRule(**old) == LabelRule()  # what every earlier run saved: the new defaults
    assert LabelRule(anchor_lift=5.0, anchor_share=0.3).anchor_share == 0.3  # an old key at its default: dropped
    with pytest.raises(ValidationError, match="anchor_lift is retired.*anchor_ratio"):
        LabelRule(anchor_lift=3.0)
