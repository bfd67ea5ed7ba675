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
from typing import Optional

import typer

from attnsim import cli_tools
from attnsim.cli_flags import config_flags, field_help
from attnsim.cli_output import console, guard, quiet
from attnsim.config import RunConfig
from attnsim.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Self-attention head output similarities over a corpus.")


# Options that are not config fields. None means "not given": keep the config's value.
ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config (see jobs/configs/); flags override it.")
OutOpt = typer.Option(None, "--out", "-o", help=field_help("out"))
LocalOpt = typer.Option(False, "--local", help="Run in this process without Ray (debugging, memory:// stores).")


# The config fields each command takes as flags. `prepare` takes every setting that fixes the store
# (STORE_SETTINGS: a store refuses a run whose settings differ), `run` those and the rest.
PREPARE_FIELDS = (
    "model",
    "corpus",
    "text_column",
    "one_per_line",
    "hf_split",
    "trust_remote_code",
    "allow_pickle_weights",
    "store",
    "max_tokens",
    "sentence_separator",
    "similarity_kind",
    "k",
    "tiers",
    "windows_per_shard",
    "docs_per_partition",
)
EXTRACT_FIELDS = ("workers", "batch_size", "device", "dtype", "actors_per_gpu", "cpus_per_worker", "unit_writers", "max_unit_retries", "actor_wait_timeout_s")
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


# Commands beside the pipeline's stages, in cli_tools.py (their options are long signatures).
app.command("inspect")(cli_tools.inspect_head)
app.command()(cli_tools.segment)


def main() -> None:  # pragma: no cover - `python -m attnsim.cli`
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
