"""The claims rule on synthetic statistics whose verdicts are known by construction."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from attnsim.config import LabelRule
from attnsim.report.claims import FAILS, HOLDS, UNSURE, above, evaluate, head_bootstrap, scaled_rule

RULE = LabelRule()


def head_rows(per_head=None, n_layers=3, n_heads=4):
    """Plain heads (label 'broad' under the default rule); per_head[(l, h)] = {column: value} overrides."""
    per_head = per_head or {}
    rows = []
    for l in range(n_layers):
        for h in range(n_heads):
            row = dict(
                layer=l,
                head=h,
                separator_share=0.05,
                separator_share_ratio=1.2,
                repetition_share_ratio=1.5,
                repetition_share=0.02,
                top_anchor="the",
                top_anchor_share=0.05,
                top_anchor_share_ratio=1.2,
                local_share=0.1,
                local_share_ratio=1.3,
                same_sentence_ratio_matched=1.05,
                mass_sep_ratio=0.9,
                label="broad",
            )
            row.update(per_head.get((l, h), {}))
            rows.append(row)
    return pl.DataFrame(rows)


def layer_rows(values: dict[str, list[tuple[float, float, float]]], n_layers=3):
    """values[name] = [(point, ci_low, ci_high) per layer]; unspecified statistics get wide CIs."""
    defaults = {"separator_share_ratio": (2.0, 1.5, 2.5), "mean_distance_ratio": (0.9, 0.8, 1.1), "same_sentence_ratio_matched": (1.05, 1.0, 1.1)}
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
    [((6.0, 5.5, 6.5), HOLDS), ((0.1, 0.05, 0.2), FAILS), ((1.6, 1.2, 2.0), UNSURE)],
)
def test_final_layer_separator_share(final, verdict):
    layers = layer_rows({"separator_share_ratio": [(1.0, 0.8, 1.2), (1.2, 1.0, 1.4), final]})
    c = claim(evaluate(layers, head_rows(), summary(), RULE), "similarities focus on sentence separator")
    assert c.verdict == verdict
    assert (c.value, c.low, c.high) == final
    assert "layer 1" in c.compared  # the highest earlier layer is named
    expected = {HOLDS: "final layer above chance", FAILS: "final layer below chance", UNSURE: "final layer above chance"}
    assert c.chance.startswith(expected[verdict])
    assert "at chance: layer 0, layer 1" in c.chance  # both earlier intervals cover 1


def test_final_layer_attention_on_sep_uses_a_bootstrap_over_heads():
    high = {(2, h): {"mass_sep_ratio": 5.0 + 0.1 * h} for h in range(4)}
    c = claim(evaluate(layer_rows({}), head_rows(high), summary(), RULE), "attention focuses")
    assert c.verdict == HOLDS and c.value == pytest.approx(5.15)
    assert 5.0 <= c.low <= c.value <= c.high <= 5.3
    assert c.chance.startswith("final layer above chance")
    low = {(0, h): {"mass_sep_ratio": 9.0} for h in range(4)}
    assert claim(evaluate(layer_rows({}), head_rows(low), summary(), RULE), "attention focuses").verdict == FAILS


def test_separator_note_depends_on_the_windows_setting():
    layers, heads = layer_rows({}), head_rows()
    assert "sentence_separator=none" in claim(evaluate(layers, heads, summary(), RULE, "none"), "attention focuses").note
    assert claim(evaluate(layers, heads, summary(), RULE, "sep"), "attention focuses").note == ""


def test_repetition_heads_verdict_follows_the_threshold_range():
    def verdict(factor):
        strong = {(1, 2): {"repetition_share_ratio": RULE.repetition_ratio * factor, "repetition_share": RULE.repetition_share * factor}}
        return claim(evaluate(layer_rows({}), head_rows(strong), summary(), RULE), "repetitions")

    assert verdict(2.0).verdict == HOLDS and verdict(2.0).value == 1
    near = verdict(1.05)  # passes the nominal thresholds, fails them 10% stricter
    assert (near.value, near.low, near.high, near.verdict) == (1, 0, 1, UNSURE)
    none = claim(evaluate(layer_rows({}), head_rows(), summary(), RULE), "repetitions")
    assert (none.value, none.verdict) == (0, FAILS)
    assert "L0 H0" in none.compared  # all equal: the first head is the strongest


def test_anchor_heads_list_their_tokens():
    anchors = {
        (0, 1): {"top_anchor": ".", "top_anchor_share": 0.4, "top_anchor_share_ratio": 9.0},
        (2, 3): {"top_anchor": "said", "top_anchor_share": 0.5, "top_anchor_share_ratio": 20.0},
        (2, 0): {"top_anchor": "the", "top_anchor_share": 0.5, "top_anchor_share_ratio": 2.0},
    }  # frequent: no anchor
    c = claim(evaluate(layer_rows({}), head_rows(anchors), summary(), RULE), "anchor token")
    assert (c.value, c.verdict) == (2, HOLDS)
    assert "'.' x1" in c.compared and "'said' x1" in c.compared


def test_layers_whose_heads_specialise_differently():
    mixed = {}
    for l in (0, 1):  # two of three layers: one anchor head and one sentence head
        mixed[(l, 0)] = {"top_anchor_share": 0.6, "top_anchor_share_ratio": 10.0}
        mixed[(l, 1)] = {"same_sentence_ratio_matched": 1.5}
    c = claim(evaluate(layer_rows({}), head_rows(mixed), summary(), RULE), "specialise in different")
    assert (c.value, c.verdict) == (2, HOLDS)  # needs ceil(3 / 2) = 2 layers
    only_one = {k: v for k, v in mixed.items() if k[0] == 0}
    assert claim(evaluate(layer_rows({}), head_rows(only_one), summary(), RULE), "specialise in different").verdict == FAILS


@pytest.mark.parametrize(
    "rho, verdict", [((-0.8, -0.95, -0.4), HOLDS), ((0.7, 0.3, 0.9), FAILS), ((-0.1, -0.5, 0.3), UNSURE), ((math.nan, math.nan, math.nan), UNSURE)]
)
def test_rank_correlation_of_distance_with_depth(rho, verdict):
    c = claim(evaluate(layer_rows({}), head_rows(), summary(rho), RULE), "long-range", "Spearman")
    assert c.verdict == verdict


def test_first_and_final_layer_distance_and_same_sentence():
    layers = layer_rows(
        {
            "mean_distance_ratio": [(1.0, 0.95, 1.05), (0.8, 0.75, 0.85), (0.5, 0.45, 0.55)],
            "same_sentence_ratio_matched": [(1.0, 0.98, 1.02), (1.1, 1.05, 1.15), (1.3, 1.25, 1.35)],
        }
    )
    claims = evaluate(layers, head_rows(), summary(), RULE)
    distance = claim(claims, "long-range", "distance / a random head's")
    assert distance.verdict == HOLDS and distance.chance == "first layer at chance, final layer below chance"
    same = claim(claims, "same sentence")
    assert same.verdict == HOLDS and same.chance == "first layer at chance, final layer above chance"
    flipped = layer_rows(
        {
            "mean_distance_ratio": [(0.5, 0.45, 0.55), (0.8, 0.75, 0.85), (1.0, 0.95, 1.05)],
            "same_sentence_ratio_matched": [(1.3, 1.25, 1.35), (1.1, 1.05, 1.15), (1.0, 0.98, 1.02)],
        }
    )
    claims = evaluate(flipped, head_rows(), summary(), RULE)
    assert claim(claims, "long-range", "distance / a random head's").verdict == FAILS
    assert claim(claims, "same sentence").verdict == FAILS


def test_head_bootstrap_and_scaled_rule():
    assert head_bootstrap(np.full(12, 0.3)) == pytest.approx((0.3, 0.3))
    assert all(math.isnan(x) for x in head_bootstrap(np.array([0.3])))
    strict = scaled_rule(RULE, 1.1)
    assert strict.anchor_share == pytest.approx(RULE.anchor_share * 1.1)
    assert strict.sentence_ratio == pytest.approx(RULE.sentence_ratio * 1.1)
    assert strict.local_distance == RULE.local_distance  # defines local_share, computed once by reduce
