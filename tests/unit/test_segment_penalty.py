"""The penalised count rule: the dynamic programme against brute force, its limits, planted steps."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from attnsim.segment.penalty import WithinCost, optimal_partition, penalised_boundaries, sentence_features


def total_cost(cuts, n, beta, segment_cost, gap_cost) -> float:
    ends = [-1, *cuts, n - 1]
    cost = sum(segment_cost[a + 1, b + 1] for a, b in zip(ends[:-1], ends[1:])) if segment_cost is not None else 0.0
    return cost + sum(beta + (gap_cost[g] if gap_cost is not None else 0.0) for g in cuts)


def brute_force(n, beta, least, segment_cost, gap_cost):
    """The cheapest boundary set among all sets whose segments hold at least ``least`` sentences."""
    best, best_cuts = np.inf, None
    for r in range(n):
        for cuts in itertools.combinations(range(n - 1), r):
            ends = [-1, *cuts, n - 1]
            if r and min(b - a for a, b in zip(ends[:-1], ends[1:])) < least:
                continue
            cost = total_cost(cuts, n, beta, segment_cost, gap_cost)
            if cost < best:
                best, best_cuts = cost, list(cuts)
    return best_cuts, best


@pytest.mark.parametrize("costs", ["segment", "gap", "both"])
def test_dynamic_programme_equals_brute_force(costs):
    rng = np.random.default_rng(15)
    for _ in range(60):
        n, least, beta = int(rng.integers(2, 11)), int(rng.integers(1, 4)), float(rng.normal(0, 2))
        segment_cost = WithinCost(rng.normal(size=(n, 3))) if costs != "gap" else None
        gap_cost = rng.normal(size=n - 1) if costs != "segment" else None
        got = optimal_partition(n, beta, least, segment_cost=segment_cost, gap_cost=gap_cost)
        expected, best = brute_force(n, beta, least, segment_cost, gap_cost)
        assert got == expected, (n, least, beta)
        assert total_cost(got, n, beta, segment_cost, gap_cost) == pytest.approx(best)


def test_within_cost_is_the_sum_of_squared_distances_from_the_segment_mean():
    x = np.random.default_rng(1).normal(size=(9, 4)) + 50.0  # far from the origin: the centring matters
    cost = WithinCost(x)
    for s, t in [(0, 9), (2, 5), (4, 5), (0, 1)]:
        part = x[s:t]
        assert cost[s, t] == pytest.approx(((part - part.mean(0)) ** 2).sum())


def test_huge_price_gives_no_boundary_and_negative_price_the_most():
    rng = np.random.default_rng(2)
    n, least = 40, 3
    costs = {"segment_cost": WithinCost(rng.normal(size=(n, 5))), "gap_cost": rng.normal(size=n - 1)}
    assert optimal_partition(n, 1e9, least, **costs) == []
    most = optimal_partition(n, -1e9, least, **costs)
    assert len(most) == n // least - 1  # as many segments of at least `least` sentences as fit
    ends = [-1, *most, n - 1]
    assert min(b - a for a, b in zip(ends[:-1], ends[1:])) >= least


def test_fewer_boundaries_as_the_price_rises():
    rng = np.random.default_rng(3)
    cost = WithinCost(rng.normal(size=(60, 4)))
    counts = [len(optimal_partition(60, beta, 2, segment_cost=cost)) for beta in (0.0, 0.5, 1, 2, 4, 8, 100)]
    assert counts == sorted(counts, reverse=True) and counts[0] > 0 and counts[-1] == 0


def test_text_shorter_than_two_segments_is_one_segment():
    assert optimal_partition(5, -1e9, 3, gap_cost=-np.ones(4)) == []
    assert optimal_partition(1, 0.0, 1) == []


@pytest.mark.parametrize("seed", range(5))
def test_planted_steps_are_recovered(seed):
    """Sentence vectors drawn around one mean per planted segment: the boundaries come back exactly."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(8, 20, size=5)
    means = rng.normal(size=(5, 4, 16))  # (segment, head, dim)
    vectors = np.concatenate([m + 0.3 * rng.normal(size=(k, 4, 16)) for m, k in zip(means, lengths)])
    planted = list(np.cumsum(lengths)[:-1] - 1)
    features = sentence_features(vectors)
    assert optimal_partition(len(vectors), 1.5, 4, segment_cost=WithinCost(features)) == planted


def test_planted_dips_in_the_curve_are_recovered():
    curve = np.ones(59)
    planted = [9, 24, 41]
    curve[planted] = -3.0
    assert optimal_partition(60, 0.5, 4, gap_cost=curve) == planted


def test_sentence_features_have_unit_spread_and_equal_heads():
    rng = np.random.default_rng(4)
    vectors = rng.normal(size=(30, 3, 8)) * np.array([1.0, 100.0, 0.01])[None, :, None]  # heads of any scale
    x = sentence_features(vectors)
    assert x.shape == (30, 24)
    assert ((x - x.mean(0)) ** 2).sum(1).mean() == pytest.approx(1.0)
    assert WithinCost(x)[0, 30] == pytest.approx(30.0)  # one segment costs n
    per_head = np.linalg.norm(x.reshape(30, 3, 8), axis=-1)
    assert np.allclose(per_head, per_head[:, :1])  # each head at the same length
    assert np.all(sentence_features(np.ones((6, 2, 4))) == 0)  # no spread: no cost


# --- the penalty cutoff in the segmenter ------------------------------------------------------


class _Shape:  # what Segmenter reads from a loaded model to resolve its heads
    n_layers, n_heads = 2, 4


def planted_text(seed: int, lengths=(30, 45, 25, 40)):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(len(lengths), 4, 16))
    vectors = np.concatenate([m + 0.5 * rng.normal(size=(k, 4, 16)) for m, k in zip(means, lengths)])
    return vectors, [int(x) - 1 for x in np.cumsum(lengths)[:-1]]


@pytest.mark.parametrize("seed", range(3))
def test_default_cutoff_is_the_penalty_rule_and_finds_planted_topics(seed):
    from attnsim.segment.segmenter import SegmentConfig, Segmenter, gap_scores

    seg = Segmenter(_Shape, SegmentConfig())
    assert seg.cfg.cutoff == "penalty"
    vectors, planted = planted_text(seed)
    assert seg.choose(gap_scores(vectors, 4), None, vectors) == planted
    assert penalised_boundaries(vectors, seg.cfg.penalty, 2) == planted
    assert penalised_boundaries(vectors, 1e6, 2) == []


def test_given_count_ignores_the_penalty_cutoff():
    from attnsim.segment.segmenter import SegmentConfig, Segmenter, choose_boundaries, gap_scores

    vectors, _ = planted_text(7)
    curve = gap_scores(vectors, 4)
    for k in (1, 2, 4, 9):
        expected = choose_boundaries(curve, k, 2, cutoff="depth", threshold=2.5, fraction=0.04)
        assert Segmenter(_Shape, SegmentConfig()).choose(curve, k, vectors) == expected
        assert Segmenter(_Shape, SegmentConfig(cutoff="depth")).choose(curve, k) == expected


def test_penalty_weight_in_the_cutoff_option_and_errors():
    from attnsim.errors import UserError
    from attnsim.segment.segmenter import SegmentConfig, Segmenter, gap_scores

    cfg = SegmentConfig(cutoff="penalty:0.8")
    assert (cfg.cutoff, cfg.penalty) == ("penalty", 0.8)
    with pytest.raises(UserError, match="penalty:WEIGHT"):
        SegmentConfig(cutoff="penalty:lots")
    with pytest.raises(UserError, match="is not penalty"):
        SegmentConfig(cutoff="bic")
    vectors, _ = planted_text(1)
    with pytest.raises(ValueError, match="sentence vectors"):
        Segmenter(_Shape, SegmentConfig()).choose(gap_scores(vectors, 4))
