"""Per-block counting for the reduce: high pairs of one block of windows -> a mergeable `Partial`.

Pure numpy + Polars over arrays; no store, no Dask. Definitions (docs/design.md, Statistics):

* real token: a non-padding, non-special position (sentence_id >= 0);
* a pair (i, j) is ordered, i != j, within one window; a *high* pair has i real and j a valid
  (non-padding) token that is among i's top k (mode `topk`) or whose S[i, j] is above the head's
  threshold (mode `quantile`);
* distance, same-sentence and repetition statistics use high pairs whose j is real too
  ("real high pairs"); the class shares ([CLS], [SEP], sentence-final punctuation by position) and
  anchors use all high pairs (j may be [CLS]/[SEP]);
* beside each count, the random head's expectation (chance.py), and per window and head the
  distance-matched same-sentence expectation sum_d N_high(d) * p_same(d).

Example::

    part = block_partial(ids, sid, length, topk_pairs(idx, sid), mass, classes, (6, 12), 200, 0, 0, k=8)
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import polars as pl

from attnsim.reduce.chance import CHANCE_STATS, WindowNull, window_null
from attnsim.reduce.norms import norm_table

# Observed sums per (window, layer, head), in this order: the columns of `Partial.heads` and of
# the bootstrap array, which continues with PAIR_STATS and CHANCE_STATS (statistics.py reads it).
WINDOW_STATS = (
    "n_high",
    "sum_distance",
    "n_same",
    "n_rep",
    "n_separator",
    "n_high_all",
    "n_cls",
    "n_sep",
    "n_final",
    "matched_same",
)
PAIR_STATS = ("n_all", "n_same_all", "n_rep_all")
BOOT_STATS = WINDOW_STATS + PAIR_STATS + CHANCE_STATS
N_CODES = 32  # a pair's code: bit 0 j real, bit 1 same sentence, bit 2 same token id, bits 3-4 j's CLASS_*


@dataclass
class Partial:
    """Counts over some windows; partials merge by addition, so any grouping gives the same totals."""

    n_windows: int
    heads: np.ndarray  # (L, H, len(WINDOW_STATS)) observed sums; matched_same is a float expectation
    hist_high: np.ndarray  # (L, H, T) real high pairs by distance d = |i - j|
    n_all_d: np.ndarray  # (T,) all ordered real pairs by distance
    e_d: np.ndarray  # (T,) the random head's expected real high pairs by distance
    pair_totals: np.ndarray  # (3,) n_all, n_same_all, n_rep_all over all ordered real pairs
    chance: np.ndarray  # (len(CHANCE_STATS),) the random head's expected sums (chance.py)
    mass_sum: np.ndarray  # (L, H, C) sum over windows of the attention mass
    mass_windows: np.ndarray  # (L, H) windows with a finite attention mass
    mass_chance: np.ndarray  # (C,) sum over windows with real tokens of the uniform-attention mass
    mass_chance_windows: int
    boot: np.ndarray  # (B, L, len(BOOT_STATS)) Poisson-weighted per-layer sums
    anchors: pl.DataFrame  # layer, head, token, count: targets of high pairs
    token_counts: pl.DataFrame  # token, count, expected: valid tokens, and the random head's in-degree
    norms: pl.DataFrame  # layer, head, token, norm_sum, n: ||v|| per token id (vectors tier only; else empty)

    def stat(self, name: str) -> np.ndarray:
        """(L, H) observed sum of one of WINDOW_STATS."""
        return self.heads[..., WINDOW_STATS.index(name)]

    def expected(self, name: str) -> float:
        """The random head's expected sum of one of CHANCE_STATS (the same for every head)."""
        return float(self.chance[CHANCE_STATS.index(name)])

    def __add__(self, other: "Partial") -> "Partial":
        merged = {}
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, pl.DataFrame):  # row order is arbitrary until `sorted`
                keys = [c for c in a.columns if c in KEYS]
                merged[f.name] = pl.concat([a, b]).group_by(keys).agg(pl.exclude(keys).sum())
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
                tables[f.name] = value.sort([c for c in value.columns if c in KEYS])
        return replace(self, **tables)


KEYS = ("layer", "head", "token")


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


def pack_codes(real_j, same, rep, token_class):
    """The code bits of N_CODES from bool arrays (broadcastable) and j's uint8 CLASS_*. In uint8:
    shifting the bool arrays directly would make int64 temporaries (75 ms a block)."""
    return real_j.view(np.uint8) | (same.view(np.uint8) << 1) | (rep.view(np.uint8) << 2) | (token_class << 3)


# Windows x T x T entries up to which `pair_codes` builds its code table (32 MiB of uint8).
CODE_TABLE_ENTRIES = 2**25


def pair_codes(input_ids, sentence_id, token_class, pairs):
    """Per high pair: its code (bits: see N_CODES) and its distance key (T for a pair whose j is not
    real), and j's token id. A pair's code depends only on (window, i, j), not on the head, and every
    (window, i, j) recurs in many heads: the codes of all of them are tabulated once per block and
    each pair reads one byte (2.5x faster than gathering both tokens' ids, sentences and classes per
    pair, RESULTS.md). Blocks too large for the table take the per-pair gathers."""
    w, t = input_ids.shape
    if w * t * t > CODE_TABLE_ENTRIES:
        return pair_codes_gathered(input_ids, sentence_id, token_class, pairs)
    win, _, _, i, j = pairs
    real_j = (sentence_id >= 0)[:, None, :]  # (W, 1, T): j is real
    same = (sentence_id[:, :, None] == sentence_id[:, None, :]) & real_j  # (W, T, T)
    rep = (input_ids[:, :, None] == input_ids[:, None, :]) & real_j
    table = pack_codes(real_j, same, rep, token_class[:, None, :])
    code = table.reshape(-1)[(win * t + i) * t + j]
    dist_key = np.where((code & 1).view(bool), np.abs(i - j), t)  # pairs that are not real land in a last bin, dropped
    return code, dist_key, input_ids.ravel()[win * t + j]


def pair_codes_gathered(input_ids, sentence_id, token_class, pairs):
    """`pair_codes` by gathering both tokens' ids, sentences and classes per pair (the reference)."""
    w, t = input_ids.shape
    win, _, _, i, j = pairs
    # 1-D gathers at flat positions (window * T + token) are several times faster than 2-D ones.
    ids_flat, sid_flat = input_ids.ravel(), sentence_id.ravel()
    src, dst = win * t + i, win * t + j
    sid_j = sid_flat[dst]
    real_j = sid_j >= 0
    same = real_j & (sid_flat[src] == sid_j)
    rep = real_j & (ids_flat[src] == ids_flat[dst])
    code = pack_codes(real_j, same, rep, token_class.ravel()[dst])
    dist_key = np.where(real_j, np.abs(i - j), t)
    return code, dist_key, ids_flat[dst]


def window_head_sums(code, dist_key, key, n_keys: int, null: WindowNull) -> tuple[np.ndarray, np.ndarray]:
    """Observed WINDOW_STATS per key = window * (L*H) + head (n_keys, S), and the distance histogram
    of real high pairs per key (n_keys, T). Two integer bincounts: one over codes, one over distances."""
    t = null.n_all_d.shape[1]
    if n_keys * max(N_CODES, t + 1) >= 2**31:  # huge units: int32 joint keys would overflow
        key = key.astype(np.int64)
    by_code = np.bincount(key * N_CODES + code, minlength=n_keys * N_CODES).reshape(n_keys, N_CODES)
    hist = np.bincount(key * (t + 1) + dist_key, minlength=n_keys * (t + 1)).reshape(n_keys, t + 1)[:, :t]
    codes = np.arange(N_CODES)
    has = lambda mask: by_code[:, mask].sum(1)  # noqa: E731
    cls_of = codes >> 3
    w = null.p_same_d.shape[0]
    # Expected same-sentence pairs at the head's own distances: sum_d N_high(w, d) * p_same(w, d).
    matched = np.einsum("wkt,wt->wk", hist.reshape(w, -1, t).astype(np.float64), null.p_same_d).ravel()
    stats = {
        "n_high": has(codes & 1 > 0),
        "sum_distance": hist @ np.arange(t, dtype=np.float64),
        "n_same": has(codes & 2 > 0),
        "n_rep": has(codes & 4 > 0),
        "n_separator": has(cls_of >= 2),
        "n_high_all": by_code.sum(1),
        "n_cls": has(cls_of == 1),
        "n_sep": has(cls_of == 2),
        "n_final": has(cls_of == 3),
        "matched_same": matched,
    }
    return np.stack([np.asarray(stats[name], np.float64) for name in WINDOW_STATS], axis=-1), hist


def bootstrap_sums(per_window: np.ndarray, null: WindowNull, n_boot: int, seed: int, start: int) -> np.ndarray:
    """(B, L, len(BOOT_STATS)) Poisson(1)-weighted window sums per layer; per_window is (W, L, H, S).
    Weights are seeded by the block's first window: the same replicates for any grouping of blocks."""
    w, n_layers = per_window.shape[:2]
    token_level = np.concatenate([null.pair_counts.astype(np.float64), null.chance], axis=-1)  # (W, 3 + S_chance)
    stats = np.concatenate([per_window.sum(2), np.broadcast_to(token_level[:, None, :], (w, n_layers, token_level.shape[1]))], -1)
    weights = np.random.default_rng([seed, start]).poisson(1.0, size=(n_boot, w)).astype(np.float64)
    return np.einsum("bw,wls->bls", weights, stats)


def anchor_table(lh, target, input_ids, null: WindowNull, shape) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Sparse (layer, head, token) -> count of high pairs, and token -> count, expected in-degree."""
    n_layers, n_heads = shape
    vocab = int(max(input_ids.max(initial=0), target.max(initial=0))) + 1
    # One bincount over (head, token) keys, kept sparse for the merge.
    counts = np.bincount(lh.astype(np.int64) * vocab + target, minlength=n_layers * n_heads * vocab)
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
    tokens = tokens.join(null.indegree, on="token", how="left").with_columns(pl.col("expected").fill_null(0.0))
    return anchors, tokens


def mass_sums(attention_mass, null: WindowNull, shape):
    """Sums over windows of the stored attention mass (L, H, C), its window count (L, H), and of the
    uniform-attention chance (C,) with its window count."""
    n_categories = null.mass_chance.shape[1]
    finite_chance = np.isfinite(null.mass_chance).all(-1)
    chance = null.mass_chance[finite_chance].sum(0)
    if attention_mass is None:
        return np.zeros(shape + (n_categories,)), np.zeros(shape, np.int64), chance, int(finite_chance.sum())
    finite = np.isfinite(attention_mass)
    mass_sum = np.where(finite, attention_mass, 0.0).astype(np.float64).sum(0)
    return mass_sum, finite.all(-1).sum(0), chance, int(finite_chance.sum())


def block_partial(
    input_ids,
    sentence_id,
    length,
    pairs,
    attention_mass,
    classes: dict,
    shape: tuple[int, int],
    n_boot: int,
    seed: int,
    start: int,
    k: int | None,
    vectors=None,
) -> Partial:
    """Count one block of windows. pairs: flat (window, layer, head, i, j) high pairs; k: the top-k's k
    (None in quantile mode), which fixes the random head's draw (chance.py); vectors: the block's
    head_vectors (W, L, H, T, d) where the store has them, for the anchors' norms (norms.py)."""
    w, t = input_ids.shape
    n_layers, n_heads = shape
    pairs = tuple(np.asarray(a, np.int32) for a in pairs)
    win, lay, head = pairs[:3]
    lh = lay * n_heads + head  # flat (layer, head) index
    null = window_null(input_ids, sentence_id, length, classes, k)
    code, dist_key, target = pair_codes(input_ids, sentence_id, null.token_class, pairs)
    per_key, hist = window_head_sums(code, dist_key, win * (n_layers * n_heads) + lh, w * n_layers * n_heads, null)
    per_window = per_key.reshape(w, n_layers, n_heads, len(WINDOW_STATS))
    anchors, tokens = anchor_table(lh, target, input_ids, null, shape)
    mass_sum, mass_windows, mass_chance, mass_chance_windows = mass_sums(attention_mass, null, shape)
    return Partial(
        n_windows=w,
        heads=per_window.sum(0),
        hist_high=hist.reshape(w, n_layers, n_heads, t).sum(0),
        n_all_d=null.n_all_d.sum(0),
        e_d=null.weight @ null.n_all_d,
        pair_totals=null.pair_counts.sum(0),
        chance=null.chance.sum(0),
        mass_sum=mass_sum,
        mass_windows=mass_windows,
        mass_chance=mass_chance,
        mass_chance_windows=mass_chance_windows,
        boot=bootstrap_sums(per_window, null, n_boot, seed, start),
        anchors=anchors,
        token_counts=tokens,
        norms=norm_table(vectors, input_ids),
    )
