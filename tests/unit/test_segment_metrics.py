"""Segmentation without a model: Pk / WindowDiff, Choi-style test sets, gap scores and boundaries by hand."""

from __future__ import annotations

import numpy as np
import pytest

from attnsim.errors import UserError
from attnsim.segment.evaluate import (
    as_string,
    build_samples,
    make_texttiling,
    pk_windowdiff,
    random_boundaries,
    texttiling_boundaries,
    window_size,
)
from attnsim.segment.segmenter import choose_boundaries, depth_scores, gap_cohesion, gap_scores, least_segment

# --- Pk and WindowDiff ------------------------------------------------------------------------
# 12 sentences, true segments 0-5 | 6-11 (a boundary after sentence 5): k = round(12 / (2 * 2)) = 3,
# so there are 12 - 3 + 1 = 10 probe windows [i, i+3), i = 0..9; the reference has its boundary in
# the windows i = 3, 4, 5.


@pytest.mark.parametrize(
    "predicted, expected_pk, expected_wd",
    [
        ([5], 0.0, 0.0),  # exact
        ([], 0.3, 0.3),  # missed: wrong in the 3 windows that hold the true boundary
        ([6], 0.2, 0.2),  # one off: windows {4, 5, 6} vs {3, 4, 5} disagree at i = 3 and i = 6
        ([2, 5], 0.3, 0.3),  # a false boundary after 2 sits alone in windows i = 0, 1, 2
        # a near-miss double: Pk only sees "some boundary" (differs at i = 2), WindowDiff counts them:
        # i = 2 (0 vs 1), i = 3 and i = 4 (1 vs 2) differ.
        ([4, 5], 0.1, 0.3),
    ],
)
def test_pk_windowdiff_hand_counted(predicted, expected_pk, expected_wd):
    pk, wd = pk_windowdiff(12, [5], predicted)
    assert pk == pytest.approx(expected_pk)
    assert wd == pytest.approx(expected_wd)


def test_window_size_is_half_the_mean_true_segment():
    assert window_size(12, [5]) == 3  # 2 segments of 6
    assert window_size(40, list(range(3, 39, 4))) == 2  # 10 segments of 4
    assert window_size(100, [9, 19, 29, 39, 49, 59, 69, 79, 89]) == 5
    assert window_size(3, [0, 1]) == 1  # never 0


def test_as_string_marks_segment_ends_and_rejects_the_last_sentence():
    assert as_string(6, [1, 3]) == "010100"
    with pytest.raises(ValueError):
        as_string(6, [5])


# --- Choi-style test sets ---------------------------------------------------------------------


def _documents(count=30, longest=14):
    """Document d has 3 + d % (longest - 2) sentences tagged with their document and position."""
    return [[f"d{d}s{i}." for i in range(3 + d % (longest - 2))] for d in range(count)]


def test_samples_are_deterministic_for_a_seed_and_prefix_stable():
    docs = _documents()
    a = build_samples(docs, (3, 11), 6, seed=7, subset=3)
    b = build_samples(docs, (3, 11), 6, seed=7, subset=3)
    assert [s.sentences for s in a] == [s.sentences for s in b]
    assert [s.boundaries for s in a] == [s.boundaries for s in b]
    assert [s.sentences for s in build_samples(docs, (3, 11), 3, seed=7, subset=3)] == [s.sentences for s in a[:3]]
    assert [s.sentences for s in build_samples(docs, (3, 11), 6, seed=8, subset=3)] != [s.sentences for s in a]


@pytest.mark.parametrize("n_range", [(3, 5), (6, 8), (9, 11), (3, 11)])
def test_samples_follow_choi(n_range):
    docs = _documents()
    for sample in build_samples(docs, n_range, 20, seed=0):
        assert len(sample.documents) == 10
        assert len(set(sample.documents)) == 10, "two segments of one document in a sample"
        ends = [*sample.boundaries, len(sample.sentences) - 1]
        starts = [0, *(g + 1 for g in sample.boundaries)]
        for doc, a, b in zip(sample.documents, starts, ends):
            piece = sample.sentences[a : b + 1]
            assert n_range[0] <= len(piece) <= n_range[1]
            assert piece == docs[doc][: len(piece)], "a segment is not the start of its document"
            assert {s.split("s")[0] for s in piece} == {f"d{doc}"}


def test_too_few_long_documents_is_a_user_error():
    with pytest.raises(UserError, match="at least 9 sentences"):
        build_samples(_documents(count=8), (9, 11), 1, seed=0)


def test_random_baseline_places_the_true_number_of_distinct_gaps():
    rng = np.random.default_rng(0)
    for _ in range(20):
        b = random_boundaries(40, 9, rng)
        assert len(set(b)) == 9 and all(0 <= g < 39 for g in b) and b == sorted(b)


# --- gap scores and boundaries ----------------------------------------------------------------


def test_cohesion_is_the_cosine_of_block_sums():
    e1, e2 = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    v = np.stack([e1] * 4 + [e2] * 4)[:, None, :]  # (sentence, head, dim): two topics of 4 sentences
    c = gap_cohesion(v, block=2)[:, 0]
    # gap 3: e1+e1 vs e2+e2 -> 0; gap 2: e1+e1 vs e1+e2 -> 1/sqrt(2); gap 1: e1+e1 vs e1+e1 -> 1
    np.testing.assert_allclose(c, [1, 1, 2**-0.5, 0, 2**-0.5, 1, 1], atol=1e-12)
    assert int(np.argmin(gap_scores(v, 2))) == 3
    assert gap_scores(v[:1], 2).shape == (0,)


def test_heads_vote_equally_after_standardising():
    rng = np.random.default_rng(0)
    loud = rng.normal(size=(10, 1, 8)) * 100.0
    quiet = loud / 1000.0  # the same head scaled: the same standardised vote
    both = np.concatenate([loud, quiet], 1)
    np.testing.assert_allclose(gap_scores(both, 3), gap_scores(loud, 3), atol=1e-9)


def test_depth_scores_by_hand():
    s = np.array([1.0, 1.0, -2.0, 1.0, 1.0, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(depth_scores(s), [0, 0, 6, 0, 0, 1, 0, 0])
    # long climbs: from gap 3 left over 1, 2, 3 and right over 1, 2 -> 3 + 2; plateaus are climbed too
    np.testing.assert_allclose(depth_scores(np.array([3.0, 2, 1, 0, 1, 2])), [0, 1, 2, 5, 1, 0])
    np.testing.assert_allclose(depth_scores(np.array([2.0, 1, 1, 2])), [0, 2, 2, 0])


def test_boundaries_cutoff_and_given_count():
    s = np.array([1.0, 1.0, -2.0, 1.0, 1.0, 0.5, 1.0, 1.0])
    # valley depths 6 (gap 2) and 1 (gap 5): Hearst's cutoff = 3.5 - 2.5 / 2 = 2.25 keeps only gap 2
    assert choose_boundaries(s, cutoff="hearst") == [2]
    assert choose_boundaries(s, n_segments=3) == [2, 5]
    assert choose_boundaries(s, n_segments=1) == []
    assert choose_boundaries(np.zeros(6)) == []  # flat: no valley has depth


def test_depth_cutoff_in_standard_deviations_of_the_curve():
    s = np.array([1.0, 1.0, -2.0, 1.0, 1.0, 0.5, 1.0, 1.0])
    # mean 4.5 / 8 = 0.5625; squared deviations 6 x 0.4375^2 + 2.5625^2 + 0.0625^2 = 7.71875;
    # sigma = sqrt(7.71875 / 8) = 0.98226. Valley depths 6 and 1 (see above).
    sigma = (7.71875 / 8) ** 0.5
    assert choose_boundaries(s, threshold=1.0) == [2, 5]  # 1 >= 0.982
    assert choose_boundaries(s, threshold=1.2) == [2]  # 1 < 1.179 <= 6
    assert choose_boundaries(s, threshold=6 / sigma + 1e-6) == []
    assert choose_boundaries(s, threshold=6 / sigma - 1e-6) == [2]


def test_min_fraction_grows_the_least_segment_with_the_text():
    assert [least_segment(n, 2, 0.05) for n in (10, 40, 200)] == [2, 2, 10]
    s = np.array([1.0, 1.0, -2.0, 1.0, 1.0, 0.5, 1.0, 1.0])  # 9 sentences
    # fraction 0.4: at least round(3.6) = 4 sentences; gap 2 leaves 3 before it, gap 5 leaves 3 after
    # it, so the first gap that fits, in order (depth 0, then score 1, then position), is gap 3.
    assert least_segment(9, 2, 0.4) == 4
    assert choose_boundaries(s, 3, 2, fraction=0.4) == [3]
    assert choose_boundaries(s, None, 2, threshold=0.5, fraction=0.4) == []  # both valleys too close to an edge


def test_min_segment_keeps_boundaries_apart():
    s = np.array([1.0, -1.0, 1.0, -0.9, 1.0, 1.0, 1.0])
    assert choose_boundaries(s, n_segments=3, min_segment=1) == [1, 3]
    # min_segment=3: gap 1 would leave a 2-sentence first segment; after gap 3 no other gap leaves
    # 3 sentences on both sides (8 sentences: 0-3 | 4-7), so the count cannot be reached.
    assert choose_boundaries(s, n_segments=3, min_segment=3) == [3]


# --- TextTiling adapter -----------------------------------------------------------------------


class _FixedTiler:
    def __init__(self, pieces):
        self.pieces = pieces

    def tokenize(self, text):
        assert "".join(self.pieces) == text
        return self.pieces


def test_texttiling_segments_map_to_sentence_gaps():
    sentences = ["A one.", "B two.", "C three.", "D four.", "E five."]
    text = "\n\n".join(sentences)
    cut1, cut2 = text.index("\n\nC"), text.index("\n\nE")
    tiler = _FixedTiler([text[:cut1], text[cut1:cut2], text[cut2:]])
    assert texttiling_boundaries(sentences, tiler) == [1, 3]


def test_real_texttiling_runs_offline_and_returns_valid_gaps():
    topics = ["volcano lava ash eruption crater", "football goal striker match league", "bank loan interest rate credit"]
    sentences = [f"The {' '.join(np.random.default_rng(i).permutation(t.split()))} story number {i}." for t in topics for i in range(12)]
    gaps = texttiling_boundaries(sentences, make_texttiling())
    assert gaps == sorted(set(gaps)) and all(0 <= g < len(sentences) - 1 for g in gaps)
    assert texttiling_boundaries(["Too short."], make_texttiling()) == []
