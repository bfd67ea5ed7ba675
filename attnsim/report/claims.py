# long: the paper's findings, each a short test over the tables; read best as one file
"""The paper's findings, each tested by a statistic of the run, with an interval and a verdict.

Every verdict follows one rule: a finding *holds* when its whole interval lies on the finding's side
of the comparison, *does not hold* when the whole interval lies on the other side, and is
*inconclusive* when the intervals overlap or a number is missing. Every statistic is a ratio to the
random head of reduce/chance.py (1 = chance), so that no finding can rest on what a random or a
purely positional head scores too, and each claim says where an interval covers 1 (*at chance*).
The intervals are
  - 95% bootstrap CIs over windows (from reduce) for per-layer pooled statistics;
  - 95% bootstrap CIs over the layer's heads for attention mass (reduce keeps no window replicates
    of it);
  - for counts of labelled heads, the range of the count when every threshold of the head-label rule
    is made 10% stricter or 10% looser (labels have no sampling CI; this shows how close to the
    thresholds the answer is).

Example::

    claims = evaluate(layers, heads, summary, LabelRule(), separator="none")
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from attnsim.config import LabelRule
from attnsim.reduce.statistics import label_head
from attnsim.report.numbers import number

HOLDS, FAILS, UNSURE = "holds", "does not hold", "inconclusive"
RULE = (
    "A finding **holds** when the whole interval of its statistic lies on the finding's side of the comparison, "
    "**does not hold** when the whole interval lies on the other side, and is **inconclusive** when the intervals "
    "overlap or a number is missing. Every statistic is a ratio to a random head (1 = chance); *at chance* marks an "
    "interval that covers 1. Intervals: 95% bootstrap CIs over windows for per-layer statistics; 95% bootstrap "
    "CIs over a layer's heads for attention mass; for counts of heads, the range over the head-label thresholds "
    "scaled by 0.9, 1 and 1.1 (stricter and looser)."
)
SCALES = (0.9, 1.0, 1.1)  # threshold scale factors for the sensitivity range of head counts


@dataclass(frozen=True)
class Claim:
    finding: str  # the paper's finding, in words
    statistic: str  # what is measured on this run
    value: float
    low: float  # interval around value (NaN if none)
    high: float
    interval: str  # what the interval is
    compared: str  # what the value is compared with, with numbers
    verdict: str
    rule: str  # the test, in words
    note: str = ""  # a caveat computed from the run's settings
    chance: str = ""  # where the intervals lie against 1 (chance), e.g. "final layer at chance"

    def value_text(self, digits: int = 3) -> str:
        return f"{number(self.value, digits)} [{number(self.low, digits)}, {number(self.high, digits)}]"


def _finite(*xs) -> bool:
    return all(x is not None and math.isfinite(float(x)) for x in xs)


def above(a: tuple[float, float], b: tuple[float, float]) -> str:
    """Interval a above interval b: holds / does not hold (a below b) / inconclusive (overlap)."""
    if not _finite(*a, *b):
        return UNSURE
    if a[0] > b[1]:
        return HOLDS
    if a[1] < b[0]:
        return FAILS
    return UNSURE


def head_bootstrap(values: np.ndarray, reps: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the mean of `values`, resampling heads with replacement."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return float("nan"), float("nan")
    means = np.random.default_rng(seed).choice(values, size=(reps, len(values))).mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def scaled_rule(rule: LabelRule, scale: float) -> LabelRule:
    """Every '>=' threshold times scale (scale > 1: stricter). local_distance is not a threshold but
    defines the statistic local_share (reduce computes it once), so it stays."""
    data = {k: v * scale for k, v in rule.model_dump().items()}
    data["local_distance"] = rule.local_distance
    return LabelRule(**data)


def against_chance(low: float, high: float) -> str:
    """Where an interval of a ratio to chance lies: above, below, or at chance (it covers 1)."""
    if not _finite(low, high):
        return "n/a"
    return "above chance" if low > 1 else "below chance" if high < 1 else "at chance"


def _ci(row: dict, name: str) -> tuple[float, float]:
    return row.get(f"{name}_ci_low", float("nan")), row.get(f"{name}_ci_high", float("nan"))


def final_layer_above_earlier(finding, statistic, layers, values, intervals, interval, note="") -> Claim:
    """The final layer's value is above every earlier layer's (the separator findings)."""
    last = len(layers) - 1
    verdicts = [above(intervals[last], intervals[l]) for l in range(last)]
    if not verdicts:
        verdict = UNSURE
    elif all(v == HOLDS for v in verdicts):
        verdict = HOLDS
    elif any(v == FAILS for v in verdicts):
        verdict = FAILS
    else:
        verdict = UNSURE
    top = max(range(last), key=lambda l: values[l] if _finite(values[l]) else -math.inf) if last else None
    compared = (
        "no earlier layer"
        if top is None
        else (f"highest earlier layer {layers[top]}: {number(values[top])} [{number(intervals[top][0])}, {number(intervals[top][1])}]")
    )
    at = [f"layer {layers[l]}" for l in range(len(layers)) if against_chance(*intervals[l]) == "at chance"]
    return Claim(
        finding,
        f"{statistic}, final layer {layers[last]}",
        values[last],
        *intervals[last],
        interval,
        compared,
        verdict,
        "holds if the final layer's interval is above every earlier layer's; does not hold if it is below any earlier layer's",
        note,
        f"final layer {against_chance(*intervals[last])}" + (f"; at chance: {', '.join(at)}" if at else ""),
    )


def head_count(finding, statistic, heads: pl.DataFrame, rule: LabelRule, test, need: int, describe) -> Claim:
    """Count heads (or layers) passing `test(rows, rule)` at each threshold scale."""
    rows = heads.to_dicts()
    counts = {s: test(rows, scaled_rule(rule, s)) for s in SCALES}
    low, high = min(counts.values()), max(counts.values())
    verdict = HOLDS if low >= need else FAILS if high < need else UNSURE
    return Claim(
        finding,
        statistic,
        counts[1.0],
        low,
        high,
        "range over label thresholds x0.9 .. x1.1",
        describe(rows, rule),
        verdict,
        f"holds if the count is at least {need} at every threshold scale; does not hold if it is below {need} at every scale",
        "",
    )


def _ge(value, threshold) -> bool:
    return _finite(value) and value >= threshold


def _repetition(row, r):
    return _ge(row["repetition_share_ratio"], r.repetition_ratio) and _ge(row["repetition_share"], r.repetition_share)


def _anchor(row, r):
    return _ge(row["top_anchor_share"], r.anchor_share) and _ge(row["top_anchor_share_ratio"], r.anchor_ratio)


def _layers_with_mixed_labels(rows, r) -> int:
    by_layer: dict[int, set] = {}
    for row in rows:
        by_layer.setdefault(row["layer"], set()).add(label_head(row, r))
    return sum(len(labels - {"broad"}) >= 2 for labels in by_layer.values())


# long: one block per finding of the paper, in the paper's order
def evaluate(layers: pl.DataFrame, heads: pl.DataFrame, summary: dict, rule: LabelRule, separator: str = "none") -> list[Claim]:
    """Test each finding of the paper on this run's statistics (see the module docstring)."""
    rows = layers.sort("layer").to_dicts()
    ids = [r["layer"] for r in rows]
    n_layers = len(rows)
    sep_note = (
        "windows hold one [SEP], at their end (sentence_separator=none); the paper's separators between sentences exist only with --sentence-separator sep"
        if separator == "none"
        else ""
    )
    claims = []

    mass = {l: heads.filter(pl.col("layer") == l)["mass_sep_ratio"].to_numpy() for l in ids}
    claims.append(
        final_layer_above_earlier(
            "Final layers' attention focuses on sentence separator tokens",
            "attention mass on [SEP] / uniform attention's (ratio to chance)",
            ids,
            [float(np.nanmean(mass[l])) if np.isfinite(mass[l]).any() else float("nan") for l in ids],
            [head_bootstrap(mass[l]) for l in ids],
            "95% bootstrap CI over the layer's heads",
            sep_note,
        )
    )
    claims.append(
        final_layer_above_earlier(
            "Final layers' similarities focus on sentence separator tokens",
            "share of high pairs pointing at [SEP]/sentence-final punctuation / a random head's (ratio to chance)",
            ids,
            [r["separator_share_ratio"] for r in rows],
            [_ci(r, "separator_share_ratio") for r in rows],
            "95% bootstrap CI over windows",
            sep_note,
        )
    )
    claims.append(
        head_count(
            "Heads of one layer specialise in different features",
            "layers whose heads carry >= 2 different specialised labels",
            heads,
            rule,
            _layers_with_mixed_labels,
            need=math.ceil(n_layers / 2),
            describe=_label_summary,
        )
    )
    claims.append(
        head_count(
            "Some heads specialise in token repetitions",
            "heads whose repetition share and its ratio to chance pass the thresholds",
            heads,
            rule,
            lambda rs, r: sum(_repetition(x, r) for x in rs),
            need=1,
            describe=_best_repetition,
        )
    )
    claims.append(
        head_count(
            "Some heads specialise in one frequent anchor token and its context",
            "heads whose top anchor's share and its ratio to a random head's pass the thresholds",
            heads,
            rule,
            lambda rs, r: sum(_anchor(x, r) for x in rs),
            need=1,
            describe=_anchor_tokens,
        )
    )

    corr = summary.get("layer_distance_correlation", {})
    rho = corr.get("spearman_layer_vs_mean_distance", float("nan"))
    lo, hi = corr.get("ci_low", float("nan")), corr.get("ci_high", float("nan"))
    claims.append(
        Claim(
            "High similarity is long-range in early layers and short-range in late layers",
            "Spearman rank correlation of layer index with mean high-pair distance",
            rho,
            lo,
            hi,
            "95% bootstrap CI over windows",
            "0 (no trend)",
            above((0.0, 0.0), (lo, hi)),
            "holds if the whole interval is below 0; does not hold if it is above 0",
        )
    )
    if n_layers >= 2:
        claims += [_first_vs_last(rows, "mean_distance_ratio", False), _first_vs_last(rows, "same_sentence_ratio_matched", True)]
    return claims


FIRST_VS_LAST = {
    "mean_distance_ratio": (
        "High similarity is long-range in early layers and short-range in late layers",
        "mean high-pair distance / a random head's (ratio to chance)",
    ),
    "same_sentence_ratio_matched": (
        "Late layers prefer strong similarity within the same sentence",
        "same-sentence high pairs / their expectation at the same distances (matched ratio)",
    ),
}


def _first_vs_last(rows: list[dict], name: str, rises: bool) -> Claim:
    """The final layer's ratio against the first layer's: above it (rises) or below it."""
    first, last = rows[0], rows[-1]
    f_ci, l_ci = _ci(first, name), _ci(last, name)
    finding, statistic = FIRST_VS_LAST[name]
    side = "above" if rises else "below"
    other = "below" if rises else "above"
    return Claim(
        finding,
        f"{statistic}, final layer {last['layer']}",
        last[name],
        *l_ci,
        "95% bootstrap CI over windows",
        f"first layer {first['layer']}: {number(first[name])} [{number(f_ci[0])}, {number(f_ci[1])}]",
        above(l_ci, f_ci) if rises else above(f_ci, l_ci),
        f"holds if the final layer's interval is {side} the first layer's; does not hold if it is {other}",
        "",
        f"first layer {against_chance(*f_ci)}, final layer {against_chance(*l_ci)}",
    )


def _label_summary(rows, rule) -> str:
    counts: dict[str, int] = {}
    for row in rows:
        label = label_head(row, rule)
        counts[label] = counts.get(label, 0) + 1
    n_layers = len({row["layer"] for row in rows})
    return f"{n_layers} layers; heads by label: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


def _best_repetition(rows, rule) -> str:
    best = max(rows, key=lambda x: x["repetition_share_ratio"] if _finite(x["repetition_share_ratio"]) else -1)
    return (
        f"thresholds: share >= {rule.repetition_share:g} and >= {rule.repetition_ratio:g}x a random head's; strongest head "
        f"L{best['layer']} H{best['head']}: share {number(best['repetition_share'])}, {number(best['repetition_share_ratio'])}x chance"
    )


def _anchor_tokens(rows, rule) -> str:
    tokens: dict[str, int] = {}
    for row in rows:
        if _anchor(row, rule):
            tokens[row["top_anchor"]] = tokens.get(row["top_anchor"], 0) + 1
    listed = ", ".join(f"'{t}' x{n}" for t, n in sorted(tokens.items(), key=lambda kv: -kv[1])) or "none"
    return (
        f"thresholds: share >= {rule.anchor_share:g} and >= {rule.anchor_ratio:g}x a random head's expected share of the token; "
        f"anchors of those heads: {listed}"
    )
