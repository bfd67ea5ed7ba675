"""Similarity matrices S of chosen heads on one window: the report's example figure and `attnsim inspect`.

S comes from the store when it can (the `dense` tier, else the `vectors` tier), else from running the
run's model on that one window (`UnitComputer` with the `dense` tier only), after checking that the
model's weights are the ones the store was made with.

Example::

    store = open_store("runs/default/store.zarr")
    window, stop = choose_window(store)
    panels, source = example_panels(store, cfg, window, stop, choose_heads(heads), heads)
    inspect_head(Console(), "runs/default/store.zarr", window=3, layer=5, head=2)   # the CLI command
"""

from __future__ import annotations

import numpy as np
import polars as pl
from rich.console import Console
from rich.table import Table

from attnsim.config import RunConfig
from attnsim.errors import UserError
from attnsim.report.figures import similarity_figure
from attnsim.store.dataset import SimilarityStore, open_store

MAX_SHOWN = 60  # tokens per axis: beyond this, token labels get too small to read in a 2 x 2 figure
SCAN = 256  # windows looked at when choosing one (the first shards only: cheap on any store size)


def _prefix(sentence_id: np.ndarray, cap: int) -> int:
    """Tokens to show: the longest prefix of at most `cap` tokens that ends at a sentence boundary."""
    n = len(sentence_id)
    if n <= cap:
        return n
    cuts = [b for b in np.nonzero(np.diff(sentence_id) != 0)[0] + 1 if b <= cap]
    return int(cuts[-1]) if cuts and cuts[-1] >= cap // 2 else cap


def choose_window(store: SimilarityStore, cap: int = MAX_SHOWN) -> tuple[int, int]:
    """(window, tokens shown): among the first windows, the one showing the most whole sentences."""
    scan = min(store.n_windows, SCAN)
    length = store.root["length"][:scan]
    sentence = store.root["sentence_id"][:scan, : cap + 1]  # (W, cap + 1)
    best, best_key = 0, None
    for w in range(scan):
        sid = sentence[w, : min(int(length[w]), cap + 1)]
        stop = _prefix(sid, cap)
        shown = sid[:stop]
        key = (len(np.unique(shown[shown >= 0])), stop)  # most sentences, then most tokens
        if best_key is None or key > best_key:
            best, best_key = w, key
    return best, best_key[1]


def choose_heads(heads: pl.DataFrame, n: int = 4) -> list[tuple[int, int]]:
    """A few contrasting heads: the clearest head of each label, then early and late layers."""
    picks: list[tuple[int, int]] = []
    clearest = {  # label -> (statistic, largest first) that makes a head the clearest of its label
        "separator": ("separator_share", True),
        "repetition": ("repetition_enrichment", True),
        "anchor": ("top_anchor_share", True),
        "local": ("local_share", True),
        "sentence": ("same_sentence_enrichment", True),
    }
    for label, (col, descending) in clearest.items():
        g = heads.filter(pl.col("label") == label).sort(col, descending=descending, nulls_last=True)
        if g.height:
            picks.append((g["layer"][0], g["head"][0]))
    first, last = heads["layer"].min(), heads["layer"].max()
    early = heads.filter(pl.col("layer") == first).sort("mean_distance", descending=True, nulls_last=True)
    late = heads.filter(pl.col("layer") == last).sort("same_sentence_enrichment", descending=True, nulls_last=True)
    picks += [(early["layer"][0], early["head"][0]), (late["layer"][0], late["head"][0])]
    unique = list(dict.fromkeys((int(l), int(h)) for l, h in picks))
    return sorted(unique[:n])


def recompute_dense(store: SimilarityStore, cfg: RunConfig, window: int) -> np.ndarray:
    """S of every head on one window, (L, H, T, T) float32, by running the run's model (CPU)."""
    from attnsim.extract.compute import UnitComputer
    from attnsim.model.loading import load_model

    loaded = load_model(cfg.model, trust_remote_code=cfg.trust_remote_code, allow_pickle_weights=cfg.allow_pickle_weights)
    if loaded.weights_hash != store.meta.model.weights_sha256:
        raise UserError(
            f"model {cfg.model!r} now has weights {loaded.weights_hash}, the store was made with "
            f"{store.meta.model.weights_sha256}; S cannot be recomputed faithfully"
        )
    computer = UnitComputer(loaded, kind=store.kind, k=store.meta.k, tiers=("dense",), token_classes=store.meta.token_classes, batch_size=1)
    row = slice(window, window + 1)
    out = computer.compute(store.root["input_ids"][row], store.root["sentence_id"][row], store.root["length"][row])
    n = store.length(window)
    return out["similarity"][0, :, :, :n, :n].astype(np.float32)  # (L, H, T, T)


def example_panels(store: SimilarityStore, cfg: RunConfig, window: int, stop: int, picks, heads: pl.DataFrame):
    """Heatmap panels for the chosen heads on tokens [0, stop) of a window, and where S came from."""
    tokens, sentence = store.tokens(window)[:stop], store.sentence_ids(window)[:stop]
    labels = {(r["layer"], r["head"]): r for r in heads.iter_rows(named=True)}
    dense, source = None, None
    panels = []
    for layer, head in picks:
        s = store.similarity(window, layer, head)
        if s.sparse:
            if dense is None:
                dense = recompute_dense(store, cfg, window)
            values, source = dense[layer, head], "recomputed by running the model on this window"
        else:
            values = s.values
            source = {"dense": "read from the store's dense tier", "vectors": "computed from the stored head vectors"}[s.source]
        row = labels.get((layer, head), {})
        anchor = f" '{row['top_anchor']}'" if row.get("label") == "anchor" else ""
        panels.append(
            {
                "values": values[:stop, :stop],
                "tokens": tokens,
                "sentence_id": sentence,
                "title": f"layer {layer}, head {head}: {row.get('label', '?')}{anchor} head",
            }
        )
    return panels, source


# ------------------------------------------------------------------------------ attnsim inspect
def default_png(window: int, layer: int, head: int) -> str:
    return f"inspect_w{window}_l{layer}_h{head}.png"


def inspect_head(console: Console, url: str, window: int, layer: int, head: int, png: str | None = None, top: int = 5, recompute: bool = False) -> str:
    """Print each token's top neighbours and write the heatmap of S; returns the PNG path."""
    store = open_store(url)
    s = store.similarity(window, layer, head)
    values, source = (
        s.values,
        {"dense": "the stored dense tier", "vectors": "the stored head vectors", "topk": "the stored top-k only (grey: not stored)"}[s.source],
    )
    if s.sparse and recompute:
        values = recompute_dense(store, RunConfig.from_dict(store.meta.config), window)[layer, head]
        source = "the model, run again on this window"
    doc = int(store.root["doc_id"][window])
    console.print(
        f"[bold]{store.url}[/] window {window} (document {doc}, {len(s.tokens)} tokens), layer {layer}, head {head}; "
        f"S = {'v_i · v_j' if store.kind == 'dot' else 'cos(v_i, v_j)'} from {source}",
        highlight=False,
    )
    console.print(f"text: {store.text(window)}", highlight=False, soft_wrap=True)
    table = Table(header_style="bold", title=f"top {top} neighbours of each token (j token S[i, j])")
    for col in ("i", "token", "sentence", "neighbours"):
        table.add_column(col, justify="right" if col in ("i", "sentence") else "left")
    n = len(s.tokens)
    index = store.root["topk_index"][window, layer, head, :n, :top]  # (T, top), read once for every token
    value = store.root["topk_value"][window, layer, head, :n, :top].astype(np.float32)
    for i, token in enumerate(s.tokens):
        near = [f"{j} {s.tokens[j]} {v:.3g}" for j, v in zip(index[i], value[i]) if j >= 0]
        table.add_row(str(i), token, str(int(s.sentence_id[i])), "  ".join(near))
    console.print(table)

    panel = {"values": values, "tokens": s.tokens, "sentence_id": s.sentence_id, "title": f"layer {layer}, head {head}: S from {source}"}
    fig = similarity_figure(
        [panel], store.kind, f"{store.meta.model.name}, window {window} (document {doc})", inch_per_token=0.12, max_side=28.0, fontsize=6.5 if n <= 150 else 5.0
    )
    png = png or default_png(window, layer, head)
    fig.savefig(png, dpi=100)
    console.print(f"heatmap written to {png}")
    return png
