"""Stage `report`: the statistics of a run (and one window of its store) -> RUN_DIR/report/.

Writes five PNG figures, `report.md` (figures linked) and a self-contained `report.html` (figures
embedded). Every number, including the claims table, is read or computed from `stats/` of the run;
nothing is written by hand. Reads only the statistics tables and, for the example matrices, one
window of the store.

Example::

    path = write_report(RunConfig(out="runs/default"))   # -> "runs/default/report"
"""

from __future__ import annotations

import io
import json
import logging

import fsspec
import polars as pl

from attnsim.config import RunConfig, join_url
from attnsim.errors import UserError
from attnsim.reduce.outputs import STATS_TABLES
from attnsim.report.claims import RULE, evaluate
from attnsim.report.figures import attention_mass_figure, decay_figure, head_map_figure, layer_ci_figure, similarity_figure
from attnsim.report.numbers import number, with_interval
from attnsim.report.render import Doc

log = logging.getLogger("attnsim")
VERDICT_CLASS = {"holds": "holds", "does not hold": "does-not-hold", "inconclusive": "inconclusive"}


def load_stats(stats_url: str) -> tuple[dict[str, pl.DataFrame], dict]:
    fs, root = fsspec.core.url_to_fs(stats_url)
    missing = [n for n in (*[f"{t}.parquet" for t in STATS_TABLES], "summary.json") if not fs.exists(f"{root}/{n}")]
    if missing:
        raise UserError(f"no statistics in {stats_url!r} (missing {', '.join(missing)}); run `attnsim reduce` on the run first")
    tables = {}
    for name in STATS_TABLES:
        with fs.open(f"{root}/{name}.parquet", "rb") as f:
            tables[name] = pl.read_parquet(f)
    with fs.open(f"{root}/summary.json") as f:
        return tables, json.load(f)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    return buf.getvalue()


def _settings(cfg: RunConfig, summary: dict, store) -> list[list[str]]:
    m, c = summary["model"], summary["corpus"]
    rows = [
        [
            "model",
            f"`{m['name']}` ({m['model_type']}, {m['layers']} layers x {m['heads']} heads, head size {m['head_size']}, weights sha256 `{m['weights_sha256']}`)",
        ],
        ["corpus", f"`{c['spec']}`: {c['documents']} documents, {c['windows']} windows, {c['tokens']} tokens (fingerprint `{c['fingerprint']}`)"],
        ["windows", f"at most {cfg.max_tokens} tokens, whole sentences, separator between sentences `{cfg.sentence_separator}`"],
        ["similarity", f"`{summary['similarity_kind']}` of head output vectors (before W_O)"],
        [
            "high pairs",
            f"each token's top k = {summary['k']} neighbours"
            if summary["high_mode"] == "topk"
            else f"S above the head's corpus quantile {summary['quantile']}",
        ],
        ["bootstrap", f"{summary['bootstrap']} Poisson replicates over windows, seed {cfg.seed}"],
        ["head-label thresholds", ", ".join(f"{k} {v:g}" for k, v in cfg.labels.model_dump().items())],
        ["tiers in the store", ", ".join(store.tiers) if store is not None else "store not readable"],
        ["store", f"`{summary['store']}`"],
    ]
    if store is not None:
        rows.append(["code version", str(store.attrs.get("code_version"))])
    return rows


def _claims_section(doc: Doc, claims) -> None:
    doc.heading("Claims of the paper, tested on this run")
    doc.para(
        "Each finding of Halevi et al. (arXiv 2512.21956) is tested by a statistic of this run. "
        "The table is computed from `stats/` by `attnsim/report/claims.py`; rerunning the report recomputes it."
    )
    rows = [[c.finding, c.statistic, c.value_text(), c.interval, c.compared, c.chance or "-", c.verdict] for c in claims]
    doc.table(
        ["finding", "statistic on this run", "value [interval]", "interval", "compared with", "against chance", "verdict"],
        rows,
        classes={6: lambda v: VERDICT_CLASS.get(v, "")},
    )
    doc.para("**Verdict rule.** " + RULE)
    doc.bullets([f"{c.finding} ({c.statistic}): {c.rule}." + (f" Note: {c.note}." if c.note else "") for c in claims])


def _example_figure(doc: Doc, cfg: RunConfig, store, heads: pl.DataFrame, window, picks, files: dict) -> None:
    from attnsim.report.matrices import MAX_SHOWN, _prefix, choose_heads, choose_window, example_panels

    if store is None:
        doc.para("Example similarity matrices: not drawn, the store could not be opened.")
        return
    if window is None:
        window, stop = choose_window(store)
    else:
        store.check(window=window)  # a window or head the user named must exist: an error, not a note
        stop = _prefix(store.sentence_ids(window), MAX_SHOWN)
    for layer, head in picks or ():
        store.check(layer=layer, head=head)
    picks = picks or choose_heads(heads)
    try:
        panels, source = example_panels(store, cfg, window, stop, picks, heads)
    except UserError as e:
        doc.para(f"Example similarity matrices: not drawn ({e}).")
        return
    n = store.length(window)
    shown = f"tokens 0-{stop - 1} of {n}" if stop < n else f"all {n} tokens"
    fig = similarity_figure(panels, store.kind, f"Context similarity S on window {window} ({shown}), document {int(store.root['doc_id'][window])}")
    files["similarity_examples.png"] = _png(fig)
    doc.figure(
        "similarity_examples.png",
        files["similarity_examples.png"],
        f"Figure 5. Context similarity matrices S on window {window} ({shown}) of " + "; ".join(p["title"] for p in panels) + f". S {source}. "
        "Rows: token i, columns: token j; dashed lines: sentence boundaries ([CLS]/[SEP] count as their own segment). "
        "Each panel has its own colour scale (1st-99th percentile). The text shown: "
        f'"{store.tokenizer.decode(store.input_ids(window)[:stop].tolist(), skip_special_tokens=True)}"',
    )


# long: the report's sections in reading order
def build(cfg: RunConfig, tables: dict[str, pl.DataFrame], summary: dict, window=None, picks=None) -> tuple[Doc, dict[str, bytes]]:
    from attnsim.store.dataset import open_store

    heads, layers, anchors, decay = (tables[n] for n in ("head_stats", "layer_summary", "anchors", "distance_decay"))
    try:
        store = open_store(cfg.store_url)
    except Exception as e:  # the report needs the store only for figure 5
        log.warning("report: store %s not readable (%s); figure 5 is skipped", cfg.store_url, e)
        store = None
    m, c = summary["model"], summary["corpus"]
    doc = Doc(f"attnsim report: {m['name']} on {c['spec']}")
    doc.para(
        f"How the {m['layers'] * m['heads']} self-attention heads of `{m['name']}` behave over {c['windows']} windows of "
        f"the corpus `{c['spec']}`, measured by the context similarity S[i, j] = v_i · v_j of each head's output vectors "
        '(Halevi et al., "Self-attention vector output similarities reveal how machines pay attention", arXiv 2512.21956). '
        "A pair (i, j) is high when j is among i's most similar tokens; statistics are defined in docs/design.md. "
        "Every share or mean is also given against chance: divided by what a *random head* scores, one that draws each "
        "token's neighbours uniformly from the same candidates (its expectation computed exactly per window, "
        "`attnsim/reduce/chance.py`); 1 is chance level. The raw numbers stay beside the ratios in `stats/` for "
        "comparison with the paper, but only the ratios say whether a head prefers anything."
    )
    doc.heading("Run settings")
    doc.table(["setting", "value"], _settings(cfg, summary, store))
    _claims_section(doc, evaluate(layers, heads, summary, cfg.labels, cfg.sentence_separator))

    doc.heading("Figures")
    files: dict[str, bytes] = {}
    captions = {
        "distance_decay.png": (
            decay_figure(decay),
            "Figure 1. Distance decay against chance: the probability P(d) that a pair of tokens d apart is a high-similarity "
            "pair, divided by a random head's (dashed line: 1), log-log, distances grouped in log-spaced bins. A random head's "
            "raw P(d) falls with d too (short windows hold only short distances and give each pair a higher chance); its ratio "
            "is flat. Left: one line per layer (pooled over its heads). Right: per layer, every head (grey) and the layer (black).",
        ),
        "layer_statistics.png": (
            layer_ci_figure(layers),
            "Figure 2. Per layer, each as a ratio to a random head (dashed line: 1 = chance), with 95% bootstrap CIs over "
            "windows: mean distance of high pairs; same-sentence pairs over their expectation at the head's own distances "
            "(locality alone scores 1); share of repeated-token pairs; share of pairs pointing at [SEP] or sentence-final "
            "punctuation.",
        ),
        "head_map.png": (
            head_map_figure(heads),
            "Figure 3. Head specialisation by the label rule of `attnsim/reduce/statistics.py` (thresholds in Run settings; "
            "every label needs a ratio to a random head, `local` a concentration of P(d)/chance at small d, `sentence` the "
            "distance-matched same-sentence ratio); "
            "text: each head's top anchor token (most frequent target of its high pairs) and its share of them.",
        ),
        "attention_mass.png": (
            attention_mass_figure(heads),
            "Figure 4. Mean attention weight a real query token ([CLS]/[SEP] are keys only) gives to [CLS], [SEP], "
            'punctuation, itself, the previous and the next token (Clark et al. 2019, "What does BERT look at?"), divided '
            "by what uniform attention over the window's tokens gives (dashed line: 1); grey dots: heads, black: layer mean. "
            "For comparison, Clark et al. report for BERT-base that early layers attend to [CLS], over half the attention "
            "of layers 6-10 goes to [SEP], late layers attend to periods and commas, and a few heads attend "
            "almost entirely to the previous or next token.",
        ),
    }
    for name, (fig, caption) in captions.items():
        files[name] = _png(fig)
        doc.figure(name, files[name], caption)
    _example_figure(doc, cfg, store, heads, window, picks, files)

    _per_layer_section(doc, layers)
    _anchors_section(doc, heads, anchors)
    return doc, files


def _per_layer_section(doc: Doc, layers: pl.DataFrame) -> None:
    doc.heading("Per layer")
    doc.para(
        "Pooled over the layer's heads; [95% bootstrap CI over windows]. Ratios are to a random head (1 = chance); "
        "mean distance in tokens, then its ratio; the raw same-sentence enrichment (share over the share among all "
        "pairs, the paper's kind of number) beside the distance-matched ratio; attention mass: mean over heads of "
        "mass / uniform attention's."
    )
    label_cols = [col for col in layers.columns if col.startswith("heads_")]
    rows = []
    for r in layers.sort("layer").iter_rows(named=True):
        labels = ", ".join(f"{col[6:]} {r[col]}" for col in label_cols if r[col])
        rows.append(
            [
                r["layer"],
                number(r["mean_distance"]),
                with_interval(r, "mean_distance_ratio"),
                number(r["decay_length"]),
                number(r["same_sentence_enrichment"]),
                with_interval(r, "same_sentence_ratio_matched"),
                with_interval(r, "repetition_share_ratio"),
                f"{number(r['separator_share'])} ({number(r['separator_share_ratio'])}x)",
                number(r["mass_cls_ratio"]),
                number(r["mass_sep_ratio"]),
                number(r["mass_punct_ratio"]),
                labels,
                r["distinct_top_anchors"],
            ]
        )
    doc.table(
        [
            "layer",
            "mean distance",
            "its ratio",
            "decay length (ratio fit)",
            "same-sent. enr. (raw)",
            "same-sent. matched",
            "repetition ratio",
            "separator share (ratio)",
            "mass [CLS] ratio",
            "mass [SEP] ratio",
            "mass punct. ratio",
            "head labels",
            "distinct top anchors",
        ],
        rows,
    )


def _anchors_section(doc: Doc, heads: pl.DataFrame, anchors: pl.DataFrame) -> None:
    doc.heading("Top anchors per head")
    doc.para(
        "The most frequent targets j of each head's high pairs: token (share of the head's high pairs, ratio = share / "
        "a random head's expected share of that token, i.e. its expected in-degree)."
    )
    top = anchors.sort(["layer", "head", "count"], descending=[False, False, True]).group_by(["layer", "head"], maintain_order=True).head(3)
    listed = {(l, h): g for (l, h), g in top.group_by(["layer", "head"], maintain_order=True)}
    rows = []
    for r in heads.sort(["layer", "head"]).iter_rows(named=True):
        g = listed.get((r["layer"], r["head"]))
        cells = g.select("token_text", "share", "ratio").iter_rows() if g is not None else ()
        text = "; ".join(f"'{t}' ({100 * s:.1f}%, {ratio:.1f}x)" for t, s, ratio in cells) or "-"
        rows.append([r["layer"], r["head"], r["label"], text])
    doc.table(["layer", "head", "label", "top anchors"], rows)


def write_report(cfg: RunConfig, window: int | None = None, heads: list[tuple[int, int]] | None = None) -> str:
    """Write RUN_DIR/report/ (figures, report.md, report.html); returns the folder."""
    tables, summary = load_stats(cfg.stats_url)
    doc, files = build(cfg, tables, summary, window, heads)
    out = join_url(cfg.out, "report")
    fs, root = fsspec.core.url_to_fs(out)
    fs.makedirs(root, exist_ok=True)
    for name, data in files.items():
        fs.pipe_file(f"{root}/{name}", data)
    fs.pipe_file(f"{root}/report.md", doc.markdown().encode())
    fs.pipe_file(f"{root}/report.html", doc.html().encode())
    return out
