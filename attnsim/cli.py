"""The `attnsim` command. User errors become one line on stderr and exit code 2.

    attnsim run                      # embedded defaults: model minilm, corpus lee -> runs/default
    attnsim run --model PATH --corpus 'texts/*.txt' --out runs/mine
    attnsim prepare|extract|reduce --out runs/mine
    attnsim info runs/default/store.zarr
    attnsim verify runs/default/store.zarr
"""

from __future__ import annotations

import logging
import os
import sys
from enum import Enum
from typing import Optional

import typer
from rich.console import Console

from attnsim.config import RunConfig
from attnsim.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Self-attention head output similarities over a corpus.")
console = Console()
err_console = Console(stderr=True)


class Separator(str, Enum):
    none = "none"
    sep = "sep"


class Kind(str, Enum):
    dot = "dot"
    cosine = "cosine"


def _fail(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _quiet() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    for name in ("transformers", "ray", "distributed", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def _guard(fn):
    """Run fn, turning a UserError into one line and exit code 2."""
    try:
        return fn()
    except UserError as e:
        _fail(str(e))


# Options shared by `run` and the stage commands. None means "not given": keep the config's value.
ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config (see jobs/configs/); flags override it.")
OutOpt = typer.Option(None, "--out", "-o", help="Run folder (default runs/default); local path or fsspec URL.")
ModelOpt = typer.Option(None, "--model", "-m", help="Model: `minilm`, a local folder or a hub id.")
CorpusOpt = typer.Option(None, "--corpus", help="Corpus: `lee`, a folder/glob of .txt, .jsonl/.parquet, or hf:NAME.")
LocalOpt = typer.Option(False, "--local", help="Run in this process without Ray (debugging, memory:// stores).")


def _overrides(**kw) -> dict:
    out = {}
    for key, value in kw.items():
        if value is None or value is False:
            continue
        if isinstance(value, Enum):
            value = value.value
        if key == "tiers":
            value = [t.strip() for t in value.split(",") if t.strip()]
        out[key] = value
    return out


@app.command()
def run(
    config: Optional[str] = ConfigOpt,
    model: Optional[str] = ModelOpt,
    corpus: Optional[str] = CorpusOpt,
    out: Optional[str] = OutOpt,
    store: Optional[str] = typer.Option(None, help="Store location (default <out>/store.zarr); may be s3://..."),
    text_column: Optional[str] = typer.Option(None, help="Text column of .jsonl/.parquet/datasets corpora."),
    one_per_line: bool = typer.Option(False, "--one-per-line", help=".txt files hold one document per line."),
    max_tokens: Optional[int] = typer.Option(None, help="Tokens per window incl. [CLS]/[SEP] (default 256)."),
    sentence_separator: Optional[Separator] = typer.Option(None, help="`sep` inserts [SEP] between sentences."),
    similarity_kind: Optional[Kind] = typer.Option(None, "--similarity", help="S = dot product (default) or cosine."),
    k: Optional[int] = typer.Option(None, "--k", help="Neighbours kept per token (default 8)."),
    tiers: Optional[str] = typer.Option(None, help="Comma list of extra tiers: vectors, dense."),
    batch_size: Optional[int] = typer.Option(None, help="Windows per forward pass."),
    windows_per_shard: Optional[int] = typer.Option(None, help="Windows per work unit / Zarr shard."),
    workers: Optional[int] = typer.Option(None, help="Extraction actors (default: one per GPU, else per 4 CPUs)."),
    device: Optional[str] = typer.Option(None, help="auto, cpu or cuda."),
    dtype: Optional[str] = typer.Option(None, help="Model weights on GPU: float32, float16, bfloat16."),
    high_mode: Optional[str] = typer.Option(None, help="High pairs: topk (default) or quantile."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow model code from the hub to run."),
    allow_pickle_weights: bool = typer.Option(False, "--allow-pickle-weights", help="Allow non-safetensors weights."),
    local: bool = LocalOpt,
):
    """Run the whole job: prepare, extract, reduce (resumes an interrupted run in the same --out)."""
    _quiet()
    overrides = _overrides(**{k_: v for k_, v in locals().items() if k_ not in ("config", "local")})

    def go():
        from attnsim.pipeline import run_all
        from attnsim.summary import print_summary

        cfg = RunConfig.load(config, overrides)
        result = run_all(cfg, use_ray=not local)
        print_summary(console, cfg, result)

    _guard(go)


def _stage_config(config, out, overrides) -> RunConfig:
    from attnsim.pipeline import load_run_config

    if config:
        return RunConfig.load(config, {**overrides, **({"out": out} if out else {})})
    return load_run_config(out or "runs/default", overrides)


@app.command()
def prepare(
    config: Optional[str] = ConfigOpt,
    out: Optional[str] = OutOpt,
    model: Optional[str] = ModelOpt,
    corpus: Optional[str] = CorpusOpt,
    max_tokens: Optional[int] = typer.Option(None),
    local: bool = LocalOpt,
):
    """Stage 1: split and tokenise the corpus into windows; create the store."""
    _quiet()

    def go():
        from attnsim.pipeline import stage_prepare

        cfg = _stage_config(config, out, _overrides(model=model, corpus=corpus, max_tokens=max_tokens))
        r = stage_prepare(cfg, use_ray=not local)
        word = "kept (already prepared)" if r.reused else "written"
        console.print(f"store {r.url} {word}: {r.n_documents} documents, {r.n_windows} windows, {r.n_tokens} tokens")

    _guard(go)


@app.command()
def extract(
    config: Optional[str] = ConfigOpt,
    out: Optional[str] = OutOpt,
    repair: bool = typer.Option(False, "--repair", help="Redo the units that `attnsim verify` finds missing or corrupt."),
    workers: Optional[int] = typer.Option(None),
    batch_size: Optional[int] = typer.Option(None),
    local: bool = LocalOpt,
):
    """Stage 2: run the model over every unit without a marker."""
    _quiet()

    def go():
        from attnsim.pipeline import stage_extract

        cfg = _stage_config(config, out, _overrides(workers=workers, batch_size=batch_size))
        units = None
        if repair:
            from attnsim.verify import verify_store

            report = verify_store(cfg.store_url)
            units = report.bad_units
            for line in report.lines():
                console.print(line)
            if not units:
                console.print("nothing to repair")
                return
            from attnsim.store import remove_marker

            for unit in units:
                remove_marker(cfg.store_url, unit)
        r = stage_extract(cfg, use_ray=not local, units=units)
        console.print(f"extracted {r['done']} units ({r['retried']} retried); {r['remaining']} remaining")

    _guard(go)


@app.command()
def reduce(config: Optional[str] = ConfigOpt, out: Optional[str] = OutOpt):
    """Stage 3: corpus statistics from the store into <out>/stats/."""
    _quiet()

    def go():
        from attnsim.pipeline import stage_reduce
        from attnsim.summary import print_layer_table

        cfg = _stage_config(config, out, {})
        summary = stage_reduce(cfg)
        print_layer_table(console, summary)
        console.print(f"statistics written to {cfg.stats_url}")

    _guard(go)


@app.command()
def info(store: str = typer.Argument(..., help="Store path or URL.")):
    """Describe a store: model, corpus, windows, tokens, tiers, progress."""
    _quiet()

    def go():
        from attnsim.summary import print_store_info

        print_store_info(console, store)

    _guard(go)


@app.command()
def verify(store: str = typer.Argument(..., help="Store path or URL.")):
    """Check every unit's marker against its shards; exit 1 if any unit is missing or corrupt."""
    _quiet()

    def go():
        from attnsim.verify import verify_store

        report = verify_store(store)
        for line in report.lines():
            console.print(line, highlight=False)
        if report.bad_units:
            raise typer.Exit(1)

    _guard(go)


def main() -> None:  # pragma: no cover - `python -m attnsim.cli`
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
