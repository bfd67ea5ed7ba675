"""The report's figures, drawn from the statistics tables. Each function returns a matplotlib Figure.

No pyplot (no global state, no display backend): figures are `matplotlib.figure.Figure` objects that
the caller saves. Colours work in grey too: layers use a sequential map whose lightness grows with
depth (plus a marker per layer), labels use colours of distinct lightness, S uses cividis.

Example::

    fig = decay_figure(pl.read_parquet("runs/default/stats/distance_decay.parquet"))
    fig.savefig("decay.png", dpi=130)
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
from matplotlib import colormaps
from matplotlib.figure import Figure

from attnsim.reduce.statistics import LABELS

# Lightness of these colours in grey (0-255): 40, 81, 128, 165, 202, 244 - distinct without colour too.
LABEL_COLOURS = dict(zip(LABELS, ("#152a52", "#a0302a", "#d06a1a", "#72b4dc", "#b5dca8", "#f4f4f4")))
MARKERS = "osD^v<>ph*Xd"
MASS_PANELS = (("cls", "[CLS]"), ("sep", "[SEP]"), ("punct", "punctuation"), ("self", "self (i -> i)"), ("prev", "previous token"), ("next", "next token"))


def plain(text: str) -> str:
    """Text safe from matplotlib's mathtext ($...$)."""
    return str(text).replace("$", r"\$")


def _plain_ticks(ax) -> None:
    """Log axes ticked at 1, 2, 5 x 10^k and labelled 0.05, 0.1, 20 rather than 5 x 10^-2: easy to read
    off, and never without a label when the data span less than a decade."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator

    for axis, (lo, hi) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        decades = math.log10(max(hi, lo) / max(min(hi, lo), 1e-300))
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades < 2.5 else (1.0,)))
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_locator(NullLocator())
        axis.set_minor_formatter(NullFormatter())


def layer_colour(layer: int, n_layers: int):
    return colormaps["viridis"](0.85 * layer / max(n_layers - 1, 1))


# ------------------------------------------------------------------------------ 1. distance decay
def _binned(decay: pl.DataFrame, n_bins: int) -> pl.DataFrame:
    """Sum N_high, N_all and the random head's expected count over log-spaced distance bins: the ratio
    to chance (`r`) stays readable out to long distances."""
    edges = np.unique(np.round(np.geomspace(1, int(decay["distance"].max()) + 1, n_bins + 1)).astype(np.int64))
    return (
        decay.with_columns(bin=pl.Series(np.searchsorted(edges, decay["distance"].to_numpy(), side="right") - 1))
        .group_by(["layer", "head", "bin"])
        .agg(
            pl.col("n_high").sum(),
            pl.col("n_all").sum(),
            (pl.col("distance") * pl.col("n_all")).sum().alias("dw"),
            (pl.col("p_chance") * pl.col("n_all")).sum().alias("e"),
        )
        .with_columns(p=pl.col("n_high") / pl.col("n_all"), r=pl.col("n_high") / pl.col("e"), d=pl.col("dw") / pl.col("n_all"))
        .filter((pl.col("n_all") > 0) & (pl.col("e") > 0))
        .sort(["layer", "head", "bin"])
    )


def decay_figure(decay: pl.DataFrame, n_bins: int = 24) -> Figure:
    """P(d) / chance per layer (log-log, chance line at 1), and per layer the spread of its heads."""
    b = _binned(decay, n_bins)
    per_layer = (
        b.group_by(["layer", "bin"])
        .agg(pl.col("n_high").sum(), pl.col("e").sum(), pl.col("d").first())
        .with_columns(r=pl.col("n_high") / pl.col("e"))
        .sort(["layer", "bin"])
    )
    layers = sorted(b["layer"].unique().to_list())
    n = len(layers)
    cols = 3 if n > 4 else 2
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(13, max(5.0, 1.9 * rows + 1.2)), layout="constrained")
    grid = fig.add_gridspec(rows, 1 + cols, width_ratios=[2.2] + [1] * cols)
    main = fig.add_subplot(grid[:, 0])
    for l in layers:
        g = per_layer.filter(pl.col("layer") == l)
        main.plot(g["d"], g["r"], marker=MARKERS[l % len(MARKERS)], ms=4, lw=1.6, color=layer_colour(l, n), label=f"layer {l}")
    main.axhline(1.0, color="0.4", ls="--", lw=1, label="chance (random head)")
    main.set(
        xscale="log",
        yscale="log",
        xlabel="distance d = |i - j| (tokens)",
        ylabel="P(d) / P_chance(d)",
        title="High-similarity pairs by distance against a random head, per layer",
    )
    main.legend(fontsize=8, ncol=2 if n > 6 else 1, title="pooled over heads", title_fontsize=8, loc="lower left")
    main.grid(True, which="major", alpha=0.3)
    _plain_ticks(main)
    lo, hi = min(b["r"].filter(b["r"] > 0).min(), 0.8), max(b["r"].max(), 1.25)
    for idx, l in enumerate(layers):
        ax = fig.add_subplot(grid[idx // cols, 1 + idx % cols], sharex=main)
        g = b.filter(pl.col("layer") == l)
        for h in g["head"].unique().sort().to_list():
            gh = g.filter(pl.col("head") == h)
            ax.plot(gh["d"], gh["r"], color="0.55", lw=0.7, alpha=0.8)
        gl = per_layer.filter(pl.col("layer") == l)
        ax.plot(gl["d"], gl["r"], color="black", lw=1.8)
        ax.axhline(1.0, color="0.4", ls="--", lw=0.8)
        ax.set(xscale="log", yscale="log", ylim=(lo * 0.8, hi * 1.25))
        ax.set_title(f"layer {l}" + (" (grey: heads, black: layer)" if idx == 0 else ""), fontsize=9)
        ax.tick_params(labelsize=7)
        _plain_ticks(ax)
        if idx // cols == rows - 1 or idx + cols >= n:
            ax.set_xlabel("d (tokens)", fontsize=8)
        if idx % cols == 0:
            ax.set_ylabel("P(d) / chance", fontsize=8)
    return fig


# ------------------------------------------------------------------------------ 2. layers with CIs
def layer_ci_figure(layers: pl.DataFrame) -> Figure:
    """Per layer, ratios to the random head with 95% bootstrap CIs, and the chance line at 1."""
    panels = (
        ("mean_distance_ratio", "mean high-pair distance"),
        ("same_sentence_ratio_matched", "same sentence, at matched distances"),
        ("repetition_share_ratio", "repetition share"),
        ("separator_share_ratio", "separator share ([SEP], final punct.)"),
    )
    fig = Figure(figsize=(15, 4.2), layout="constrained")
    axes = fig.subplots(1, len(panels))
    x = layers["layer"].to_numpy()
    for ax, (col, title) in zip(axes, panels):
        y = layers[col].to_numpy()
        if f"{col}_ci_low" in layers.columns:
            err = np.abs(np.vstack([y - layers[f"{col}_ci_low"].to_numpy(), layers[f"{col}_ci_high"].to_numpy() - y]))
        else:
            err = None
        ax.errorbar(x, y, yerr=err, fmt="o-", color="black", ecolor="0.35", elinewidth=2.2, capsize=5, ms=5, lw=1.2)
        ax.axhline(1.0, color="0.5", ls="--", lw=1)
        finite = y[np.isfinite(y)]
        if finite.size:
            ax.set_ylim(min(0.9, finite.min() * 0.8), max(1.1, finite.max() * 1.1))
        ax.set(title=title, xlabel="layer", ylabel="x a random head (1 = chance)", xticks=x)
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle("Per layer, pooled over heads, against a random head (error bars: 95% bootstrap CI over windows; dashed: chance)", fontsize=11)
    return fig


# ------------------------------------------------------------------------------ 3. head map
def head_map_figure(heads: pl.DataFrame) -> Figure:
    """Layers x heads: colour = specialisation label, text = top anchor token and its share."""
    n_layers, n_heads = heads["layer"].max() + 1, heads["head"].max() + 1
    fig = Figure(figsize=(max(7.0, 0.95 * n_heads + 1.6), max(3.5, 0.62 * n_layers + 1.9)), layout="constrained")
    ax = fig.subplots()
    for row in heads.iter_rows(named=True):
        colour = LABEL_COLOURS.get(row["label"], "white")
        ax.add_patch(_rect(row["head"], row["layer"], colour))
        grey = _grey(colour)
        anchor = row["top_anchor"] or "-"
        anchor = anchor if len(anchor) <= 9 else anchor[:8] + "…"
        anchor = plain(anchor if any(ch.isalnum() for ch in anchor) else f"\u2018{anchor}\u2019")  # a lone '.' stays visible
        share = row["top_anchor_share"]
        text = anchor if share is None or math.isnan(share) else f"{anchor}\n{100 * share:.0f}%"
        ax.text(row["head"], row["layer"], text, ha="center", va="center", fontsize=7.5, color="white" if grey < 120 else "black")
    ax.set(xlim=(-0.5, n_heads - 0.5), ylim=(n_layers - 0.5, -0.5), xlabel="head", ylabel="layer", xticks=range(n_heads), yticks=range(n_layers))
    ax.set_aspect("auto")
    ax.tick_params(length=0)
    counts = heads["label"].value_counts()
    count = dict(zip(counts["label"].to_list(), counts["count"].to_list()))
    handles = [_rect(0, 0, LABEL_COLOURS[lab]) for lab in LABELS]
    ax.legend(
        handles,
        [f"{lab} ({count.get(lab, 0)})" for lab in LABELS],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.09 if n_layers > 8 else -0.16),
        ncol=len(LABELS),
        fontsize=8,
        frameon=False,
    )
    ax.set_title("Head specialisation: colour = label, text = top anchor token and its share of high pairs", fontsize=10)
    return fig


def _rect(x, y, colour):
    from matplotlib.patches import Rectangle

    return Rectangle((x - 0.5, y - 0.5), 1, 1, facecolor=colour, edgecolor="white", lw=1.5)


def _grey(colour: str) -> float:
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return 0.299 * r + 0.587 * g + 0.114 * b


# ------------------------------------------------------------------------------ 4. attention mass
def attention_mass_figure(heads: pl.DataFrame) -> Figure:
    """Attention weight on [CLS], [SEP], punctuation, self, previous, next over uniform attention's
    (1 = chance, dashed): heads and layer mean, log scale."""
    fig = Figure(figsize=(13, 6.8), layout="constrained")
    axes = fig.subplots(2, 3, sharex=True)
    layers = np.arange(heads["layer"].max() + 1)
    rng = np.random.default_rng(0)
    for ax, (cat, title) in zip(axes.ravel(), MASS_PANELS):
        col = f"mass_{cat}_ratio"
        x = heads["layer"].to_numpy() + rng.uniform(-0.18, 0.18, heads.height)
        ax.scatter(x, heads[col].to_numpy(), s=10, color="0.6", label="one head")
        mean = heads.group_by("layer").agg(pl.col(col).mean()).sort("layer")
        ax.plot(mean["layer"], mean[col], "o-", color="black", lw=1.6, ms=5, label="layer mean")
        ax.axhline(1.0, color="0.4", ls="--", lw=1)
        ax.set(title=f"attention on {title}", yscale="log", xticks=layers)
        ax.grid(True, axis="y", alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("attention weight / uniform attention's")
    for ax in axes[1]:
        ax.set_xlabel("layer")
    axes[0, 0].legend(fontsize=8, loc="upper right")
    fig.suptitle(
        "Where attention goes (Clark et al. 2019 statistics), mean over real query tokens and windows, against uniform attention over the window's tokens",
        fontsize=11,
    )
    return fig


# ------------------------------------------------------------------------------ 5. S matrices
def similarity_axes(ax, values: np.ndarray, tokens: list[str], sentence_id: np.ndarray, title: str, fontsize: float = 6.5):
    """One S heatmap with tokens on both axes and lines at sentence boundaries; returns the image."""
    cmap = colormaps["cividis"].with_extremes(bad="#d9d9d9")
    finite = values[np.isfinite(values)]
    vmin, vmax = np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0)
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest", aspect="equal")
    n = len(tokens)
    step = max(1, math.ceil(n / 150))  # beyond ~150 labels per axis they overlap: label every step-th token
    ticks = np.arange(0, n, step)
    labels = [plain(tokens[i]) for i in ticks]
    ax.set_xticks(ticks, labels, rotation=90, fontsize=fontsize)
    ax.set_yticks(ticks, labels, fontsize=fontsize)
    ax.tick_params(length=1.5, pad=1)
    for b in np.nonzero(np.diff(sentence_id) != 0)[0] + 0.5:  # between token b - 0.5 and b + 0.5
        for line in (ax.axvline, ax.axhline):
            line(b, color="white", lw=1.3)
            line(b, color="black", lw=0.5, ls=(0, (2, 2)))
    ax.set_xlabel("token j", fontsize=8)
    ax.set_ylabel("token i", fontsize=8)
    ax.set_title(plain(title), fontsize=9)
    return image


def similarity_figure(panels: list[dict], kind: str, suptitle: str, inch_per_token: float = 0.1, max_side: float = 7.0, fontsize: float = 6.5) -> Figure:
    """panels: dicts with values, tokens, sentence_id, title. One heatmap per head, own colour scale.

    Laid out by hand in inches (not constrained layout, which measures every one of the hundreds of
    token labels again and triples the drawing time): the margins come from the longest token.
    """
    cols = 2 if len(panels) > 1 else 1
    rows = math.ceil(len(panels) / cols)
    n = max(len(p["tokens"]) for p in panels)
    side = min(max_side, max(3.5, inch_per_token * n))  # the matrix, inches
    longest = max(len(t) for p in panels for t in p["tokens"])
    margin = longest * fontsize * 0.62 / 72 + 0.45  # token labels + axis label
    bar = 1.05  # colour bar, its ticks and its label
    cell_w, cell_h = margin + side + 0.15 + bar + 0.25, 0.45 + side + margin + 0.2
    width, height = cols * cell_w, rows * cell_h + 0.45
    fig = Figure(figsize=(width, height))
    label = "S[i, j] = v_i · v_j" if kind == "dot" else "S[i, j] = cos(v_i, v_j)"
    for k, p in enumerate(panels):
        x0 = (k % cols) * cell_w + margin
        y0 = height - 0.45 - (k // cols) * cell_h - 0.45 - side
        ax = fig.add_axes((x0 / width, y0 / height, side / width, side / height))
        image = similarity_axes(ax, p["values"], p["tokens"], p["sentence_id"], p["title"], fontsize=fontsize)
        cax = fig.add_axes(((x0 + side + 0.15) / width, (y0 + 0.1 * side) / height, 0.18 / width, 0.8 * side / height))
        colour_bar = fig.colorbar(image, cax=cax, extend="both", extendfrac=0.03)
        colour_bar.set_label(label, fontsize=8)
        colour_bar.ax.tick_params(labelsize=7)
    fig.suptitle(plain(suptitle), fontsize=11, y=1 - 0.12 / height, va="top")
    return fig
