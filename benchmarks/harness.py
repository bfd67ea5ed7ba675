"""Benchmark harness: attnsim's overhead over the bare model, store size, reduce cost, end to end.

One process measures, on the same windows and the same loaded model, interleaved (A B C ... A B C,
`--repeats` times, medians reported):
  bare     the Hugging Face forward over the windows with attnsim's batching, no hooks
  extract  attnsim's extraction into a local store (compression and writes included), per tier
Then: bytes per corpus token on disk per tier; the reduce's wall time (vs the extract wall) and its
peak memory on the corpus and on the corpus repeated 4x (each in a fresh subprocess); and the wall
time of `attnsim run` end to end divided by the bare forward time over the same corpus.

    python -m benchmarks.harness                 # full run (minutes), writes benchmarks/RESULTS.md
    python -m benchmarks.harness --smoke --out /tmp/bench   # seconds; what CI runs
    python -m benchmarks.harness --device cuda --dtype float16 --batch-size 32 --extract-only \
        --results benchmarks/RESULTS-gpu.md      # on a GPU machine: the extract rows only

`--model bert-base-random` measures a BERT-base-shaped model (random weights, the minilm tokenizer;
benchmarks/host.py builds it under --out). `--tiers` and `--units` keep a slow model's run short.
The host pipeline's capacity (computed arrays -> marked shards, benchmarks/host.py) is measured on
the default tier with the thread counts of `--host-threads` (none: skipped).

`--compare-serial` also times the default tier with one unit at a time (no write overlap), to
show what overlapping a unit's writes with the next unit's compute buys on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from attnsim.config import RunConfig
from attnsim.prepare.stage import prepare, token_classes
from attnsim.extract.stage import Extractor, units_in_flight
from attnsim.model.loading import load_model
from attnsim.store.io import create_store, open_store, read_unit, write_marker, write_unit
from attnsim.store.meta import Layout, TIER_ARRAYS, TOKEN_ARRAYS, layout_from_attrs
from benchmarks.host import BERT_BASE, bert_base_folder, host_capacity

HERE = Path(__file__).resolve().parent
# Issue 12's goals on a CPU; on a GPU extract / bare >= 0.60 (minilm float16) and 0.85 (BERT-base).
GOALS = {
    "extract_over_bare_default": (">=", 0.75),
    "extract_over_bare_vectors": (">=", 0.70),
    "bytes_per_token_default": ("<=", 900),
    "host_tokens_per_s_per_core_1t": (">=", 150_000),
    "host_tokens_per_s_per_core_2t": (">=", 150_000),
    "reduce_over_extract": ("<=", 0.10),
    "reduce_memory_4x_over_1x": ("<=", 1.2),
    "run_over_bare": ("<=", 2.0),
}
GPU_GOALS = {"extract_over_bare_default": (">=", 0.60), "extract_over_bare_vectors": None}


def goals(device: str, model: str) -> dict:
    if device != "cuda":
        return GOALS
    return {k: v for k, v in (GOALS | GPU_GOALS | ({"extract_over_bare_default": (">=", 0.85)} if model == BERT_BASE else {})).items() if v}


def small_corpus(folder: Path, n_docs: int) -> str:
    """The first n documents of `lee`, one per line (the smoke mode's corpus)."""
    from attnsim.prepare.sources import read_documents

    docs = [d.text for _, d in zip(range(n_docs), read_documents("lee"))]
    path = folder / "lee_head.txt"
    path.write_text("\n".join(docs) + "\n")
    return str(path)


def store_for(base_url: str, url: str, tiers: tuple[str, ...]) -> None:
    """A fresh store with the prepared windows of `base_url` and the given tiers."""
    shutil.rmtree(url, ignore_errors=True)
    base = open_store(base_url)
    attrs = dict(base.attrs)
    layout = layout_from_attrs(attrs)
    layout = Layout(**{**layout.__dict__, "tiers": tiers})
    keep = {k: v for k, v in attrs.items() if k not in ("layout", "windows_per_shard", "n_units", "format_version")}
    root = create_store(url, layout, {**keep, "tiers": list(tiers)})
    for unit in range(layout.n_units):
        write_unit(root, layout, unit, read_unit(base, layout, unit, TOKEN_ARRAYS))


def synchronize(extractor: Extractor) -> None:
    """Wait for queued device work, so that a host clock measures it (a no-op on the CPU)."""
    if extractor.device.type == "cuda":
        torch.cuda.synchronize()


def bare_pass(extractor: Extractor, units) -> float:
    """The model alone over the same windows, batched exactly as extraction batches them."""
    synchronize(extractor)
    began = time.perf_counter()
    with torch.inference_mode():
        for tokens in units:
            for _, ids, valid in extractor.computer.batches(tokens["input_ids"], tokens["length"]):
                extractor.loaded.model(input_ids=ids, attention_mask=valid.long())
    synchronize(extractor)
    return time.perf_counter() - began


def extract_pass(extractor: Extractor, units_range, serial: bool = False) -> float:
    """attnsim's extraction as a job runs it (`units_in_flight` at a time), or strictly one unit at a time."""
    began = time.perf_counter()
    if serial:
        for unit in units_range:
            extractor.run_unit(unit)
    else:
        extractor.run_units(units_range)
    return time.perf_counter() - began


def tier_bytes(url: str, tier: str) -> int:
    return sum(p.stat().st_size for name in TIER_ARRAYS[tier] for p in Path(url, name).rglob("*") if p.is_file())


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


def run_end_to_end(corpus: str, out: str, max_tokens: int, extra: list[str]) -> float:
    shutil.rmtree(out, ignore_errors=True)
    began = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "attnsim.cli", "run", "--corpus", corpus, "--out", out, "--max-tokens", str(max_tokens), *extra],
        check=True, capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    return time.perf_counter() - began


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny corpus, one repeat: checks the harness works")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(HERE / "out"))
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--dense-windows", type=int, default=64, help="the dense tier is measured on this many windows")
    ap.add_argument("--windows-per-shard", type=int, default=32, help="windows per unit (a batch never spans units)")
    ap.add_argument("--corpus", default="lee")
    ap.add_argument("--model", default="minilm", help=f"a model name or folder, or {BERT_BASE!r} (BertConfig() defaults, random weights)")
    ap.add_argument("--tokenizer", default="minilm", help=f"the tokenizer {BERT_BASE!r} is saved with (a name or folder)")
    ap.add_argument("--tiers", default="default,vectors,dense", help="tiers measured, comma-separated")
    ap.add_argument("--units", type=int, default=None, help="measure only the first N units of each tier (default: all)")
    ap.add_argument("--host-threads", default="1,2", help="thread counts of the host-capacity measure ('' skips it)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"], help="model weights (GPU only)")
    ap.add_argument("--unit-writers", type=int, default=None, help="units written beside the compute (default: 0 on the CPU, 4 on a GPU)")
    ap.add_argument("--extract-only", action="store_true", help="skip the reduce and end-to-end measures")
    ap.add_argument("--compare-serial", action="store_true", help="also time the default tier one unit at a time")
    ap.add_argument("--results", default=None, help="Markdown table (default benchmarks/RESULTS.md; none in smoke mode)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    repeats = 1 if args.smoke else args.repeats
    corpus = small_corpus(out, 6) if args.smoke else args.corpus
    max_tokens = 64 if args.smoke else args.max_tokens
    wps = 4 if args.smoke else args.windows_per_shard
    threads = torch.get_num_threads()
    dtype = args.dtype if args.device == "cuda" else "float32"

    model = bert_base_folder(out, args.tokenizer) if args.model == BERT_BASE else args.model
    cfg = RunConfig(
        corpus=corpus, model=model, out=str(out / "base"), max_tokens=max_tokens, batch_size=args.batch_size,
        windows_per_shard=wps, device=args.device, dtype=dtype, unit_writers=args.unit_writers,
    )
    loaded = load_model(cfg.model, device=args.device, dtype=dtype)
    info = {**loaded.describe(), "max_tokens": loaded.max_tokens, "token_classes": token_classes(loaded.tokenizer)}
    shutil.rmtree(out / "base", ignore_errors=True)
    prep = prepare(cfg, info)
    base_layout = layout_from_attrs(dict(open_store(prep.url).attrs))

    tiers = {"default": ("default",), "vectors": ("default", "vectors"), "dense": ("default", "dense")}
    tiers = {name: tiers[name] for name in args.tiers.split(",")}
    extractors, unit_sets, tokens_of = {}, {}, {}
    for name, tier_set in tiers.items():
        url = str(out / f"store_{name}.zarr")
        store_for(prep.url, url, tier_set)
        extractors[name] = Extractor(cfg.model_copy(update={"store": url, "tiers": list(tier_set)}), loaded=loaded)
        n_units = min(base_layout.n_units, args.units or base_layout.n_units)
        if name == "dense":  # a T x T float16 matrix per head and window: measured on a subset
            n_units = max(1, min(n_units, args.dense_windows // wps))
        unit_sets[name] = range(n_units)
        tokens_of[name] = [read_unit(open_store(url), base_layout, u, ("input_ids", "length")) for u in unit_sets[name]]

    # Warm-up: first-call allocations, lazy init, the GPU's kernel selection. A GPU selects kernels
    # per shape, and units are padded to different lengths: there every unit is warmed up (an H100's
    # first bare pass over lee took 1.2 s against 0.09 s after it, with only the first unit warmed).
    for name in tiers:
        warm = len(unit_sets[name]) if cfg.device == "cuda" else 1
        bare_pass(extractors[name], tokens_of[name][:warm])
        extract_pass(extractors[name], range(warm))
    times: dict[str, list[float]] = {f"bare_{n}": [] for n in tiers} | {f"extract_{n}": [] for n in tiers}
    if args.compare_serial:
        times["extract_serial_default"] = []
    for _ in range(repeats):  # interleaved: A B A B ..., so drift on a shared machine hits all alike
        for name in tiers:
            times[f"bare_{name}"].append(bare_pass(extractors[name], tokens_of[name]))
            times[f"extract_{name}"].append(extract_pass(extractors[name], unit_sets[name]))
        if args.compare_serial:
            times["extract_serial_default"].append(extract_pass(extractors["default"], unit_sets["default"], serial=True))
    med = {k: statistics.median(v) for k, v in times.items()}

    results: dict = {
        "corpus_tokens": prep.n_tokens, "windows": prep.n_windows, "repeats": repeats, "torch_threads": threads,
        "device": args.device, "dtype": dtype, "batch_size": args.batch_size, "windows_per_shard": wps,
        "units_in_flight": units_in_flight(cfg, args.device), "model": args.model, "tiers": list(tiers),
    }
    for name in tiers:
        toks = sum(int(t["length"].sum()) for t in tokens_of[name])
        results[f"bare_tokens_per_s_{name}"] = toks / med[f"bare_{name}"]
        results[f"extract_tokens_per_s_{name}"] = toks / med[f"extract_{name}"]
        results[f"extract_over_bare_{name}"] = med[f"bare_{name}"] / med[f"extract_{name}"]
        results[f"bytes_per_token_{name}"] = tier_bytes(str(out / f"store_{name}.zarr"), name) / toks
    host_threads = [int(n) for n in args.host_threads.split(",") if n]
    if host_threads and "default" in tiers:
        host_url = str(out / "store_host.zarr")  # its units are overwritten with other units' arrays
        store_for(prep.url, host_url, ("default",))
        host = Extractor(cfg.model_copy(update={"store": host_url, "tiers": ["default"]}), loaded=loaded)
        results.update(host_capacity(host, host_threads, repeats))
    if args.compare_serial:
        results["serial_over_overlapped_default"] = med["extract_serial_default"] / med["extract_default"]
        results["extract_over_bare_serial_default"] = med["bare_default"] / med["extract_serial_default"]
    results["times"] = times
    if not args.extract_only and "default" in tiers:
        results.update(reduce_and_end_to_end(out, cfg, corpus, max_tokens, args.batch_size, med, repeats))
    results["machine"] = machine()
    (out / "results.json").write_text(json.dumps(results, indent=1))
    table = markdown(results, args.smoke)
    print(table)
    target = args.results or (None if args.smoke else str(HERE / "RESULTS.md"))
    if target:
        Path(target).write_text(table)
    return results


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

    e2e = run_end_to_end(corpus, str(out / "e2e"), max_tokens, ["--batch-size", str(batch_size)])
    results["run_seconds"] = e2e
    results["run_over_bare"] = e2e / med["bare_default"]
    return results


def machine() -> dict:
    import importlib.metadata

    def version(package: str) -> str:  # a GPU machine may run the extract rows without ray, dask, polars
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return "absent"

    cpu = ""
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return {
        "date": time.strftime("%Y-%m-%d"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "device": device,
        "python": platform.python_version(),
        "torch": torch.__version__,
        **{name: version(name) for name in ("transformers", "ray", "zarr", "dask", "polars")},
        "numpy": np.__version__,
    }


def markdown(r: dict, smoke: bool) -> str:
    m = r["machine"]
    lines = [
        "# attnsim benchmark results" + (" (smoke mode: tiny corpus, numbers meaningless)" if smoke else ""),
        "",
        f"{m['date']} · {m['device']} · {m['cpu']} · {m['cores']} cores · torch {m['torch']} ({r['torch_threads']} threads) · "
        f"transformers {m['transformers']} · ray {m['ray']} · zarr {m['zarr']} · dask {m['dask']} · polars {m['polars']}",
        "",
        f"Model {r['model']}. Corpus: {r['windows']} windows, {r['corpus_tokens']} tokens; model weights {r['dtype']} on {r['device']}, "
        f"batch {r['batch_size']}, {r['windows_per_shard']} windows per unit, units in flight per extractor: "
        f"{r['units_in_flight']} (one computing, the others compressed and written beside it); "
        f"medians of {r['repeats']} interleaved repeats.",
        "",
        "| measure | value | goal | met |",
        "|---|---|---|---|",
    ]
    for key, (op, goal) in goals(r["device"], r["model"]).items():
        if key not in r:  # --extract-only
            continue
        value = r[key]
        met = value >= goal if op == ">=" else value <= goal
        lines.append(f"| {key} | {value:,.3f} | {op} {goal:g} | {'yes' if met else 'no'} |")
    lines += ["", "| tier | bare tokens/s | extract tokens/s | extract / bare | bytes per token |", "|---|---|---|---|---|"]
    for name in r["tiers"]:
        lines.append(
            f"| {name} | {r[f'bare_tokens_per_s_{name}']:,.0f} | {r[f'extract_tokens_per_s_{name}']:,.0f} | "
            f"{r[f'extract_over_bare_{name}']:.3f} | {r[f'bytes_per_token_{name}']:,.0f} |"
        )
    if "host_tokens" in r:
        rates = ", ".join(
            f"{n} thread{'s' if n > 1 else ''} {r[f'host_tokens_per_s_{n}t']:,.0f} tokens/s ({r[f'host_tokens_per_s_per_core_{n}t']:,.0f} a thread, "
            f"{r[f'host_tokens_per_cpu_s_{n}t']:,.0f} per CPU second)"
            for n in r["host_walls"]
        )
        lines += ["", f"Host pipeline from computed arrays to marked shards (default tier, {r['host_tokens']:,} tokens a pass): {rates}."]
    if "serial_over_overlapped_default" in r:
        lines += [
            "",
            f"Default tier one unit at a time (no write overlap): extract / bare {r['extract_over_bare_serial_default']:.3f}; "
            f"serial wall / overlapped wall {r['serial_over_overlapped_default']:.3f}.",
        ]
    if "reduce_seconds" in r:
        lines += [
            "",
            f"Reduce: {r['reduce_seconds']:.2f} s on the corpus (median of {len(r['reduce_walls'])} fresh processes). "
            "Its memory, 1x vs 4x the corpus: process peak RSS "
            f"{r['reduce_peak_mib_1x']:.0f} vs {r['reduce_peak_mib_4x']:.0f} MiB; growth during the reduce "
            f"{r['reduce_growth_mib_1x']:.0f} vs {r['reduce_growth_mib_4x']:.0f} MiB (the goal's ratio).",
            f"`attnsim run` end to end: {r['run_seconds']:.1f} s.",
        ]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
