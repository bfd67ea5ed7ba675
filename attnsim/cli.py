"""The `attnsim` command. User errors become one line on stderr and exit code 2.

    attnsim run                      # embedded defaults: model minilm, corpus lee -> runs/default
    attnsim run --model PATH --corpus 'texts/*.txt' --out runs/mine
    attnsim prepare|extract|reduce --out runs/mine
    attnsim info runs/default/store.zarr
    attnsim verify runs/default/store.zarr
    attnsim report runs/default
    attnsim inspect runs/default/store.zarr --window 3 --layer 5 --head 2
"""

from __future__ import annotations

import sys
from enum import Enum
from typing import Optional

import typer
from attnsim.cli_flags import config_flags, field_help
from attnsim.cli_output import guard, quiet, console
from attnsim.config import RunConfig
from attnsim.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Self-attention head output similarities over a corpus.")


class Kind(str, Enum):
    dot = "dot"
    cosine = "cosine"


# Options that are not config fields. None means "not given": keep the config's value.
ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config (see jobs/configs/); flags override it.")
OutOpt = typer.Option(None, "--out", "-o", help=field_help("out"))
LocalOpt = typer.Option(False, "--local", help="Run in this process without Ray (debugging, memory:// stores).")


# The config fields each command takes as flags. `prepare` takes every setting that fixes the store
# (STORE_SETTINGS: a store refuses a run whose settings differ), `run` those and the rest.
PREPARE_FIELDS = ("model", "corpus", "text_column", "one_per_line", "hf_split", "trust_remote_code", "allow_pickle_weights",
                  "store", "max_tokens", "sentence_separator", "similarity_kind", "k", "tiers", "windows_per_shard", "docs_per_partition")
EXTRACT_FIELDS = ("workers", "batch_size", "device", "dtype", "actors_per_gpu", "cpus_per_worker", "unit_writers", "max_unit_retries",
                  "actor_wait_timeout_s")
REDUCE_FIELDS = ("high_mode", "quantile", "bootstrap", "seed", "top_anchors", "dask_scheduler")


@app.command()
@config_flags(*PREPARE_FIELDS, *EXTRACT_FIELDS, *REDUCE_FIELDS)
def run(overrides: dict, config: Optional[str] = ConfigOpt, out: Optional[str] = OutOpt, local: bool = LocalOpt):
    """Run the whole job: prepare, extract, reduce, report (resumes an interrupted run in the same --out)."""
    quiet()

    def go():
        from attnsim.pipeline import run_all
        from attnsim.report.tables import print_summary

        cfg = RunConfig.load(config, {**overrides, "out": out})
        result = run_all(cfg, use_ray=not local)
        print_summary(console, cfg, result)

    guard(go)


def _stage_config(config, out, overrides) -> RunConfig:
    from attnsim.pipeline import load_run_config

    if config:
        return RunConfig.load(config, {**overrides, **({"out": out} if out else {})})
    return load_run_config(out or RunConfig.model_fields["out"].default, overrides)


@app.command()
@config_flags(*PREPARE_FIELDS)
def prepare(overrides: dict, config: Optional[str] = ConfigOpt, out: Optional[str] = OutOpt, local: bool = LocalOpt):
    """Stage 1: split and tokenise the corpus into windows; create the store."""
    quiet()

    def go():
        from attnsim.pipeline import stage_prepare

        cfg = _stage_config(config, out, overrides)
        r = stage_prepare(cfg, use_ray=not local)
        word = "kept (already prepared)" if r.reused else "written"
        console.print(f"store {r.url} {word}: {r.n_documents} documents, {r.n_windows} windows, {r.n_tokens} tokens")
        for kind, problem in (r.problems or {}).items():  # skipped or repaired documents, never fatal
            console.print(f"document problem {kind}: {problem['count']} (e.g. {', '.join(problem['examples'][:3])})", highlight=False)

    guard(go)


@app.command()
@config_flags(*EXTRACT_FIELDS)
def extract(
    overrides: dict,
    config: Optional[str] = ConfigOpt,
    out: Optional[str] = OutOpt,
    repair: bool = typer.Option(False, "--repair", help="Redo the units that `attnsim verify` finds missing or corrupt."),
    local: bool = LocalOpt,
):
    """Stage 2: run the model over every unit without a marker."""
    quiet()

    def go():
        from attnsim.pipeline import stage_extract

        cfg = _stage_config(config, out, overrides)
        if repair:
            from attnsim.pipeline import repair_extract

            r = repair_extract(cfg, use_ray=not local, say=console.print)
            if r is None:
                return
        else:
            r = stage_extract(cfg, use_ray=not local)
        console.print(f"extracted {r['done']} units ({r['retried']} retried); {r['remaining']} remaining")

    guard(go)


@app.command()
@config_flags(*REDUCE_FIELDS)
def reduce(overrides: dict, config: Optional[str] = ConfigOpt, out: Optional[str] = OutOpt):
    """Stage 3: corpus statistics from the store into <out>/stats/."""
    quiet()

    def go():
        from attnsim.pipeline import stage_reduce
        from attnsim.report.tables import print_layer_table

        cfg = _stage_config(config, out, overrides)
        summary = stage_reduce(cfg)
        print_layer_table(console, summary)
        console.print(f"statistics written to {cfg.stats_url}")

    guard(go)


@app.command()
def info(store: str = typer.Argument(..., help="Store path or URL.")):
    """Describe a store: model, corpus, windows, tokens, tiers, progress."""
    quiet()

    def go():
        from attnsim.report.tables import print_store_info

        print_store_info(console, store)

    guard(go)


@app.command()
def verify(store: str = typer.Argument(..., help="Store path or URL.")):
    """Check every unit's marker against its shards; exit 1 if any unit is missing or corrupt."""
    quiet()

    def go():
        from attnsim.store.verify import verify_store

        report = verify_store(store)
        for line in report.lines():
            console.print(line, highlight=False)
        if report.bad_units:
            raise typer.Exit(1)

    guard(go)


@app.command()
def report(
    run_dir: str = typer.Argument(..., help="Run folder (the --out of `attnsim run`)."),
    window: Optional[int] = typer.Option(None, help="Window of the example similarity matrices (default: chosen)."),
    heads: Optional[str] = typer.Option(None, help="Heads of the example matrices as LAYER:HEAD,... (default: chosen)."),
):
    """Write <run>/report/: figures, report.md and a self-contained report.html with the claims table."""
    quiet()

    def go():
        from attnsim.pipeline import load_run_config, stage_report

        picks = None
        if heads:
            try:
                picks = [tuple(int(x) for x in item.split(":")) for item in heads.split(",")]
                assert all(len(p) == 2 for p in picks)
            except (ValueError, AssertionError):
                raise UserError(f"--heads {heads!r} is not a list of LAYER:HEAD pairs; write e.g. --heads 0:3,5:7") from None
        path = stage_report(load_run_config(run_dir, {}), window=window, heads=picks)
        console.print(f"report written to {path} (open report.html)")

    guard(go)


@app.command("inspect")
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


@app.command()
def segment(
    source: Optional[str] = typer.Argument(None, help="A text file to segment, or - for standard input."),
    corpus: Optional[str] = typer.Option(None, "--corpus", help="Segment every document of a corpus. --eval: lee (default), "
                                          "wiki:dev|test, packages:dev|test, or your .jsonl with --segments-column."),
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
    cutoff: str = typer.Option("depth", help="Boundary count rule: depth (valleys >= --threshold σ deep) or hearst (mean - σ/2 of the valley depths)."),
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

        cfg = make_config(layers=layers, heads=heads, head_stats=head_stats, head_label=head_label,
                          similarity=similarity_kind.value, block=block, block_fraction=block_fraction,
                          min_segment=min_segment, window=window,
                          cutoff=cutoff, threshold=threshold, fraction=min_fraction)
        if evaluate and (segments_column or is_builtin(corpus or "")):
            structured_eval_command(console, corpus=corpus, model=model, cfg=cfg, n_samples=samples, seed=seed,
                                    json_path=json_out, segments_column=segments_column)
        elif evaluate:
            eval_command(console, corpus=corpus or "lee", model=model, cfg=cfg, n_samples=samples, seed=seed,
                         json_path=json_out, text_column=text_column, one_per_line=one_per_line)
        else:
            segment_command(console, source=source, corpus=corpus, model=model, jsonl=jsonl, n_segments=n_segments,
                            cfg=cfg, text_column=text_column, one_per_line=one_per_line, segments_column=segments_column)

    guard(go)


def main() -> None:  # pragma: no cover - `python -m attnsim.cli`
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
