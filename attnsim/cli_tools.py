"""The `attnsim` commands beside the pipeline's stages: `inspect` (one head on one window) and
`segment` (text segmentation). cli.py registers them on its app."""

from __future__ import annotations

from enum import Enum
from typing import Optional

import typer

from attnsim.cli_output import console, guard, quiet


class Kind(str, Enum):
    dot = "dot"
    cosine = "cosine"


def inspect_head(
    store: str = typer.Argument(..., help="Store path or URL."),
    window: int = typer.Option(..., "--window", "-w", help="Window index."),
    layer: int = typer.Option(..., "--layer", "-l", help="Layer index (0 = first)."),
    head: int = typer.Option(..., "--head", help="Head index within the layer."),
    top: int = typer.Option(5, "--top", help="Neighbours printed per token."),
    png: Optional[str] = typer.Option(None, "--png", help="Heatmap path (default inspect_w<W>_l<L>_h<H>.png)."),
    recompute: bool = typer.Option(False, "--recompute", help="Run the model for the full S when the store keeps only top k."),
):
    """Print each token's most similar tokens for one head on one window, and write the heatmap of S."""
    quiet()

    def go():
        from attnsim.report.matrices import inspect_head as run_inspect

        run_inspect(console, store, window, layer, head, png=png, top=top, recompute=recompute)

    guard(go)


def segment(  # long: its options are its signature: typer reads each parameter as an option
    source: Optional[str] = typer.Argument(None, help="A text file to segment, or - for standard input."),
    corpus: Optional[str] = typer.Option(
        None,
        "--corpus",
        help="Segment every document of a corpus. --eval: lee (default), wiki:dev|test, packages:dev|test, or your .jsonl with --segments-column.",
    ),
    model: str = typer.Option("minilm", "--model", "-m", help="Model: `minilm`, a local folder or a hub id."),
    jsonl: Optional[str] = typer.Option(None, "--jsonl", help="Also write segments as JSON lines with character offsets; - prints only them."),
    n_segments: Optional[int] = typer.Option(None, "--segments", help="Exact number of segments per text instead of the data-driven cutoff."),
    segments_column: Optional[str] = typer.Option(None, "--segments-column", help="Column: each document's segment count; --eval: its sections."),
    layers: str = typer.Option("-1", help="Comma list of layers whose heads all vote; negative counts from the last."),
    heads: Optional[str] = typer.Option(None, help="Explicit voting heads LAYER:HEAD,... (overrides --layers)."),
    head_stats: Optional[str] = typer.Option(None, help="A run's stats/head_stats.parquet: the heads it labels --head-label vote."),
    head_label: str = typer.Option("sentence", help="Label of the heads taken from --head-stats."),
    similarity_kind: Kind = typer.Option(Kind.cosine, "--similarity", help="S = cosine (default) or dot product of head outputs."),
    block: int = typer.Option(4, help="Sentences compared on each side of a gap (at least)."),
    block_fraction: float = typer.Option(0.03, help="... or this fraction of the text's sentences, if more."),
    min_segment: int = typer.Option(2, help="Fewest sentences in a segment."),
    cutoff: str = typer.Option(
        "penalty",
        help="Boundary count rule: penalty (the optimal set at 0.435·ln(sentences) a boundary; penalty:W sets the weight), "
        "depth (valleys >= --threshold σ deep) or hearst (mean - σ/2 of the valley depths).",
    ),
    threshold: float = typer.Option(2.5, help="depth cutoff: valley depth in standard deviations of the text's cohesion curve."),
    min_fraction: float = typer.Option(0.04, help="A segment also holds at least this fraction of the text's sentences."),
    window: int = typer.Option(0, help="0: each sentence is its own model window; N: overlapping N-token windows across the gaps."),
    evaluate: bool = typer.Option(False, "--eval", help="Pk / WindowDiff vs TextTiling and random on Choi-style sets or structured documents."),
    samples: int = typer.Option(100, help="--eval: samples per subset (3-5, 6-8, 9-11, 3-11 sentences per piece); structured: most documents."),
    seed: int = typer.Option(0, help="--eval: seed of the test sets."),
    json_out: Optional[str] = typer.Option(None, "--json", help="--eval: also write the table as JSON."),
    text_column: str = typer.Option("text", help="Text column of .jsonl/.parquet/datasets corpora."),
    one_per_line: bool = typer.Option(False, "--one-per-line", help=".txt files hold one document per line."),
):
    """Split texts into topical segments where little context similarity crosses a sentence gap; --eval measures it."""
    quiet()

    def go():
        from attnsim.segment.command import eval_command, make_config, segment_command, structured_eval_command
        from attnsim.segment.devset import is_builtin

        cfg = make_config(
            layers=layers,
            heads=heads,
            head_stats=head_stats,
            head_label=head_label,
            similarity=similarity_kind.value,
            block=block,
            block_fraction=block_fraction,
            min_segment=min_segment,
            window=window,
            cutoff=cutoff,
            threshold=threshold,
            fraction=min_fraction,
        )
        if evaluate and (segments_column or is_builtin(corpus or "")):
            structured_eval_command(
                console, corpus=corpus, model=model, cfg=cfg, n_samples=samples, seed=seed, json_path=json_out, segments_column=segments_column
            )
        elif evaluate:
            eval_command(
                console,
                corpus=corpus or "lee",
                model=model,
                cfg=cfg,
                n_samples=samples,
                seed=seed,
                json_path=json_out,
                text_column=text_column,
                one_per_line=one_per_line,
            )
        else:
            segment_command(
                console,
                source=source,
                corpus=corpus,
                model=model,
                jsonl=jsonl,
                n_segments=n_segments,
                cfg=cfg,
                text_column=text_column,
                one_per_line=one_per_line,
                segments_column=segments_column,
            )

    guard(go)
