"""The null model of the reduce: a random head, whose expectations are computed exactly per window.

The random head draws, for each real source token i, min(k, n - 1) distinct neighbours uniformly from
exactly the candidates the top-k chooses from: the n - 1 valid (non-padding) tokens j != i of i's
window, [CLS] and [SEP] included. Every candidate pair (i, j) of a window of n valid tokens is then
high with the same probability c = min(k, n - 1) / (n - 1), so the expected count of any kind of
high pair is c times the number of candidate pairs of that kind, summed over windows as the real
statistic is summed. No sampling: each expectation is a closed form of the window's length,
positions, sentence ids and token ids. In `quantile` mode a head's high pairs are not a fixed number
per token, so the null there is a uniform draw over all candidate pairs (c = 1 per pair, rescaled to
the head's own count where a count, not a share, is compared: see statistics.decay_table).

Short windows give every pair a higher c and hold only short distances, which is why an unweighted
share of all pairs (the old "enrichment") is not 1 for a random head and these expectations are.

Token classes are by position, not by id alone: [CLS] and [SEP] by id, and *sentence-final
punctuation* is a '.', '!', '?' (etc.) token after which no other non-punctuation token of its own
sentence follows ("U.S." or "3.5" hold a '.' that does not end a sentence; `end."` does end one).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

# Chance numerators per window, weighted by c (order fixed: the bootstrap array's columns).
CHANCE_STATS = ("e_high", "e_sum_distance", "e_same", "e_rep", "e_separator", "e_high_all", "e_cls", "e_sep", "e_final")
# Target classes of a high pair (two bits of a pair's code): none, [CLS], [SEP], sentence-final punctuation.
CLASS_NONE, CLASS_CLS, CLASS_SEP, CLASS_FINAL = 0, 1, 2, 3


@dataclass
class WindowNull:
    """The random head's inputs for one block of W windows of T positions."""

    weight: np.ndarray  # (W,) probability c that one candidate pair is high
    chance: np.ndarray  # (W, len(CHANCE_STATS)) c-weighted candidate-pair counts
    pair_counts: np.ndarray  # (W, 3) unweighted ordered real pairs: all, same sentence, same token id
    n_all_d: np.ndarray  # (W, T) ordered real pairs by distance d
    p_same_d: np.ndarray  # (W, T) share of those pairs that lie in one sentence (0 where none)
    token_class: np.ndarray  # (W, T) uint8 CLASS_* of each position
    indegree: pl.DataFrame  # token, expected: the random head's expected high pairs pointing at each token id
    mass_chance: np.ndarray  # (W, C) attention mass per category under uniform attention over valid keys


def _lookup(ids, vocab: int) -> np.ndarray:
    table = np.zeros(vocab, bool)
    table[np.asarray(list(ids), np.int64)] = True
    return table


def token_classes_by_position(input_ids: np.ndarray, sentence_id: np.ndarray, classes: dict) -> tuple[np.ndarray, np.ndarray]:
    """(W, T) uint8 CLASS_* per position, and (W, T) bool: punctuation by id (the kernel's `punct`)."""
    w, t = input_ids.shape
    vocab = int(max(input_ids.max(initial=0), classes["cls"], classes["sep"], *classes["punct"], *classes["final_punct"], 0)) + 1
    safe = np.maximum(input_ids, 0)
    valid = input_ids >= 0
    real = sentence_id >= 0
    punct = _lookup(classes["punct"], vocab)[safe] & valid
    final_id = _lookup(classes["final_punct"], vocab)[safe] & real
    # First position after i that is not a real punctuation token: the sentence continues there or not.
    pos = np.where(punct & real, t, np.arange(t)[None, :])  # (W, T)
    first_from = np.minimum.accumulate(pos[:, ::-1], axis=1)[:, ::-1]  # first non-punctuation at or after i
    after = np.concatenate([first_from[:, 1:], np.full((w, 1), t)], axis=1)  # ... strictly after i
    sid_after = np.where(after < t, np.take_along_axis(sentence_id, np.minimum(after, t - 1), 1), -1)
    cls = np.zeros((w, t), np.uint8)
    cls[final_id & (sid_after != sentence_id)] = CLASS_FINAL
    cls[valid & (input_ids == classes["sep"])] = CLASS_SEP
    cls[valid & (input_ids == classes["cls"])] = CLASS_CLS
    return cls, punct


def pairs_by_distance(sentence_id: np.ndarray, input_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ordered real pairs per window: N_all(d), N_same(d) (W, T), and (W, 3) all, same sentence, same id."""
    w, t = sentence_id.shape
    real = sentence_id >= 0
    n_all_d = np.zeros((w, t), np.int64)
    n_same_d = np.zeros((w, t), np.int64)
    for d in range(1, t):  # two ordered pairs per unordered pair at distance d
        both = real[:, :-d] & real[:, d:]
        n_all_d[:, d] = 2 * both.sum(1)
        n_same_d[:, d] = 2 * (both & (sentence_id[:, :-d] == sentence_id[:, d:])).sum(1)
    counts = np.zeros((w, 3), np.int64)
    n = real.sum(1)
    counts[:, 0] = n * (n - 1)
    counts[:, 1] = n_same_d.sum(1)
    for row in range(w):
        _, c = np.unique(input_ids[row, real[row]], return_counts=True)
        counts[row, 2] = int((c * (c - 1)).sum())
    return n_all_d, n_same_d, counts


def pair_weight(length: np.ndarray, k: int | None) -> np.ndarray:
    """c per window: min(k, n - 1) / (n - 1) for top-k (k None: quantile mode, c = 1); 0 below 2 tokens."""
    n = length.astype(np.float64)
    if k is None:
        return (n > 1).astype(np.float64)
    return np.where(n > 1, np.minimum(k, n - 1) / np.maximum(n - 1, 1), 0.0)


def window_null(input_ids, sentence_id, length, classes: dict, k: int | None) -> WindowNull:
    """Everything the random head needs from one block's token arrays; see the module docstring."""
    w, t = input_ids.shape
    valid = np.arange(t)[None, :] < length[:, None]
    real = sentence_id >= 0
    c = pair_weight(length, k)
    token_class, punct = token_classes_by_position(input_ids, sentence_id, classes)
    n_all_d, n_same_d, pair_counts = pairs_by_distance(sentence_id, input_ids)
    n, r = length.astype(np.float64), real.sum(1).astype(np.float64)
    count = lambda m: m.sum(1).astype(np.float64)  # noqa: E731
    n_cls, n_sep, n_final = (count(valid & (token_class == cl)) for cl in (CLASS_CLS, CLASS_SEP, CLASS_FINAL))
    # Candidates of a class for all real sources: r * (tokens of the class) minus the pairs i = j.
    e_cls, e_sep, e_final = r * n_cls, r * n_sep, r * n_final - n_final
    dist = np.arange(t, dtype=np.float64)
    raw = {
        "e_high": pair_counts[:, 0],
        "e_sum_distance": n_all_d @ dist,
        "e_same": pair_counts[:, 1],
        "e_rep": pair_counts[:, 2],
        "e_separator": e_sep + e_final,
        "e_high_all": r * np.maximum(n - 1, 0),
        "e_cls": e_cls,
        "e_sep": e_sep,
        "e_final": e_final,
    }
    chance = np.stack([c * np.asarray(raw[name], np.float64) for name in CHANCE_STATS], axis=-1)  # (W, S_chance)
    with np.errstate(invalid="ignore", divide="ignore"):
        p_same_d = np.where(n_all_d > 0, n_same_d / np.maximum(n_all_d, 1), 0.0)
    # Expected in-degree of each valid position j: c * (real sources other than j itself).
    weight = (c[:, None] * (r[:, None] - real)).astype(np.float64)[valid]
    ids = input_ids[valid]
    expected = np.bincount(ids, weights=weight, minlength=int(ids.max(initial=0)) + 1)
    nz = np.flatnonzero(expected)
    indegree = pl.DataFrame({"token": nz.astype(np.int32), "expected": expected[nz]})
    mass = uniform_mass(valid, real, punct, token_class, pair_counts[:, 1], n, r)
    return WindowNull(c, chance, pair_counts, n_all_d, p_same_d, token_class, indegree, mass)


def uniform_mass(valid, real, punct, token_class, n_same_all, n, r) -> np.ndarray:
    """(W, C) attention mass per MASS_CATEGORIES category if each real query attended uniformly to the
    n valid keys of its window (itself included, as softmax does); windows without real tokens: NaN."""
    t = valid.shape[1]
    pos = np.arange(t)[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        per_real = lambda m: (m & real).sum(1) / (r * n)  # noqa: E731  mean over real queries of (count)/n
        mass = np.stack(
            [
                (valid & (token_class == CLASS_CLS)).sum(1) / n,
                (valid & (token_class == CLASS_SEP)).sum(1) / n,
                (valid & punct).sum(1) / n,
                1.0 / n,
                per_real(pos > 0),
                per_real(pos < n[:, None] - 1),
                # sum over real i of its sentence's size = sum over sentences of size^2 = same pairs + r
                (n_same_all + r) / (r * n),
                np.log(n),
            ],
            axis=-1,
        )
    return np.where((r > 0)[:, None], mass, np.nan)
