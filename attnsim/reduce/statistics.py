"""From merged counts to the corpus statistics: head and layer tables, decay, labels, CIs.

Pure functions over a `Partial` (the sum over every block). Per layer, numbers are pooled over the
layer's heads (sums of counts, then ratios); confidence intervals are 2.5/97.5 percentiles over the
Poisson bootstrap replicates (windows resampled with Poisson(1) weights, Chamandy et al. 2012).

Head label rule (first match wins; thresholds in `RunConfig.labels`):
  separator   separator_share >= separator_share
  repetition  repetition_enrichment >= repetition_enrichment and repetition_share >= repetition_share
  anchor      top_anchor_share >= anchor_share and top_anchor_lift >= anchor_lift
  positional  mean_distance <= local_distance
  sentence    same_sentence_enrichment >= sentence_enrichment
  broad       otherwise
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from attnsim.config import LabelRule
from attnsim.reduce.pairs import PAIR_STATS, WINDOW_STATS, Partial
from attnsim.store.meta import MASS_CATEGORIES

LABELS = ("separator", "repetition", "anchor", "positional", "sentence", "broad")


def _ratio(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def decay_length(n_high_d: np.ndarray, n_all_d: np.ndarray) -> float:
    """Fit P(d) = A exp(-d / lambda) by least squares on log P, weighted by N_high(d); NaN if no decay."""
    d = np.arange(len(n_all_d))
    ok = (n_high_d > 0) & (n_all_d > 0) & (d > 0)
    if ok.sum() < 2:
        return float("nan")
    x, y, w = d[ok].astype(float), np.log(n_high_d[ok] / n_all_d[ok]), n_high_d[ok].astype(float)
    slope = np.polyfit(x, y, 1, w=np.sqrt(w))[0]
    return float(-1.0 / slope) if slope < 0 else float("nan")


def median_from_hist(hist: np.ndarray) -> float:
    total = hist.sum()
    if total == 0:
        return float("nan")
    return float(np.searchsorted(np.cumsum(hist), total / 2.0))


def head_table(p: Partial, token_text, rule: LabelRule) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(head_stats, anchors) tables. token_text maps token ids to strings."""
    n_layers, n_heads = p.n_high.shape
    all_pairs, same_all, rep_all = (float(x) for x in p.pair_totals)
    p_same_all = same_all / all_pairs if all_pairs else float("nan")
    p_rep_all = rep_all / all_pairs if all_pairs else float("nan")
    total_tokens = float(p.token_counts["count"].sum())
    freq = dict(zip(p.token_counts["token"].to_list(), (p.token_counts["count"] / total_tokens).to_list()))

    anchors = (
        p.anchors.with_columns(
            share=pl.col("count") / pl.col("count").sum().over(["layer", "head"]),
            corpus_freq=pl.col("token").replace_strict(freq, default=None, return_dtype=pl.Float64),
        )
        .with_columns(lift=pl.col("share") / pl.col("corpus_freq"))
        .sort(["layer", "head", "count", "token"], descending=[False, False, True, False])
    )
    entropy = anchors.group_by(["layer", "head"]).agg((-(pl.col("share") * pl.col("share").log(2))).sum().alias("h"))
    ent = np.full((n_layers, n_heads), np.nan)
    for row in entropy.iter_rows(named=True):
        ent[row["layer"], row["head"]] = row["h"]
    top = anchors.group_by(["layer", "head"], maintain_order=True).first()
    top_tok = np.full((n_layers, n_heads), -1)
    top_share = np.full((n_layers, n_heads), np.nan)
    top_lift = np.full((n_layers, n_heads), np.nan)
    for row in top.iter_rows(named=True):
        top_tok[row["layer"], row["head"]] = row["token"]
        top_share[row["layer"], row["head"]] = row["share"]
        top_lift[row["layer"], row["head"]] = row["lift"]

    mean_distance = _ratio(p.sum_distance, p.n_high)
    same_share = _ratio(p.n_same, p.n_high)
    rep_share = _ratio(p.n_rep, p.n_high)
    sep_share = _ratio(p.n_sep, p.n_high_all)
    mass = p.mass_sum / np.maximum(p.mass_windows, 1)[..., None]
    rows = []
    for l in range(n_layers):
        for h in range(n_heads):
            row = {
                "layer": l,
                "head": h,
                "n_high_all": int(p.n_high_all[l, h]),
                "n_high": int(p.n_high[l, h]),
                "mean_distance": float(mean_distance[l, h]),
                "median_distance": median_from_hist(p.hist_high[l, h]),
                "decay_length": decay_length(p.hist_high[l, h], p.n_all_d),
                "same_sentence_share": float(same_share[l, h]),
                "same_sentence_enrichment": float(same_share[l, h] / p_same_all) if p_same_all else float("nan"),
                "repetition_share": float(rep_share[l, h]),
                "repetition_enrichment": float(rep_share[l, h] / p_rep_all) if p_rep_all else float("nan"),
                "separator_share": float(sep_share[l, h]),
                "top_anchor_id": int(top_tok[l, h]),
                "top_anchor": token_text(int(top_tok[l, h])) if top_tok[l, h] >= 0 else None,
                "top_anchor_share": float(top_share[l, h]),
                "top_anchor_lift": float(top_lift[l, h]),
                "anchor_entropy_bits": float(ent[l, h]),
            }
            for c, name in enumerate(MASS_CATEGORIES):
                row[f"mass_{name}"] = float(mass[l, h, c])
            row["label"] = label_head(row, rule)
            rows.append(row)
    return pl.DataFrame(rows), anchors


def label_head(row: dict, rule: LabelRule) -> str:
    def ge(value, threshold):
        return value is not None and not math.isnan(value) and value >= threshold

    if ge(row["separator_share"], rule.separator_share):
        return "separator"
    if ge(row["repetition_enrichment"], rule.repetition_enrichment) and ge(row["repetition_share"], rule.repetition_share):
        return "repetition"
    if ge(row["top_anchor_share"], rule.anchor_share) and ge(row["top_anchor_lift"], rule.anchor_lift):
        return "anchor"
    md = row["mean_distance"]
    if md is not None and not math.isnan(md) and md <= rule.local_distance:
        return "positional"
    if ge(row["same_sentence_enrichment"], rule.sentence_enrichment):
        return "sentence"
    return "broad"


def _layer_metrics(s: np.ndarray) -> dict[str, np.ndarray]:
    """Pooled per-layer metrics from per-layer sums s (..., L, S + 3) in WINDOW_STATS + PAIR_STATS order."""
    idx = {name: n for n, name in enumerate(WINDOW_STATS + PAIR_STATS)}
    g = lambda name: s[..., idx[name]]  # noqa: E731
    return {
        "mean_distance": _ratio(g("sum_distance"), g("n_high")),
        "same_sentence_enrichment": _ratio(_ratio(g("n_same"), g("n_high")), _ratio(g("n_same_all"), g("n_all"))),
        "repetition_enrichment": _ratio(_ratio(g("n_rep"), g("n_high")), _ratio(g("n_rep_all"), g("n_all"))),
        "separator_share": _ratio(g("n_sep"), g("n_high_all")),
    }


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        return float("nan")
    rx = pl.Series(x[ok]).rank("average").to_numpy()
    ry = pl.Series(y[ok]).rank("average").to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def layer_table(p: Partial, heads: pl.DataFrame) -> tuple[pl.DataFrame, dict]:
    """Per-layer pooled metrics with bootstrap CIs, plus the layer/distance rank correlation."""
    n_layers = p.n_high.shape[0]
    point_sums = np.concatenate(
        [
            np.stack([p.n_high.sum(1), p.sum_distance.sum(1), p.n_same.sum(1), p.n_rep.sum(1), p.n_sep.sum(1), p.n_high_all.sum(1)], -1),
            np.broadcast_to(p.pair_totals, (n_layers, 3)),
        ],
        -1,
    )
    point = _layer_metrics(point_sums)
    boot = _layer_metrics(p.boot) if p.boot.shape[0] else None
    layers = np.arange(n_layers, dtype=float)
    frame = {"layer": list(range(n_layers)), "n_high": p.n_high.sum(1).astype(int).tolist()}
    for name, values in point.items():
        frame[name] = values.tolist()
        if boot is not None:
            frame[f"{name}_ci_low"] = np.nanpercentile(boot[name], 2.5, axis=0).tolist()
            frame[f"{name}_ci_high"] = np.nanpercentile(boot[name], 97.5, axis=0).tolist()
    frame["median_distance"] = [median_from_hist(p.hist_high[l].sum(0)) for l in range(n_layers)]
    frame["decay_length"] = [decay_length(p.hist_high[l].sum(0), p.n_all_d * p.n_high.shape[1]) for l in range(n_layers)]
    agg = heads.group_by("layer", maintain_order=True).agg(
        [pl.col(f"mass_{c}").mean() for c in MASS_CATEGORIES]
        + [pl.col("top_anchor").n_unique().alias("distinct_top_anchors"), pl.col("anchor_entropy_bits").mean()]
        + [(pl.col("label") == lab).sum().alias(f"heads_{lab}") for lab in LABELS]
    )
    table = pl.DataFrame(frame).join(agg, on="layer", how="left")
    rho = spearman(layers, point["mean_distance"])
    corr = {"spearman_layer_vs_mean_distance": rho}
    if boot is not None:
        reps = np.array([spearman(layers, boot["mean_distance"][b]) for b in range(boot["mean_distance"].shape[0])])
        corr["ci_low"], corr["ci_high"] = (float(np.nanpercentile(reps, q)) if np.isfinite(reps).any() else float("nan") for q in (2.5, 97.5))
    return table, corr


def decay_table(p: Partial) -> pl.DataFrame:
    n_layers, n_heads, t = p.hist_high.shape
    d = np.arange(t)
    keep = (d > 0) & (p.n_all_d > 0)
    parts = []
    for l in range(n_layers):
        for h in range(n_heads):
            parts.append(
                pl.DataFrame(
                    {
                        "layer": np.full(keep.sum(), l, np.int32),
                        "head": np.full(keep.sum(), h, np.int32),
                        "distance": d[keep].astype(np.int32),
                        "n_high": p.hist_high[l, h, keep].astype(np.int64),
                        "n_all": p.n_all_d[keep].astype(np.int64),
                    }
                )
            )
    return pl.concat(parts).with_columns(p=pl.col("n_high") / pl.col("n_all"))
