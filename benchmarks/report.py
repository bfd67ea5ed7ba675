"""The harness's Markdown table and machine description (split from harness.py)."""

from __future__ import annotations

import os
import platform
import time

import numpy as np
import torch

from benchmarks.host import BERT_BASE

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
        f"kernels: S + top-k {r['kernels']['topk']}, attention mass {r['kernels']['mass']}; "
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
            f"`attnsim run` end to end: {r['run_seconds']:.1f} s ("
            + ", ".join(f"{stage} {seconds:.1f}" for stage, seconds in r["run_stage_seconds"].items())
            + "; the rest: the process's imports and exit).",
        ]
    lines.append("")
    return "\n".join(lines)
