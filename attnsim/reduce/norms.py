"""Norms of head output vectors per token id: is an anchor token a high-norm token?

A dot product S[i, j] = v_i . v_j favours targets j of large norm ||v_j|| whatever their direction
(Kobayashi et al. 2020, "Attention is not only a weight"), so an anchor of a `dot` run may be a token
whose vectors are long rather than one that heads relate to. Where the store has the `vectors` tier,
reduce sums ||v|| per (layer, head, token id) and the head's top anchor gets `top_anchor_norm_ratio`:
the anchor's mean norm over the mean norm of all the head's tokens (1 = an ordinary norm). A run with
`--similarity cosine` (norms divided out) is the control: an anchor that survives there is not a
norm effect.
"""

from __future__ import annotations

import numpy as np
import polars as pl

SCHEMA = {"layer": pl.Int32, "head": pl.Int32, "token": pl.Int32, "norm_sum": pl.Float64, "n": pl.Int64}


def empty_norms() -> pl.DataFrame:
    return pl.DataFrame(schema=SCHEMA)


def norm_table(vectors: np.ndarray | None, input_ids: np.ndarray) -> pl.DataFrame:
    """Sparse (layer, head, token) -> sum of ||v|| and count over the block's valid tokens.
    vectors: (W, L, H, T, d) head outputs, NaN on padding; None (no vectors tier): an empty table."""
    if vectors is None:
        return empty_norms()
    w, n_layers, n_heads, t, _ = vectors.shape
    norms = np.sqrt(np.square(vectors, dtype=np.float32).sum(-1))  # (W, L, H, T)
    valid = (input_ids >= 0)[:, None, None, :] & np.isfinite(norms)  # (W, L, H, T)
    vocab = int(input_ids.max(initial=0)) + 1
    lh = np.broadcast_to(np.arange(n_layers * n_heads).reshape(1, n_layers, n_heads, 1), valid.shape)[valid]
    ids = np.broadcast_to(input_ids[:, None, None, :], valid.shape)[valid].astype(np.int64)
    key = lh.astype(np.int64) * vocab + ids
    sums = np.bincount(key, weights=norms[valid].astype(np.float64), minlength=n_layers * n_heads * vocab)
    counts = np.bincount(key, minlength=n_layers * n_heads * vocab)
    nz = np.flatnonzero(counts)
    return pl.DataFrame(
        {
            "layer": (nz // vocab // n_heads).astype(np.int32),
            "head": (nz // vocab % n_heads).astype(np.int32),
            "token": (nz % vocab).astype(np.int32),
            "norm_sum": sums[nz],
            "n": counts[nz].astype(np.int64),
        },
        schema=SCHEMA,
    )


def anchor_norm_ratio(norms: pl.DataFrame, top_token: np.ndarray) -> np.ndarray:
    """(L, H) mean ||v|| of each head's top anchor token over the head's mean ||v||; NaN without norms."""
    out = np.full(top_token.shape, np.nan)
    if norms.height == 0:
        return out
    per_head = norms.group_by(["layer", "head"]).agg((pl.col("norm_sum").sum() / pl.col("n").sum()).alias("mean"))
    layer, head = np.nonzero(np.isfinite(top_token))
    tops = pl.DataFrame({"layer": layer.astype(np.int32), "head": head.astype(np.int32), "token": top_token[layer, head].astype(np.int32)})
    found = tops.join(norms, on=["layer", "head", "token"]).join(per_head, on=["layer", "head"])
    for r in found.iter_rows(named=True):
        if r["mean"] > 0:
            out[r["layer"], r["head"]] = r["norm_sum"] / r["n"] / r["mean"]
    return out
