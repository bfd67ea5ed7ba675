"""The ``penalty`` count rule: the exact optimum of within-segment spread plus a price per boundary.

The ``depth`` rule keeps valleys of the cohesion curve one at a time, each judged against a bar
that does not know about the others. The penalised rule scores whole boundary sets B and keeps the
cheapest one:

    cost(B) = sum over segments of within(segment) + beta · |B|,   beta = weight · ln(n)

where within(segment) is the sum of squared distances of the segment's sentence vectors from their
mean (`sentence_features`: each head's vector at unit length, all scaled so a sentence carries unit
variance; one segment of the whole text costs n). No segment is shorter than ``least`` sentences.
It is solved exactly by dynamic programming over segment ends (`optimal_partition`, O(n²) steps of
O(n·dim) for n sentences, memory O(n·dim)), so a boundary is kept only when it pays for itself
against every other arrangement. Why ln(n): a boundary in noise still lowers the spread by about the
log of the number of places it could go (the BIC penalty); a price that does not grow with n put 2
to 4 times too many boundaries in 200-sentence articles, and one that grows like √n or n starved
the short documents (README, "How the defaults were chosen", has the grid).

Example::

    cuts = penalised_boundaries(vectors, weight=0.435, least=2)   # vectors: (sentence, head, dim)
"""

from __future__ import annotations

import numpy as np


def optimal_partition(n: int, beta: float, least: int, *, segment_cost=None, gap_cost: np.ndarray | None = None) -> list[int]:
    """Gaps g (a segment ends after sentence g) minimising the penalised cost over all boundary sets.

    ``segment_cost[s, t]``: cost of a segment of sentences s..t-1 (s may be a slice; an (n+1, n+1)
    array or a `WithinCost`); ``gap_cost[g]``: extra price of a boundary at gap g, (n-1,). Either may
    be None (zero). Every segment holds at least ``least`` sentences; a text shorter than 2·least is
    one segment.
    """
    least = max(int(least), 1)
    if n < 2 * least:
        return []
    best = np.full(n + 1, np.inf)
    best[0] = 0.0
    start = np.zeros(n + 1, np.int64)  # first sentence of the last segment of the best split of 0..t-1
    extra = np.zeros(n)  # price of a boundary before sentence s (s > 0)
    extra[1:] = beta + (np.asarray(gap_cost, np.float64) if gap_cost is not None else 0.0)
    for t in range(least, n + 1):
        s = slice(0, t - least + 1)
        total = best[s] + extra[s] + (segment_cost[s, t] if segment_cost is not None else 0.0)
        start[t] = int(np.argmin(total))
        best[t] = total[start[t]]
    cuts, t = [], n
    while t > 0:
        t = int(start[t])
        if t > 0:
            cuts.append(t - 1)
    return sorted(cuts)


class WithinCost:
    """[s, t] = sum of squared distances of rows s..t-1 of ``features`` from their mean (s: int or slice).

    From prefix sums: |x|² summed minus |sum x|² / length; nothing n x n is stored.
    """

    def __init__(self, features: np.ndarray):
        x = np.asarray(features, np.float64)
        x = x - x.mean(0) if len(x) else x  # centred: the prefix sums stay small, the differences keep their digits
        self.prefix = np.concatenate([np.zeros((1, x.shape[1])), np.cumsum(x, 0)])
        self.squares = np.concatenate([[0.0], np.cumsum((x * x).sum(1))])
        self.norms = (self.prefix * self.prefix).sum(1)
        self.index = np.arange(len(self.prefix))

    def __getitem__(self, key):
        s, t = key
        length = t - self.index[s]
        spread = self.norms[t] + self.norms[s] - 2 * (self.prefix[s] @ self.prefix[t])  # |P_t - P_s|²
        cost = self.squares[t] - self.squares[s] - spread / np.maximum(length, 1)
        return np.where(length > 0, np.maximum(cost, 0.0), 0.0)


def sentence_features(vectors: np.ndarray) -> np.ndarray:
    """(sentence, head·dim) features: each head's sentence vector at unit length, scaled to unit variance.

    vectors: (sentence, head, dim) per-sentence sums (see `attnsim.segment.features`). Each head
    counts equally, as in the cohesion curve; the whole is scaled so the mean squared distance of a
    sentence from the text's mean is 1, so one segment of n sentences costs n whatever the model.
    """
    v = np.asarray(vectors, np.float64)
    v = v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)
    x = v.reshape(len(v), -1)
    spread = float(((x - x.mean(0)) ** 2).sum(1).mean()) if len(x) else 0.0
    return x / np.sqrt(spread) if spread > 0 else x * 0.0


def penalised_boundaries(vectors: np.ndarray, weight: float, least: int) -> list[int]:
    """The ``penalty`` cutoff: the optimal boundary set at a price of ``weight`` · ln(n) per boundary."""
    n = len(vectors)
    if n < 2:
        return []
    return optimal_partition(n, weight * np.log(n), least, segment_cost=WithinCost(sentence_features(vectors)))
