"""From merged counts to the corpus statistics: head and layer tables, decay, labels, CIs.

Pure functions over a `Partial` (the sum over every block). Per layer, numbers are pooled over the
layer's heads (sums of counts, then ratios); confidence intervals are 2.5/97.5 percentiles over the
Poisson bootstrap replicates (windows resampled with Poisson(1) weights, Chamandy et al. 2012).

Every share or mean X comes with X_chance, its value for the random head of chance.py (a ratio of
the random head's expected sums, summed as X is), and X_ratio = X / X_chance: 1 is chance level.
The raw `*_enrichment` columns (share over the share of all real pairs, the paper's kind of number)
stay beside them; a random head does not score 1 on those, because short windows give each pair a
higher chance of being drawn. `same_sentence_ratio_matched` compares a head's same-sentence high
pairs with what its own distances predict (sum_d N_high(d) p_same(d)), so locality alone scores 1.

Head label rule (first match wins; thresholds and their reasons in `RunConfig.labels`, LabelRule):
  separator   separator_share >= separator_share and separator_share_ratio >= separator_ratio
  repetition  repetition_share >= repetition_share and repetition_share_ratio >= repetition_ratio
  anchor      top_anchor_share >= anchor_share and top_anchor_share_ratio >= anchor_ratio
  local       local_share >= local_share and local_share_ratio >= local_ratio
              (local_share: real high pairs at d <= local_distance: P(d)'s excess sits at small d)
  sentence    same_sentence_ratio_matched >= sentence_ratio
  broad       otherwise
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import polars as pl

from attnsim.config import LabelRule
from attnsim.reduce.norms import anchor_norm_ratio
from attnsim.reduce.pairs import BOOT_STATS, PAIR_STATS, WINDOW_STATS, Partial
from attnsim.store.meta import MASS_CATEGORIES

LABELS = ("separator", "repetition", "anchor", "local", "sentence", "broad")
# share or mean -> (observed numerator, denominator), (the random head's numerator, denominator)
SHARES = {
    "mean_distance": (("sum_distance", "n_high"), ("e_sum_distance", "e_high")),
    "same_sentence_share": (("n_same", "n_high"), ("e_same", "e_high")),
    "repetition_share": (("n_rep", "n_high"), ("e_rep", "e_high")),
    "separator_share": (("n_separator", "n_high_all"), ("e_separator", "e_high_all")),
    "cls_share": (("n_cls", "n_high_all"), ("e_cls", "e_high_all")),
    "sep_token_share": (("n_sep", "n_high_all"), ("e_sep", "e_high_all")),
    "final_punct_share": (("n_final", "n_high_all"), ("e_final", "e_high_all")),
}


def _ratio(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def metrics(get) -> dict[str, np.ndarray]:
    """Every share with its chance and ratio, the matched ratio and the raw enrichments, from
    `get(name)`: the sum of one of BOOT_STATS (arrays that broadcast, e.g. (L, H) or (B, L))."""
    out = {}
    for name, ((num, den), (e_num, e_den)) in SHARES.items():
        value, chance = _ratio(get(num), get(den)), _ratio(get(e_num), get(e_den))
        out[name] = value
        out[f"{name}_chance"] = np.broadcast_to(chance, np.broadcast_shapes(value.shape, chance.shape)).copy()
        out[f"{name}_ratio"] = _ratio(value, chance)
    out["same_sentence_ratio_matched"] = _ratio(get("n_same"), get("matched_same"))
    out["same_sentence_enrichment"] = _ratio(out["same_sentence_share"], _ratio(get("n_same_all"), get("n_all")))
    out["repetition_enrichment"] = _ratio(out["repetition_share"], _ratio(get("n_rep_all"), get("n_all")))
    return out


def decay_length(n_high_d: np.ndarray, base_d: np.ndarray, within_range: bool = True) -> float:
    """Fit n_high(d) / base(d) = A exp(-d / lambda) by least squares on the log, weighted by N_high(d).

    base = the random head's expected count fits the ratio to chance; NaN when there is no decay: a
    slope >= 0, or (within_range) lambda beyond the largest distance with data, i.e. the curve falls
    by less than a factor e over the whole range, as a random head's does. base = N_all(d) with
    within_range=False is the raw fit of P(d), kept as it always was (a random head scores ~587 on lee).
    """
    d = np.arange(len(base_d))
    ok = (n_high_d > 0) & (base_d > 0) & (d > 0)
    if ok.sum() < 2:
        return float("nan")
    x, y, w = d[ok].astype(float), np.log(n_high_d[ok] / base_d[ok]), n_high_d[ok].astype(float)
    slope = np.polyfit(x, y, 1, w=np.sqrt(w))[0]
    if slope >= 0 or (within_range and -1.0 / slope > x.max()):
        return float("nan")
    return float(-1.0 / slope)


def median_from_hist(hist: np.ndarray) -> float:
    total = hist.sum()
    if total == 0:
        return float("nan")
    return float(np.searchsorted(np.cumsum(hist), total / 2.0))


def _head_get(p: Partial):
    def get(name):
        if name in WINDOW_STATS:
            return p.stat(name)
        if name in PAIR_STATS:
            return float(p.pair_totals[PAIR_STATS.index(name)])
        return p.expected(name)

    return get


def anchor_table(p: Partial) -> pl.DataFrame:
    """Targets of high pairs per head: share, raw lift (share over corpus frequency), and the
    random head's share (its expected in-degree of the token over all its high pairs) with the ratio."""
    tokens = p.token_counts
    freq = dict(zip(tokens["token"].to_list(), (tokens["count"] / tokens["count"].sum()).to_list()))
    total_expected = float(tokens["expected"].sum())
    chance = dict(zip(tokens["token"].to_list(), (tokens["expected"] / max(total_expected, 1e-300)).to_list()))
    return (
        p.anchors.with_columns(
            share=pl.col("count") / pl.col("count").sum().over(["layer", "head"]),
            corpus_freq=pl.col("token").replace_strict(freq, default=None, return_dtype=pl.Float64),
            chance_share=pl.col("token").replace_strict(chance, default=None, return_dtype=pl.Float64),
        )
        .with_columns(lift=pl.col("share") / pl.col("corpus_freq"), ratio=pl.col("share") / pl.col("chance_share"))
        .sort(["layer", "head", "count", "token"], descending=[False, False, True, False])
    )


def _per_head(frame: pl.DataFrame, shape, columns) -> dict[str, np.ndarray]:
    out = {c: np.full(shape, np.nan) for c in columns}
    for row in frame.iter_rows(named=True):
        for c in columns:
            out[c][row["layer"], row["head"]] = row[c] if row[c] is not None else np.nan
    return out


def head_table(p: Partial, token_text, rule: LabelRule) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(head_stats, anchors) tables. token_text maps token ids to strings."""
    shape = p.heads.shape[:2]
    anchors = anchor_table(p)
    entropy = anchors.group_by(["layer", "head"]).agg((-(pl.col("share") * pl.col("share").log(2))).sum().alias("h"))
    top = _per_head(anchors.group_by(["layer", "head"], maintain_order=True).first(), shape, ("token", "share", "lift", "chance_share", "ratio"))
    ent = _per_head(entropy, shape, ("h",))["h"]
    norm_ratio = anchor_norm_ratio(p.norms, top["token"])  # NaN without the vectors tier
    m = metrics(_head_get(p))
    d = np.arange(p.hist_high.shape[-1])
    near = d <= rule.local_distance
    local = _ratio(p.hist_high[..., near & (d > 0)].sum(-1), p.stat("n_high"))
    local_chance = float(_ratio(p.e_d[near].sum(), p.e_d.sum()))
    scale = _ratio(p.stat("n_high_all"), p.expected("e_high_all"))  # 1 in top-k mode (chance.py)
    mass = p.mass_sum / np.maximum(p.mass_windows, 1)[..., None]
    mass_chance = p.mass_chance / max(p.mass_chance_windows, 1)
    rows = []
    for l, h in np.ndindex(*shape):
        tok = int(top["token"][l, h]) if np.isfinite(top["token"][l, h]) else -1
        row = {"layer": l, "head": h, "n_high_all": int(p.stat("n_high_all")[l, h]), "n_high": int(p.stat("n_high")[l, h])}
        row |= {name: float(v[l, h]) for name, v in m.items()}
        row |= {
            "median_distance": median_from_hist(p.hist_high[l, h]),
            "decay_length": decay_length(p.hist_high[l, h], p.e_d * scale[l, h]),
            "decay_length_raw": decay_length(p.hist_high[l, h], p.n_all_d, within_range=False),
            "local_share": float(local[l, h]),
            "local_share_chance": local_chance,
            "local_share_ratio": float(_ratio(local[l, h], local_chance)),
            "top_anchor_id": tok,
            "top_anchor": token_text(tok) if tok >= 0 else None,
            "top_anchor_share": float(top["share"][l, h]),
            "top_anchor_share_chance": float(top["chance_share"][l, h]),
            "top_anchor_share_ratio": float(top["ratio"][l, h]),
            "top_anchor_lift": float(top["lift"][l, h]),
            "top_anchor_norm_ratio": float(norm_ratio[l, h]),
            "anchor_entropy_bits": float(ent[l, h]),
        }
        for c, name in enumerate(MASS_CATEGORIES):
            row[f"mass_{name}"] = float(mass[l, h, c])
            row[f"mass_{name}_chance"] = float(mass_chance[c])
            row[f"mass_{name}_ratio"] = float(_ratio(mass[l, h, c], mass_chance[c]))
        row["label"] = label_head(row, rule)
        rows.append(row)
    return pl.DataFrame(rows), anchors


def label_head(row: dict, rule: LabelRule) -> str:
    """The head's label by the rule of the module docstring, from its row of head_stats."""

    def ge(name, threshold):
        value = row.get(name)
        return value is not None and not math.isnan(value) and value >= threshold

    if ge("separator_share", rule.separator_share) and ge("separator_share_ratio", rule.separator_ratio):
        return "separator"
    if ge("repetition_share", rule.repetition_share) and ge("repetition_share_ratio", rule.repetition_ratio):
        return "repetition"
    if ge("top_anchor_share", rule.anchor_share) and ge("top_anchor_share_ratio", rule.anchor_ratio):
        return "anchor"
    if ge("local_share", rule.local_share) and ge("local_share_ratio", rule.local_ratio):
        return "local"
    if ge("same_sentence_ratio_matched", rule.sentence_ratio):
        return "sentence"
    return "broad"


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        return float("nan")
    rx = pl.Series(x[ok]).rank("average").to_numpy()
    ry = pl.Series(y[ok]).rank("average").to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def _layer_sums(p: Partial) -> np.ndarray:
    """(L, len(BOOT_STATS)) point sums per layer, in the bootstrap array's column order."""
    n_layers = p.heads.shape[0]
    token_level = np.concatenate([p.pair_totals.astype(np.float64), p.chance])
    return np.concatenate([p.heads.sum(1), np.broadcast_to(token_level, (n_layers, len(token_level)))], -1)


def layer_table(p: Partial, heads: pl.DataFrame) -> tuple[pl.DataFrame, dict]:
    """Per-layer pooled metrics with bootstrap CIs, plus the layer/distance rank correlation."""
    n_layers = p.heads.shape[0]
    col = {name: n for n, name in enumerate(BOOT_STATS)}
    point = metrics(lambda name: _layer_sums(p)[:, col[name]])
    boot = metrics(lambda name: p.boot[..., col[name]]) if p.boot.shape[0] else None
    layers = np.arange(n_layers, dtype=float)
    frame = {"layer": list(range(n_layers)), "n_high": p.stat("n_high").sum(1).astype(int).tolist()}
    for name, values in point.items():
        frame[name] = values.tolist()
        if boot is not None and not name.endswith("_chance"):
            with warnings.catch_warnings():  # a ratio with no data in any replicate: NaN, said once in the table
                warnings.simplefilter("ignore", RuntimeWarning)
                frame[f"{name}_ci_low"] = np.nanpercentile(boot[name], 2.5, axis=0).tolist()
                frame[f"{name}_ci_high"] = np.nanpercentile(boot[name], 97.5, axis=0).tolist()
    frame["median_distance"] = [median_from_hist(p.hist_high[l].sum(0)) for l in range(n_layers)]
    n_heads = p.heads.shape[1]
    scale = _ratio(p.stat("n_high_all").sum(1), n_heads * p.expected("e_high_all"))  # (L,), 1 in top-k mode
    frame["decay_length"] = [decay_length(p.hist_high[l].sum(0), p.e_d * n_heads * scale[l]) for l in range(n_layers)]
    frame["decay_length_raw"] = [decay_length(p.hist_high[l].sum(0), p.n_all_d * n_heads, within_range=False) for l in range(n_layers)]
    means = [c for c in heads.columns if c.startswith(("mass_", "top_anchor_share", "local_share"))]
    agg = heads.group_by("layer", maintain_order=True).agg(
        [pl.col(c).mean() for c in means]
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
    """N_high(d), N_all(d), P(d), and the random head's P(d) (`p_chance`, scaled to the head's own
    count of high pairs, 1x in top-k mode) with `p_ratio` = P(d) / p_chance(d)."""
    n_layers, n_heads, t = p.hist_high.shape
    d = np.arange(t)
    keep = (d > 0) & (p.n_all_d > 0)
    scale = _ratio(p.stat("n_high_all"), p.expected("e_high_all"))
    p_chance_base = _ratio(p.e_d[keep], p.n_all_d[keep])
    parts = []
    for l, h in np.ndindex(n_layers, n_heads):
        parts.append(
            pl.DataFrame(
                {
                    "layer": np.full(keep.sum(), l, np.int32),
                    "head": np.full(keep.sum(), h, np.int32),
                    "distance": d[keep].astype(np.int32),
                    "n_high": p.hist_high[l, h, keep].astype(np.int64),
                    "n_all": p.n_all_d[keep].astype(np.int64),
                    "p_chance": p_chance_base * scale[l, h],
                }
            )
        )
    return (
        pl.concat(parts)
        .with_columns(p=pl.col("n_high") / pl.col("n_all"))
        .with_columns(p_ratio=pl.col("p") / pl.col("p_chance"))
        .select("layer", "head", "distance", "n_high", "n_all", "p", "p_chance", "p_ratio")
    )
