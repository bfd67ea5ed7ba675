"""Per-block counting for the reduce: high pairs of one block of windows -> a mergeable `Partial`.

Pure numpy + Polars over arrays; no store, no Dask. Definitions (docs/design.md, Statistics):

* real token: a non-padding, non-special position (sentence_id >= 0);
* a pair (i, j) is ordered, i != j, within one window; a *high* pair has i real and j a valid
  (non-padding) token that is among i's top k (mode `topk`) or whose S[i, j] is above the head's
  threshold (mode `quantile`);
* distance, same-sentence and repetition statistics use high pairs whose j is real too
  ("real high pairs"); separator share and anchors use all high pairs (j may be [CLS]/[SEP]).

Example::

    part = block_partial(tokens, topk_index=idx, attention_mass=mass, classes=cls, n_boot=200, seed=0, start=0)
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import polars as pl

# Per-window statistics summed per layer, for the Poisson bootstrap (order matters: see statistics.py).
WINDOW_STATS = ("n_high", "sum_distance", "n_same", "n_rep", "n_sep", "n_high_all")
PAIR_STATS = ("n_all", "n_same_all", "n_rep_all")


@dataclass
class Partial:
    """Counts over some windows; partials merge by addition, so any grouping gives the same totals."""

    n_windows: int
    n_high_all: np.ndarray  # (L, H) high pairs with i real
    n_sep: np.ndarray  # (L, H) ... whose target j is [CLS], [SEP] or sentence-final punctuation
    n_high: np.ndarray  # (L, H) real high pairs (i and j real)
    sum_distance: np.ndarray  # (L, H) sum of |i - j| over real high pairs
    n_same: np.ndarray  # (L, H) real high pairs within one sentence
    n_rep: np.ndarray  # (L, H) real high pairs of the same token id
    hist_high: np.ndarray  # (L, H, T) real high pairs by distance d = |i - j|
    n_all_d: np.ndarray  # (T,) all ordered real pairs by distance
    pair_totals: np.ndarray  # (3,) n_all, n_same_all, n_rep_all over all ordered real pairs
    mass_sum: np.ndarray  # (L, H, C) sum over windows of the attention mass
    mass_windows: np.ndarray  # (L, H) windows with a finite attention mass
    boot: np.ndarray  # (B, L, S + 3) Poisson-weighted sums of WINDOW_STATS per layer, then PAIR_STATS
    anchors: pl.DataFrame  # layer, head, token, count: targets of high pairs
    token_counts: pl.DataFrame  # token, count: every valid token of the windows

    def __add__(self, other: "Partial") -> "Partial":
        merged = {}
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, pl.DataFrame):  # row order is arbitrary until `sorted` (integer sums: exact)
                keys = [c for c in a.columns if c != "count"]
                merged[f.name] = pl.concat([a, b]).group_by(keys).agg(pl.col("count").sum())
            else:
                merged[f.name] = a + b
        return Partial(**merged)

    def sorted(self) -> "Partial":
        """The same counts with the sparse tables in key order: one sort for the whole reduce, not
        one per merge (sorting at every merge was 0.5 s of a 6 s single-threaded reduce)."""
        tables = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, pl.DataFrame):
                tables[f.name] = value.sort([c for c in value.columns if c != "count"])
        return replace(self, **tables)


def all_pair_counts(input_ids: np.ndarray, sentence_id: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ordered real pairs per window: N_all(d) summed over windows (T,), and per window (W, 3)
    n_all, n_same_all (same sentence), n_rep_all (same token id)."""
    w, t = input_ids.shape
    real = sentence_id >= 0  # (W, T)
    n_all_d = np.zeros(t, np.int64)
    r = real.astype(np.int64)
    for d in range(1, t):  # two ordered pairs per unordered pair at distance d
        n_all_d[d] = 2 * int((r[:, :-d] * r[:, d:]).sum())
    per_window = np.zeros((w, 3), np.int64)
    n = r.sum(1)
    per_window[:, 0] = n * (n - 1)
    for row in range(w):
        m = real[row]
        _, c = np.unique(sentence_id[row, m], return_counts=True)
        per_window[row, 1] = int((c * (c - 1)).sum())
        _, c = np.unique(input_ids[row, m], return_counts=True)
        per_window[row, 2] = int((c * (c - 1)).sum())
    return n_all_d, per_window


def topk_pairs(topk_index: np.ndarray, sentence_id: np.ndarray):
    """Flat high pairs (window, layer, head, i, j) from top-k neighbour indices (W, L, H, T, k)."""
    w, l, h, t, k = topk_index.shape
    keep = (topk_index >= 0) & (sentence_id >= 0)[:, None, None, :, None]  # (W, L, H, T, k)
    j = topk_index[keep].astype(np.int32)

    # Each coordinate is a small broadcast grid picked by the same mask: no integer division, which
    # numpy does not vectorise (unravelling flat positions cost twice as much, 72 vs 34 ms a block).
    def axis(n: int, position: int) -> np.ndarray:
        grid = np.arange(n, dtype=np.int32).reshape((n,) + (1,) * (4 - position))
        return np.broadcast_to(grid, keep.shape)[keep]

    return axis(w, 0), axis(l, 1), axis(h, 2), axis(t, 3), j


def threshold_pairs(s: np.ndarray, threshold: np.ndarray, sentence_id_row: np.ndarray, window: int):
    """Flat high pairs of one window from its dense S (L, H, T, T): S[i, j] > threshold[l, h]."""
    t = s.shape[-1]
    real_i = (sentence_id_row >= 0)[None, None, :, None]
    off_diag = ~np.eye(t, dtype=bool)[None, None]
    with np.errstate(invalid="ignore"):
        keep = (s > threshold[:, :, None, None]) & real_i & off_diag & np.isfinite(s)
    lay, head, i, j = np.nonzero(keep)
    return np.full(len(i), window), lay, head, i, j


def block_partial(
    input_ids: np.ndarray,
    sentence_id: np.ndarray,
    length: np.ndarray,
    pairs: tuple,
    attention_mass: np.ndarray | None,
    classes: dict,
    shape: tuple[int, int],
    n_boot: int,
    seed: int,
    start: int,
) -> Partial:
    """Count one block of windows. pairs: flat (window, layer, head, i, j) high pairs."""
    w, t = input_ids.shape
    n_layers, n_heads = shape
    win, lay, head, i, j = (np.asarray(a, np.int32) for a in pairs)
    lh = lay * n_heads + head  # flat (layer, head) index
    size = n_layers * n_heads

    # 1-D gathers at flat positions (window * T + token) are several times faster than 2-D ones.
    ids_flat, sid_flat = input_ids.ravel(), sentence_id.ravel()
    src, dst = win * t + i, win * t + j
    target = ids_flat[dst]
    sid_j = sid_flat[dst]
    separators = np.zeros(int(max(target.max(initial=0), *classes["final_punct"], classes["cls"], classes["sep"])) + 1, bool)
    separators[[classes["cls"], classes["sep"], *classes["final_punct"]]] = True
    is_sep = separators[target] | (sid_j < 0)
    real_j = sid_j >= 0
    dist = np.abs(i - j)
    same = real_j & (sid_flat[src] == sid_j)
    rep = real_j & (ids_flat[src] == target)

    # The four flags of a pair as bits of one code, so that a single bincount over (key, code)
    # counts every flag per key at once instead of one masked pass per flag.
    # In uint8: shifting the bool arrays directly would make three int64 temporaries (75 ms a block).
    code = real_j.view(np.uint8) | (same.view(np.uint8) << 1) | (rep.view(np.uint8) << 2) | (is_sep.view(np.uint8) << 3)
    # Pairs that are not real land in an extra last bin of the distance histograms, dropped there.
    dist_key = np.where(real_j, dist, t)
    distances = np.arange(t, dtype=np.float64)

    def flag_counts(key: np.ndarray, n_keys: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Flag counts per key, and the (key, distance) histogram of real pairs, (n_keys, T)."""
        # One bincount over (key, code, distance): both marginals come out of the same pass.
        if n_keys * 16 * (t + 1) >= 2**31:  # huge units: int32 joint keys would overflow
            key = key.astype(np.int64)
        joint = np.bincount((key * 16 + code) * (t + 1) + dist_key, minlength=n_keys * 16 * (t + 1)).reshape(n_keys, 16, t + 1)
        by_code = joint.sum(2)  # (n_keys, 16)
        has = lambda bit: by_code[:, [c for c in range(16) if c >> bit & 1]].sum(1)  # noqa: E731
        hist = joint.sum(1)[:, :t]  # (n_keys, T)
        # The distance sum is read off the histogram: an integer bincount, not a float-weighted one.
        flags = {"n_high_all": by_code.sum(1), "n_high": has(0), "n_same": has(1), "n_rep": has(2), "n_sep": has(3), "sum_distance": hist @ distances}
        return flags, hist

    head_flags, hist = flag_counts(lh, size)
    heads = {k: v.reshape(n_layers, n_heads) for k, v in head_flags.items()}
    hist = hist.reshape(n_layers, n_heads, t)
    n_all_d, window_pairs = all_pair_counts(input_ids, sentence_id)

    # Per-window, per-layer sums for the bootstrap: (W, L, S).
    per_wl, _ = flag_counts(win * n_layers + lay, w * n_layers)
    stats = np.stack([per_wl[name] for name in WINDOW_STATS], axis=-1).reshape(w, n_layers, len(WINDOW_STATS))
    per_window = np.concatenate([stats, np.broadcast_to(window_pairs[:, None, :], (w, n_layers, 3))], axis=-1)
    # Poisson(1) weights per window, seeded by the block's first window: the same for any grouping.
    weights = np.random.default_rng([seed, start]).poisson(1.0, size=(n_boot, w)).astype(np.float64)
    boot = np.einsum("bw,wls->bls", weights, per_window.astype(np.float64))

    if attention_mass is None:
        mass_sum = np.zeros((n_layers, n_heads, 8))
        mass_windows = np.zeros((n_layers, n_heads), np.int64)
    else:
        finite = np.isfinite(attention_mass)
        mass_sum = np.where(finite, attention_mass, 0.0).astype(np.float64).sum(0)
        mass_windows = finite.all(-1).sum(0)

    # Anchor and token counts: one bincount over (head, token) keys, kept sparse for the merge.
    vocab = int(max(input_ids.max(initial=0), target.max(initial=0))) + 1
    counts = np.bincount(lh * vocab + target, minlength=size * vocab)
    nz = np.flatnonzero(counts)
    anchors = pl.DataFrame(
        {
            "layer": (nz // vocab // n_heads).astype(np.int32),
            "head": (nz // vocab % n_heads).astype(np.int32),
            "token": (nz % vocab).astype(np.int32),
            "count": counts[nz].astype(np.int64),
        }
    )
    token_counts = np.bincount(input_ids[input_ids >= 0], minlength=vocab)
    nz = np.flatnonzero(token_counts)
    tokens = pl.DataFrame({"token": nz.astype(np.int32), "count": token_counts[nz].astype(np.int64)})
    return Partial(
        n_windows=w,
        n_high_all=heads["n_high_all"],
        n_sep=heads["n_sep"],
        n_high=heads["n_high"],
        sum_distance=heads["sum_distance"],
        n_same=heads["n_same"],
        n_rep=heads["n_rep"],
        hist_high=hist,
        n_all_d=n_all_d,
        pair_totals=window_pairs.sum(0),
        mass_sum=mass_sum,
        mass_windows=mass_windows,
        boot=boot,
        anchors=anchors,
        token_counts=tokens,
    )
