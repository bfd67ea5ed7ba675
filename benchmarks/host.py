"""Two pieces of the harness (issue 12): the host pipeline's capacity, and a BERT-base-shaped model.

Host capacity: what the host does to a unit once its arrays are computed, timed alone (encoding,
compression, checksum, the shard and marker writes; on a GPU also the device-to-host copy, which
`compute` does before returning arrays). On a GPU this, not the model, bounds extraction: divided
by the host's cores it says how many cores keep up with a given device. Each of `threads` threads
runs the whole pipeline for its own units (no shared encoder pool), so the work is spread over
exactly that many threads and tokens/s per thread is tokens/s per host core while they fit on the
machine's cores.

BERT-base-shaped: `BertConfig()`'s defaults (12 layers x 12 heads, hidden 768, the paper's shape)
with random weights and the minilm tokenizer (bert-base-uncased's vocabulary), saved to a folder:
random weights take the same time as trained ones.

    python -m benchmarks.harness --model bert-base-random ...   # the harness builds it in --out
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from attnsim.extract.stage import Extractor
from attnsim.store.io import CHECKSUM_ALGORITHM, unit_checksum, write_marker

BERT_BASE = "bert-base-random"


def bert_base_folder(out: Path, tokenizer: str = "minilm", seed: int = 0) -> str:
    """A BertConfig()-default model with random weights (seeded) and `tokenizer`'s tokenizer, saved
    once under `out`; returns its folder, which load_model takes as a model name."""
    from transformers import BertConfig, BertModel

    from attnsim.model.loading import load_tokenizer

    folder = out / BERT_BASE
    if (folder / "model.safetensors").exists():
        return str(folder)
    config = BertConfig()  # 12 layers, 12 heads, hidden 768, vocabulary 30522 (bert-base-uncased's)
    tok = load_tokenizer(tokenizer)
    assert len(tok) <= config.vocab_size, f"tokenizer {tokenizer!r} has {len(tok)} tokens, more than BERT-base's {config.vocab_size}"
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return str(folder)


def host_capacity(extractor: Extractor, threads=(1, 2), repeats: int = 3, distinct_units: int = 4) -> dict:
    """Tokens/s per thread from computed arrays to marked shards, for each thread count.

    `distinct_units` full units are computed once; every full unit of the store is then written
    from one of them in turn (real arrays, so bytes and compressibility are the real ones; the
    store is left holding other windows' results: give it a store of its own).
    Thread counts are interleaved over `repeats`; medians are reported.
    """
    layout = extractor.layout
    full = [u for u in range(layout.n_units) if len(range(*layout.unit_windows(u))) == layout.windows_per_shard]
    assert full, "no full unit to time: the store has fewer windows than one unit"
    computed = []
    for unit in full[:distinct_units]:
        tokens = extractor.units.read(unit, ("input_ids", "sentence_id", "length"))
        arrays = extractor.computer.compute(tokens["input_ids"], tokens["sentence_id"], tokens["length"])
        computed.append((int(tokens["length"].sum()), arrays))
    jobs = [(unit, computed[i % len(computed)]) for i, unit in enumerate(full)]
    n_tokens = sum(tokens for _, (tokens, _) in jobs)

    def finish(job) -> None:  # what run_unit does after compute
        unit, (tokens, arrays) = job
        extractor.units.write(unit, arrays)
        start, stop = layout.unit_windows(unit)
        info = {"windows": [start, stop], "tokens": tokens, "checksum": unit_checksum(arrays), "checksum_algorithm": CHECKSUM_ALGORITHM}
        write_marker(extractor.url, unit, info)

    walls: dict[int, list[float]] = {n: [] for n in threads}
    cpu: dict[int, list[float]] = {n: [] for n in threads}
    for _ in range(repeats):
        for n in threads:
            began, began_cpu = time.perf_counter(), time.process_time()
            with ThreadPoolExecutor(n, thread_name_prefix="attnsim-host") as pool:
                list(pool.map(finish, jobs))
            walls[n].append(time.perf_counter() - began)
            cpu[n].append(time.process_time() - began_cpu)
    out: dict = {"host_tokens": n_tokens, "host_walls": walls, "host_cpu_seconds": cpu}
    for n in threads:
        per_s = n_tokens / statistics.median(walls[n])
        out[f"host_tokens_per_s_{n}t"] = per_s
        out[f"host_tokens_per_s_per_core_{n}t"] = per_s / n
        # The same work per CPU second of this process: what a core gives when it is not shared
        # (on a busy machine a thread's wall time includes other processes' turns).
        out[f"host_tokens_per_cpu_s_{n}t"] = n_tokens / statistics.median(cpu[n])
    return out
