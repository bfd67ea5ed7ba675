"""The claims rule on synthetic statistics whose verdicts are known by construction."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from attnsim.report.claims import FAILS, HOLDS, UNSURE, above, evaluate, head_bootstrap, scaled_rule
from attnsim.config import LabelRule

RULE = LabelRule()


def head_rows(per_head=None, n_layers=3, n_heads=4):
    """Plain heads (label 'broad' under the default rule); per_head[(l, h)] = {column: value} overrides."""
    per_head = per_head or {}
    rows = []
    for l in range(n_layers):
        for h in range(n_heads):
            row = dict(layer=l, head=h, separator_share=0.05, repetition_enrichment=1.5, repetition_share=0.02,
                       top_anchor="the", top_anchor_share=0.05, top_anchor_lift=1.2, mean_distance=20.0,
                       same_sentence_enrichment=1.1, mass_sep=0.02, label="broad")
            row.update(per_head.get((l, h), {}))
            rows.append(row)
    return pl.DataFrame(rows)


def layer_rows(values: dict[str, list[tuple[float, float, float]]], n_layers=3):
    """values[name] = [(point, ci_low, ci_high) per layer]; unspecified statistics get wide CIs."""
    defaults = {"separator_share": (0.1, 0.05, 0.15), "mean_distance": (20, 10, 30), "same_sentence_enrichment": (1.5, 1.0, 2.0)}
    rows = []
    for l in range(n_layers):
        row = {"layer": l}
        for name, default in defaults.items():
            point, lo, hi = values.get(name, [default] * n_layers)[l]
            row |= {name: point, f"{name}_ci_low": lo, f"{name}_ci_high": hi}
        rows.append(row)
    return pl.DataFrame(rows)


def summary(rho=(0.0, -0.5, 0.5)):
    return {"layer_distance_correlation": {"spearman_layer_vs_mean_distance": rho[0], "ci_low": rho[1], "ci_high": rho[2]}}


def claim(claims, finding_part, statistic_part=""):
    found = [c for c in claims if finding_part in c.finding and statistic_part in c.statistic]
    assert len(found) == 1, [c.finding for c in claims]
    return found[0]


def test_interval_rule():
    assert above((0.5, 0.6), (0.1, 0.4)) == HOLDS
    assert above((0.1, 0.2), (0.3, 0.4)) == FAILS
    assert above((0.1, 0.35), (0.3, 0.4)) == UNSURE
    assert above((math.nan, 0.2), (0.3, 0.4)) == UNSURE


@pytest.mark.parametrize(
    "final, verdict",
    [((0.6, 0.55, 0.65), HOLDS), ((0.01, 0.005, 0.02), FAILS), ((0.16, 0.12, 0.2), UNSURE)],
)
def test_final_layer_separator_share(final, verdict):
    layers = layer_rows({"separator_share": [(0.1, 0.08, 0.12), (0.12, 0.1, 0.14), final]})
    c = claim(evaluate(layers, head_rows(), summary(), RULE), "similarities focus on sentence separator")
    assert c.verdict == verdict
    assert (c.value, c.low, c.high) == final
    assert "layer 1" in c.compared  # the highest earlier layer is named


def test_final_layer_attention_on_sep_uses_a_bootstrap_over_heads():
    high = {(2, h): {"mass_sep": 0.5 + 0.01 * h} for h in range(4)}
    c = claim(evaluate(layer_rows({}), head_rows(high), summary(), RULE), "attention focuses")
    assert c.verdict == HOLDS and c.value == pytest.approx(0.515)
    assert 0.5 <= c.low <= c.value <= c.high <= 0.53
    low = {(0, h): {"mass_sep": 0.9} for h in range(4)}
    assert claim(evaluate(layer_rows({}), head_rows(low), summary(), RULE), "attention focuses").verdict == FAILS


def test_separator_note_depends_on_the_windows_setting():
    layers, heads = layer_rows({}), head_rows()
    assert "sentence_separator=none" in claim(evaluate(layers, heads, summary(), RULE, "none"), "attention focuses").note
    assert claim(evaluate(layers, heads, summary(), RULE, "sep"), "attention focuses").note == ""


def test_repetition_heads_verdict_follows_the_threshold_range():
    def verdict(factor):
        strong = {(1, 2): {"repetition_enrichment": RULE.repetition_enrichment * factor, "repetition_share": RULE.repetition_share * factor}}
        return claim(evaluate(layer_rows({}), head_rows(strong), summary(), RULE), "repetitions")

    assert verdict(2.0).verdict == HOLDS and verdict(2.0).value == 1
    near = verdict(1.05)  # passes the nominal thresholds, fails them 10% stricter
    assert (near.value, near.low, near.high, near.verdict) == (1, 0, 1, UNSURE)
    none = claim(evaluate(layer_rows({}), head_rows(), summary(), RULE), "repetitions")
    assert (none.value, none.verdict) == (0, FAILS)
    assert "L0 H0" in none.compared  # all equal: the first head is the strongest


def test_anchor_heads_list_their_tokens():
    anchors = {(0, 1): {"top_anchor": ".", "top_anchor_share": 0.4, "top_anchor_lift": 9.0},
               (2, 3): {"top_anchor": "said", "top_anchor_share": 0.5, "top_anchor_lift": 20.0}}
    c = claim(evaluate(layer_rows({}), head_rows(anchors), summary(), RULE), "anchor token")
    assert (c.value, c.verdict) == (2, HOLDS)
    assert "'.' x1" in c.compared and "'said' x1" in c.compared


def test_layers_whose_heads_specialise_differently():
    mixed = {}
    for l in (0, 1):  # two of three layers: one anchor head and one sentence head
        mixed[(l, 0)] = {"top_anchor_share": 0.6, "top_anchor_lift": 10.0}
        mixed[(l, 1)] = {"same_sentence_enrichment": 3.0}
    c = claim(evaluate(layer_rows({}), head_rows(mixed), summary(), RULE), "specialise in different")
    assert (c.value, c.verdict) == (2, HOLDS)  # needs ceil(3 / 2) = 2 layers
    only_one = {k: v for k, v in mixed.items() if k[0] == 0}
    assert claim(evaluate(layer_rows({}), head_rows(only_one), summary(), RULE), "specialise in different").verdict == FAILS


@pytest.mark.parametrize("rho, verdict", [((-0.8, -0.95, -0.4), HOLDS), ((0.7, 0.3, 0.9), FAILS), ((-0.1, -0.5, 0.3), UNSURE),
                                          ((math.nan, math.nan, math.nan), UNSURE)])
def test_rank_correlation_of_distance_with_depth(rho, verdict):
    c = claim(evaluate(layer_rows({}), head_rows(), summary(rho), RULE), "long-range", "Spearman")
    assert c.verdict == verdict


def test_first_and_final_layer_distance_and_same_sentence():
    layers = layer_rows({
        "mean_distance": [(60, 55, 65), (40, 35, 45), (20, 18, 22)],
        "same_sentence_enrichment": [(1.2, 1.1, 1.3), (1.8, 1.7, 1.9), (2.5, 2.3, 2.7)],
    })
    claims = evaluate(layers, head_rows(), summary(), RULE)
    assert claim(claims, "long-range", "distance (tokens)").verdict == HOLDS
    assert claim(claims, "same sentence").verdict == HOLDS
    flipped = layer_rows({
        "mean_distance": [(20, 18, 22), (40, 35, 45), (60, 55, 65)],
        "same_sentence_enrichment": [(2.5, 2.3, 2.7), (1.8, 1.7, 1.9), (1.2, 1.1, 1.3)],
    })
    claims = evaluate(flipped, head_rows(), summary(), RULE)
    assert claim(claims, "long-range", "distance (tokens)").verdict == FAILS
    assert claim(claims, "same sentence").verdict == FAILS


def test_head_bootstrap_and_scaled_rule():
    assert head_bootstrap(np.full(12, 0.3)) == pytest.approx((0.3, 0.3))
    assert all(math.isnan(x) for x in head_bootstrap(np.array([0.3])))
    strict = scaled_rule(RULE, 1.1)
    assert strict.anchor_share == pytest.approx(RULE.anchor_share * 1.1)
    assert strict.local_distance == pytest.approx(RULE.local_distance / 1.1)  # '<=' threshold: stricter when smaller
