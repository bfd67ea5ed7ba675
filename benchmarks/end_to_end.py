"""The harness's reduce and end-to-end measures (split from harness.py): the reduce in fresh
processes on the default store and on it repeated 4x (time, peak memory), and `attnsim run` end to end."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from attnsim.config import RunConfig
from attnsim.store.io import create_store, open_store, read_unit, write_marker, write_unit
from attnsim.store.meta import TIER_ARRAYS, TOKEN_ARRAYS, Layout, layout_from_attrs


def replicate_store(src: str, dst: str, times: int) -> None:
    """The store's whole units copied `times` times (arrays and markers): a corpus `times` as long."""
    shutil.rmtree(dst, ignore_errors=True)
    base = open_store(src)
    attrs = dict(base.attrs)
    layout = layout_from_attrs(attrs)
    whole = layout.n_windows // layout.windows_per_shard  # a partial last unit would break alignment
    big = Layout(**{**layout.__dict__, "n_windows": whole * layout.windows_per_shard * times})
    keep = {k: v for k, v in attrs.items() if k not in ("layout", "windows_per_shard", "n_units", "format_version")}
    root = create_store(dst, big, keep)
    names = list(TOKEN_ARRAYS) + [n for t in attrs["tiers"] for n in TIER_ARRAYS[t]]
    for unit in range(whole):
        arrays = read_unit(base, layout, unit, names)
        for copy in range(times):
            target = copy * whole + unit
            write_unit(root, big, target, arrays)
            a, b = big.unit_windows(target)
            write_marker(dst, target, {"windows": [a, b]})


def reduce_probe(store: str, out: str, bootstrap: int) -> dict:
    """Reduce in a fresh process: wall time, peak RSS, and the peak RSS growth during the reduce
    (sampled every 5 ms against the RSS just before it, so imports do not hide the working set)."""
    code = (
        "import json, threading, time, psutil\n"
        "from attnsim.config import RunConfig\n"
        "from attnsim.reduce.stage import reduce_store\n"
        "import attnsim.model.loading, polars, dask.array, tokenizers\n"
        "proc = psutil.Process(); before = proc.memory_info().rss; peak = [before]; done = threading.Event()\n"
        "def sample():\n"
        "    while not done.is_set():\n"
        "        peak[0] = max(peak[0], proc.memory_info().rss); time.sleep(0.005)\n"
        "threading.Thread(target=sample, daemon=True).start()\n"
        "t = time.perf_counter()\n"
        f"reduce_store(RunConfig(out={out!r}, bootstrap={bootstrap}), url={store!r})\n"
        "wall = time.perf_counter() - t; done.set()\n"
        "peak[0] = max(peak[0], proc.memory_info().rss)\n"
        "print(json.dumps({'wall': wall, 'peak_mib': peak[0] / 2**20, 'growth_mib': (peak[0] - before) / 2**20}))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def reduce_only(store: str, out: Path, repeats: int) -> dict:
    """The reduce's wall time and memory growth on `store` and on it repeated 4x (fresh processes,
    interleaved, medians), printed as JSON: to compare two versions of the reduce on one store."""
    urls = {times: str(out / f"reduce_only_x{times}.zarr") for times in (1, 4)}
    for times, url in urls.items():
        replicate_store(store, url, times)
    runs: dict[int, list[dict]] = {1: [], 4: []}
    for _ in range(repeats):
        for times in (1, 4):
            runs[times].append(reduce_probe(urls[times], str(out / f"reduce_only_out_x{times}"), RunConfig().bootstrap))
    med = {times: {k: statistics.median(p[k] for p in r) for k in r[0]} for times, r in runs.items()}
    results = {
        "reduce_seconds": med[1]["wall"],
        "reduce_walls": [p["wall"] for p in runs[1]],
        "reduce_seconds_4x": med[4]["wall"],
        "reduce_growth_mib_1x": med[1]["growth_mib"],
        "reduce_growth_mib_4x": med[4]["growth_mib"],
        "reduce_memory_4x_over_1x": med[4]["growth_mib"] / max(med[1]["growth_mib"], 1.0),
    }
    print(json.dumps(results, indent=1))
    return results


def run_end_to_end(corpus: str, out: str, max_tokens: int, extra: list[str]) -> tuple[float, dict[str, float]]:
    """The wall time of `attnsim run` in a fresh process, and the stage times it printed."""
    shutil.rmtree(out, ignore_errors=True)
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "attnsim.cli", "run", "--corpus", corpus, "--out", out, "--max-tokens", str(max_tokens), *extra],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    return time.perf_counter() - began, stage_seconds(done.stdout)


def stage_seconds(output: str) -> dict[str, float]:
    """The stages' times from the last line `attnsim run` prints: `time: start 5.2 s · prepare 2.4 s ·
    ... · total 47.0 s` -> {"start": 5.2, "prepare": 2.4, ...} (the total left out)."""
    lines = [line for line in output.splitlines() if line.startswith("time: ")]
    if not lines:
        raise RuntimeError("`attnsim run` printed no stage times (a line starting with 'time: ')")
    parts = [part.rsplit(" ", 2) for part in lines[-1].removeprefix("time: ").split(" · ")]
    return {name: float(seconds) for name, seconds, _ in parts if name != "total"}


def reduce_and_end_to_end(out: Path, cfg: RunConfig, corpus: str, max_tokens: int, batch_size: int, med: dict, repeats: int) -> dict:
    results: dict = {}
    # 1x and 4x stores built from the same whole units, each reduced in a fresh process; the 1x one
    # `repeats` times, alternating with the 4x one, medians kept (one reduce of lee moved between
    # 2.9 and 3.4 s from run to run here).
    default_store = str(out / "store_default.zarr")
    urls = {}
    for times in (1, 4):
        urls[times] = str(out / f"store_default_x{times}.zarr")
        replicate_store(default_store, urls[times], times)
    runs: dict[int, list[dict]] = {1: [], 4: []}
    for _ in range(repeats):
        for times in (1, 4):
            runs[times].append(reduce_probe(urls[times], str(out / f"reduce_x{times}"), cfg.bootstrap))
    one, four = ({key: statistics.median(p[key] for p in runs[times]) for key in runs[times][0]} for times in (1, 4))
    results["reduce_walls"] = [p["wall"] for p in runs[1]]
    results["reduce_seconds"] = one["wall"]
    results["reduce_over_extract"] = one["wall"] / med["extract_default"]
    results["reduce_peak_mib_1x"] = one["peak_mib"]
    results["reduce_peak_mib_4x"] = four["peak_mib"]
    results["reduce_growth_mib_1x"] = one["growth_mib"]
    results["reduce_growth_mib_4x"] = four["growth_mib"]
    # The goal's ratio: the reduce's own working memory (growth above the process before it), 4x vs 1x.
    results["reduce_memory_4x_over_1x"] = four["growth_mib"] / max(one["growth_mib"], 1.0)

    e2e, stages = run_end_to_end(corpus, str(out / "e2e"), max_tokens, ["--batch-size", str(batch_size)])
    results["run_seconds"] = e2e
    results["run_stage_seconds"] = stages  # the rest of run_seconds: the process's imports and exit
    results["run_over_bare"] = e2e / med["bare_default"]
    return results
