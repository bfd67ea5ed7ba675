"""The stages in order, as the CLI and the `jobs/` entrypoints run them.

Each function takes the run's config, does one stage, and is safe to run again: prepare reuses an
identical store, extract skips units with a marker, reduce rewrites the tables.

Example::

    cfg = RunConfig(out="runs/default")
    run_all(cfg)
"""

from __future__ import annotations

import logging
import time

import fsspec

from attnsim.config import RunConfig, join_url
from attnsim.errors import UserError
from attnsim.executors.lifecycle import stop_local_ray_in_background
from attnsim.extract.progress import ExtractProgress
from attnsim.prepare.stage import PrepareResult, check_settings, local_map, prepare, token_classes
from attnsim.store.io import completed_units, consolidate, open_store, read_meta, store_exists, update_attrs
from attnsim.store.meta import CONFIG_SETTINGS

log = logging.getLogger("attnsim")


def model_info(cfg: RunConfig) -> dict:
    """What the store records about the model (loaded once on the driver, on the CPU)."""
    from attnsim.model.loading import load_model  # torch: not for the commands that only reduce or report

    loaded = load_model(cfg.model, trust_remote_code=cfg.trust_remote_code, allow_pickle_weights=cfg.allow_pickle_weights)
    return {**loaded.describe(), "max_tokens": loaded.max_tokens, "token_classes": token_classes(loaded.tokenizer)}


def save_config(cfg: RunConfig) -> str:
    """The resolved config beside the outputs, so stage commands and reruns use the same settings."""
    url = join_url(cfg.out, "config.yaml")
    fs, path = fsspec.core.url_to_fs(url)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "w") as f:
        f.write(cfg.to_yaml())
    return url


def load_run_config(out: str, overrides: dict) -> RunConfig:
    """The config saved in a run folder (if any) with overrides applied."""
    url = join_url(out, "config.yaml")
    fs, path = fsspec.core.url_to_fs(url)
    if fs.exists(path):
        import yaml

        with fs.open(path) as f:
            data = yaml.safe_load(f) or {}
        data.update({k: v for k, v in overrides.items() if v is not None})
        data["out"] = out
        return RunConfig.from_dict(data)
    return RunConfig.load(None, {**overrides, "out": out})


def stage_prepare(cfg: RunConfig, use_ray: bool = True, info: dict | None = None) -> PrepareResult:
    info = info or model_info(cfg)
    mapper = local_map
    if use_ray:
        from attnsim.executors.cluster import ensure_ray, ray_map

        def mapper(fn, items):  # Ray starts only once the inputs have been checked
            ensure_ray(owner=cfg.store_url)
            return ray_map(fn, items)

    result = prepare(cfg, info, map_partitions=mapper)
    save_config(cfg)
    return result


def model_and_pool(cfg: RunConfig) -> tuple[dict, object]:
    """`model_info` and the extraction actors. Ray starts on this thread while the model loads on
    another (Ray's processes come up while the driver reads the weights); the actors are spawned once
    the model loaded, before prepare, so that their own model loads overlap it. No actor ever tries
    a model the driver could not load: a bad model stays one clear error. No Ray and no pool when
    the store is already fully extracted (a rerun only reduces). Measured in benchmarks/RESULTS.md."""
    from concurrent.futures import ThreadPoolExecutor

    from attnsim.executors.actor_pool import start_pool
    from attnsim.executors.cluster import ensure_ray

    with ThreadPoolExecutor(1, thread_name_prefix="attnsim-model") as loader:
        loading = loader.submit(model_info, cfg)
        needed = not fully_extracted(cfg.store_url)
        if needed:
            ensure_ray(owner=cfg.store_url)
        info = loading.result()
    return info, (start_pool(cfg) if needed else None)


def fully_extracted(url: str) -> bool:
    try:
        return store_exists(url) and not pending_units(url)[0]
    except Exception:  # noqa: BLE001 - a store that cannot be read yet is prepare's to judge, next
        return False


def pending_units(url: str) -> tuple[list[int], object]:
    root = open_store(url)
    layout = read_meta(root).layout
    done = completed_units(url)
    return [u for u in range(layout.n_units) if u not in done], layout


def stage_extract(cfg: RunConfig, use_ray: bool = True, units: list[int] | None = None, fail_on_unit=None, pool=None) -> dict:
    """Extract every unit without a marker (or exactly `units`); returns counts. `pool`: an actor
    pool already started (`start_pool`), which this stage runs and closes."""
    url = cfg.store_url
    todo, layout = pending_units(url)
    # The store fixes what a unit computes: refuse a config that differs before any actor starts
    # (prepare checks the corpus and weights; these are the settings extraction itself depends on).
    extract_settings = {key: getattr(cfg, key) for key in CONFIG_SETTINGS}
    if not check_settings(url, extract_settings):
        raise UserError(f"store {url!r} was never fully prepared; run `attnsim prepare` (or `attnsim run`) with the same --out first")
    if units is not None:
        todo = sorted(units)
    tokens = read_meta(open_store(url)).corpus.tokens
    progress_url = join_url(cfg.out, "progress.json")
    with ExtractProgress(layout.n_units, layout.n_windows, tokens, progress_url, done_units=layout.n_units - len(todo)) as progress:
        if use_ray:
            from attnsim.executors.actor_pool import run_extract
            from attnsim.executors.cluster import ensure_ray

            ensure_ray(owner=url)
            result = run_extract(cfg, todo, on_unit=progress.advance, fail_on_unit=fail_on_unit, pool=pool)
        else:
            from attnsim.executors.local import run_extract_local

            result = run_extract_local(cfg, todo, on_unit=progress.advance)
    remaining, _ = pending_units(url)
    if not remaining:
        from attnsim.store.card import write_card

        update_attrs(url, extracted=True)
        write_card(url)  # README.md + attrs["dataset_card"]: the driver writes metadata, never an actor
    result["remaining"] = len(remaining)
    return result


def repair_extract(cfg: RunConfig, use_ray: bool = True, say=print) -> dict | None:
    """Redo exactly the units `verify` finds missing or corrupt; None when there is nothing to redo.

    Units over damaged token arrays are refused: their tokens come from prepare, and recomputing
    similarities over bad tokens would only hide the damage."""
    from attnsim.store.io import remove_marker
    from attnsim.store.verify import verify_store

    report = verify_store(cfg.store_url)
    for line in report.lines():
        say(line)
    if report.bad_tokens:
        units = ", ".join(f"{u:06d}" for u in sorted(report.bad_tokens)[:10])
        raise UserError(
            f"the token arrays of units {units} differ from prepare's checksum, and extraction cannot repair "
            f"them; rerun prepare: delete {cfg.store_url} (or use a new --out) and run `attnsim run` with the same settings"
        )
    if not report.bad_units:
        say("nothing to repair")
        return None
    for unit in report.bad_units:
        remove_marker(cfg.store_url, unit)
    return stage_extract(cfg, use_ray=use_ray, units=report.bad_units)


def stage_reduce(cfg: RunConfig) -> dict:
    from attnsim.reduce.stage import reduce_store

    return reduce_store(cfg)


def stage_report(cfg: RunConfig, window: int | None = None, heads: list[tuple[int, int]] | None = None) -> str:
    from attnsim.report.stage import write_report

    return write_report(cfg, window=window, heads=heads)


class StageClock:
    """Wall seconds per stage, in the order the stages ran: `attnsim run` prints them last."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = now - self._last
        self._last = now


def run_all(cfg: RunConfig, use_ray: bool = True) -> dict:
    clock = StageClock()
    info, pool = model_and_pool(cfg) if use_ray else (model_info(cfg), None)
    clock.lap("start")  # the model's description on the driver; Ray and the actor pool when used
    try:
        prepared = stage_prepare(cfg, use_ray, info)
        clock.lap("prepare")
        extracted = stage_extract(cfg, use_ray, pool=pool)
        clock.lap("extract")
    finally:
        if pool is not None:
            pool.close()  # a no-op once extraction closed it; on an error in prepare, frees the actors
    stopping = stop_local_ray_in_background() if use_ray else None  # reduce and report need no Ray
    try:
        summary = stage_reduce(cfg)
        consolidate(cfg.store_url)
        clock.lap("reduce")
        report = stage_report(cfg)
        clock.lap("report")
    finally:
        if stopping is not None:
            stopping.join()
    return {"prepare": prepared, "extract": extracted, "summary": summary, "report": report, "seconds": clock.seconds}
