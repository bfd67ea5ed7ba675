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
import shutil
import statistics
import time
from pathlib import Path

import torch

from attnsim.config import RunConfig
from attnsim.extract.stage import Extractor, units_in_flight
from attnsim.model.loading import load_model
from attnsim.prepare.stage import prepare, token_classes
from attnsim.store.io import create_store, open_store, read_meta, read_unit, write_unit
from attnsim.store.meta import TIER_ARRAYS, TOKEN_ARRAYS, Layout, layout_from_attrs
from benchmarks.end_to_end import reduce_and_end_to_end, reduce_only
from benchmarks.host import BERT_BASE, bert_base_folder, host_capacity
from benchmarks.report import GOALS, machine, markdown  # noqa: F401  (GOALS: the smoke test reads it here)

HERE = Path(__file__).resolve().parent


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
    meta = read_meta(base)
    layout = Layout(**{**meta.layout.__dict__, "tiers": tiers})
    meta = meta.model_copy(update={"layout": layout, "tiers": list(tiers), "settings": {**meta.settings, "tiers": list(tiers)}})
    root = create_store(url, layout, meta.to_attrs())
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


def parse_args(argv) -> argparse.Namespace:
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
    ap.add_argument(
        "--kernels", default="auto", choices=["auto", "reference"], help="the device's own S + top-k and attention-mass kernels, or the T x T reference's"
    )
    ap.add_argument("--compare-serial", action="store_true", help="also time the default tier one unit at a time")
    ap.add_argument("--results", default=None, help="Markdown table (default benchmarks/RESULTS.md; none in smoke mode)")
    ap.add_argument(
        "--reduce-store", default=None, metavar="STORE", help="only the reduce probe, on this existing store and its 4x copy (no model, no extraction)"
    )
    return ap.parse_args(argv)


def main(argv=None) -> dict:  # long: the benchmark's steps in order, each a call
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.reduce_store:
        return reduce_only(args.reduce_store, out, args.repeats)
    repeats = 1 if args.smoke else args.repeats
    corpus = small_corpus(out, 6) if args.smoke else args.corpus
    max_tokens = 64 if args.smoke else args.max_tokens
    wps = 4 if args.smoke else args.windows_per_shard
    threads = torch.get_num_threads()
    dtype = args.dtype if args.device == "cuda" else "float32"

    model = bert_base_folder(out, args.tokenizer) if args.model == BERT_BASE else args.model
    cfg = RunConfig(
        corpus=corpus,
        model=model,
        out=str(out / "base"),
        max_tokens=max_tokens,
        batch_size=args.batch_size,
        windows_per_shard=wps,
        device=args.device,
        dtype=dtype,
        unit_writers=args.unit_writers,
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
        if args.kernels == "reference":  # e.g. a GPU's fused kernels against the T x T path, same machine
            extractors[name].computer.topk_kernel = extractors[name].computer.mass_kernel = "reference"
        n_units = min(base_layout.n_units, args.units or base_layout.n_units)
        if name == "dense":  # a T x T float16 matrix per head and window: measured on a subset
            n_units = max(1, min(n_units, args.dense_windows // wps))
        unit_sets[name] = range(n_units)
        tokens_of[name] = [read_unit(open_store(url), base_layout, u, ("input_ids", "length")) for u in unit_sets[name]]

    times = time_tiers(extractors, unit_sets, tokens_of, repeats, cfg.device, args.compare_serial)
    med = {k: statistics.median(v) for k, v in times.items()}
    results = summarise(args, prep, cfg, tiers, tokens_of, med, repeats, wps, threads, dtype, extractors)
    host_threads = [int(n) for n in args.host_threads.split(",") if n]
    if host_threads and "default" in tiers:
        host_url = str(out / "store_host.zarr")  # its units are overwritten with other units' arrays
        store_for(prep.url, host_url, ("default",))
        host = Extractor(cfg.model_copy(update={"store": host_url, "tiers": ["default"]}), loaded=loaded)
        results.update(host_capacity(host, host_threads, repeats))
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


def time_tiers(extractors, unit_sets, tokens_of, repeats: int, device: str, compare_serial: bool) -> dict[str, list[float]]:
    """Wall times of the bare forward and the extraction per tier, interleaved over `repeats`."""
    tiers = list(extractors)
    # Warm-up: first-call allocations, lazy init, the GPU's kernel selection. A GPU selects kernels
    # per shape, and units are padded to different lengths: there every unit is warmed up (an H100's
    # first bare pass over lee took 1.2 s against 0.09 s after it, with only the first unit warmed).
    for name in tiers:
        warm = len(unit_sets[name]) if device == "cuda" else 1
        bare_pass(extractors[name], tokens_of[name][:warm])
        extract_pass(extractors[name], range(warm))
    times: dict[str, list[float]] = {f"bare_{n}": [] for n in tiers} | {f"extract_{n}": [] for n in tiers}
    if compare_serial:
        times["extract_serial_default"] = []
    for repeat in range(repeats):  # interleaved: A B A B ..., so drift on a shared machine hits all alike
        for name in tiers:
            # Which pass goes first alternates: a forward right after an extraction was measured 2-4x
            # slower on a loaded machine (RESULTS.md), so a fixed order would bias every ratio one way.
            passes = [("bare", lambda: bare_pass(extractors[name], tokens_of[name])), ("extract", lambda: extract_pass(extractors[name], unit_sets[name]))]
            for kind, timed in passes if repeat % 2 == 0 else passes[::-1]:
                times[f"{kind}_{name}"].append(timed())
        if compare_serial:
            times["extract_serial_default"].append(extract_pass(extractors["default"], unit_sets["default"], serial=True))
    return times


def summarise(args, prep, cfg, tiers, tokens_of, med: dict, repeats: int, wps: int, threads: int, dtype: str, extractors: dict) -> dict:
    """Throughputs, ratios and bytes per token from the median times."""
    out = Path(args.out)
    first = next(iter(extractors.values())).computer  # every tier's extractor has the same kernels
    results: dict = {
        "corpus_tokens": prep.n_tokens,
        "windows": prep.n_windows,
        "repeats": repeats,
        "torch_threads": threads,
        "device": args.device,
        "dtype": dtype,
        "batch_size": args.batch_size,
        "windows_per_shard": wps,
        "units_in_flight": units_in_flight(cfg, args.device),
        "model": args.model,
        "tiers": list(tiers),
        "kernels": {"topk": first.topk_kernel, "mass": first.mass_kernel},
    }
    for name in tiers:
        toks = sum(int(t["length"].sum()) for t in tokens_of[name])
        results[f"bare_tokens_per_s_{name}"] = toks / med[f"bare_{name}"]
        results[f"extract_tokens_per_s_{name}"] = toks / med[f"extract_{name}"]
        results[f"extract_over_bare_{name}"] = med[f"bare_{name}"] / med[f"extract_{name}"]
        results[f"bytes_per_token_{name}"] = tier_bytes(str(out / f"store_{name}.zarr"), name) / toks
    if args.compare_serial:
        results["serial_over_overlapped_default"] = med["extract_serial_default"] / med["extract_default"]
        results["extract_over_bare_serial_default"] = med["bare_default"] / med["extract_serial_default"]
    return results


if __name__ == "__main__":
    main()
