"""What the terminal shows: the per-layer summary after a run, and `attnsim info` on a store."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from attnsim.config import RunConfig
from attnsim.reduce.outputs import stats_paths
from attnsim.report.numbers import number, with_interval
from attnsim.store.io import completed_units, open_store, read_meta, unit_environments


def _f(x, digits: int = 2) -> str:
    """A terminal table's cell: fixed decimals, "-" for a missing number."""
    return number(x, digits, fixed=True, missing="-")


def _ci(row: dict, name: str, digits: int = 2) -> str:
    return with_interval(row, name, digits, fixed=True, missing="-")


def print_layer_table(console: Console, summary: dict, anchors_by_layer: dict | None = None) -> None:
    """Per layer: the raw mean distance, then every statistic as a ratio to a random head (1 = chance)."""
    table = Table(title="per layer (pooled over heads; x = ratio to a random head, 1 = chance; [95% bootstrap CI])", header_style="bold")
    columns = ("layer", "mean dist", "dist x", "same-sent x (matched)", "repeat x", "sep share (x)", "mass [CLS] x", "mass [SEP] x", "labels", "top anchors")
    for col in columns:
        table.add_column(col, justify="right" if col not in ("labels", "top anchors") else "left")
    for row in summary["layers"]:
        labels = ", ".join(f"{k[6:]} {row[k]}" for k in row if k.startswith("heads_") and row[k])
        table.add_row(
            str(row["layer"]),
            _f(row["mean_distance"], 1),
            _ci(row, "mean_distance_ratio"),
            _ci(row, "same_sentence_ratio_matched"),
            _ci(row, "repetition_share_ratio", 1),
            f"{_f(row['separator_share'])} ({_f(row['separator_share_ratio'])})",
            _f(row["mass_cls_ratio"], 1),
            _f(row["mass_sep_ratio"]),
            labels,
            (anchors_by_layer or {}).get(row["layer"], ""),
        )
    console.print(table)
    corr = summary["layer_distance_correlation"]
    console.print(
        f"rank correlation of layer index with mean high-pair distance: "
        f"{_f(corr['spearman_layer_vs_mean_distance'])} [{_f(corr.get('ci_low'))}, {_f(corr.get('ci_high'))}]"
    )


def top_anchors_by_layer(stats_url: str, n: int = 3) -> dict:
    """The most frequent top-1 anchor tokens among each layer's heads."""
    import polars as pl

    from attnsim.config import join_url

    heads = pl.read_parquet(join_url(stats_url, "head_stats.parquet"))
    out = {}
    for layer, group in heads.group_by("layer"):
        counts = group["top_anchor"].drop_nulls().value_counts(sort=True).head(n)
        out[layer[0]] = " ".join(f"{t}×{c}" for t, c in counts.iter_rows())
    return out


def print_summary(console: Console, cfg: RunConfig, result: dict) -> None:
    p, e, s = result["prepare"], result["extract"], result["summary"]
    console.print(
        f"[bold]attnsim[/] model {cfg.model} · corpus {cfg.corpus} · {p.n_documents} documents · "
        f"{p.n_windows} windows · {p.n_tokens} tokens · units extracted now {e['done']} (retried {e['retried']})"
    )
    if p.problems:
        console.print("document problems: " + ", ".join(f"{k} {v['count']}" for k, v in p.problems.items()))
    print_layer_table(console, s, top_anchors_by_layer(cfg.stats_url))
    console.print("written:")
    console.print(f"  {cfg.store_url}")
    for path in stats_paths(cfg.stats_url):
        console.print(f"  {path}")
    if result.get("report"):
        console.print(f"  {result['report']}  (report.html: figures, per-layer table, claims of the paper tested)")
    if result.get("seconds"):
        stages = " · ".join(f"{stage} {seconds:.1f} s" for stage, seconds in result["seconds"].items())
        console.print(f"time: {stages} · total {sum(result['seconds'].values()):.1f} s", highlight=False)


def print_store_info(console: Console, url: str) -> None:
    root = open_store(url)
    meta = read_meta(root)
    layout, m, c, w = meta.layout, meta.model, meta.corpus, meta.windows
    units = completed_units(url)
    table = Table(show_header=False, title=f"attnsim store {url}")
    rows = [
        ("format", f"v{meta.format_version} (attnsim {meta.code_version})"),
        ("model", f"{m.name} ({m.model_type}, {m.layers} layers x {m.heads} heads, head size {m.head_size}, weights {m.weights_sha256})"),
        ("corpus", f"{c.spec} ({c.documents} documents, fingerprint {c.fingerprint})"),
        ("windows", f"{c.windows} of at most {w.max_tokens} tokens, separator {w.sentence_separator}"),
        ("tokens", str(c.tokens)),
        ("similarity", f"{meta.similarity_kind}, top k = {meta.k}"),
        ("tiers", ", ".join(layout.tiers)),
        ("units", f"{len(units)} of {layout.n_units} extracted ({layout.windows_per_shard} windows each)"),
        ("arrays", ", ".join(f"{name}{tuple(root[name].shape)}" for name in sorted(root.array_keys()))),
    ]
    for n, (env, count) in enumerate(sorted(unit_environments(url, units).items(), key=lambda item: -item[1])):
        rows.append(("computed on" if n == 0 else "", f"{count} units: {env}"))
    if c.problems:
        rows.append(("problems", ", ".join(f"{k} {v['count']}" for k, v in c.problems.items())))
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)
