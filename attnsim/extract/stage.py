"""Stage `extract` on one work unit: windows -> head vectors -> S, top-k, attention mass -> store.

Ray-free: `attnsim.executors` schedules units onto actors that each hold one `Extractor`; tests call it
directly. Windows of a unit are batched by length (less padding) while results keep the store's
window order; each layer's S and top-k are computed as the layer finishes (in the hook), so all
layers' T x T matrices never coexist. Every unit writes whole shards, then its marker, so the
bytes do not depend on the number of workers, the order, retries or restarts.

Several units may be in flight on one Extractor (`units_in_flight`): their computes take turns under
a lock while the other units' compression and writes run beside it (on a GPU, several writers keep
up with the device). The bytes are those of the serial path: the same arrays reach the same
`write_unit`.

Example::

    extractor = Extractor(cfg)
    extractor.run_unit(0)
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Callable, Iterable

import numpy as np
import torch

from attnsim.config import RunConfig
from attnsim.model.allocator import keep_freed_memory
from attnsim.model.fused_mass import fused_attention_mass, fused_works
from attnsim.model.kernels import attention_mass, attention_scores, key_bias, sentences_per_window, similarity, split_heads, topk_neighbours
from attnsim.model.loading import LoadedModel, load_model
from attnsim.model.taps import head_taps
from attnsim.store.io import CHECKSUM_ALGORITHM, open_store, read_meta, read_unit, unit_checksum, write_marker, write_unit
from attnsim.store.shards import encoder_pool

# Windows are padded to a multiple of this many tokens (or the store's width): few distinct shapes,
# little padding (lee/minilm: 92 % of padded tokens are real at 32, against 68 % for the full width).
PAD_MULTIPLE = 32


def padded_length(length: np.ndarray, width: int) -> np.ndarray:
    """The length each window is computed at: its own length rounded up to PAD_MULTIPLE, at most width."""
    return np.minimum(-(-np.asarray(length) // PAD_MULTIPLE) * PAD_MULTIPLE, width)


def computation_environment(device: torch.device, dtype: str) -> dict:
    """What decides the model's own arithmetic, recorded in every marker: bytes are identical across
    units computed under one environment; across environments the tolerances of `agreement` hold."""
    import transformers

    return {
        "device": device.type,
        "dtype": dtype,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def pick_device(requested: str) -> torch.device:
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def extraction_dtype(cfg: RunConfig, device: torch.device) -> str:
    """The weights' dtype: the configured one on a GPU; float32 on a CPU (half precision is slow there)."""
    return cfg.dtype if device.type == "cuda" else "float32"


def load_for_extraction(cfg: RunConfig, device: torch.device) -> LoadedModel:
    """The run's model on `device`, as an Extractor computes with it."""
    return load_model(
        cfg.model,
        device=device,
        dtype=extraction_dtype(cfg, device),
        trust_remote_code=cfg.trust_remote_code,
        allow_pickle_weights=cfg.allow_pickle_weights,
    )


class UnitComputer:
    """Computes the tier arrays for a set of windows with one loaded model (no store access)."""

    def __init__(self, loaded: LoadedModel, *, kind: str, k: int, tiers, token_classes: dict, batch_size: int):
        self.loaded = loaded
        self.kind, self.k, self.tiers, self.batch_size = kind, k, tuple(tiers), batch_size
        self.device = next(loaded.model.parameters()).device
        vocab = max(len(loaded.tokenizer), max(token_classes["punct"], default=0) + 1)
        punct = torch.zeros(vocab, dtype=torch.bool)
        punct[token_classes["punct"]] = True
        self.punct_table = punct.to(self.device)
        self.cls, self.sep = token_classes["cls"], token_classes["sep"]
        self.pad = loaded.tokenizer.pad_token_id or 0
        self.mass_kernel = mass_kernel(self.device)

    def batches(self, input_ids: np.ndarray, length: np.ndarray):
        """(rows, ids (B, Tb) on the device, valid (B, Tb)) per batch; rows keep the store order.

        A window is always padded to the same length, `padded_length(its length)`, whichever windows
        share its batch: the model's kernels then see the same shapes for it at every batch size
        (torch's CPU GEMMs and reductions give the same bits per row for any batch, measured; they
        do not for another padded length). Windows of one padded length are batched together.
        """
        padded = padded_length(length, input_ids.shape[1])
        for tb in np.unique(padded)[::-1]:  # longest first
            same = np.flatnonzero(padded == tb)  # ascending window order
            for b in range(0, len(same), self.batch_size):
                rows = same[b : b + self.batch_size]
                ids = torch.from_numpy(input_ids[rows, :tb].astype(np.int64))
                valid = ids >= 0  # (B, Tb)
                ids = ids.masked_fill(~valid, self.pad)
                if self.device.type == "cuda":
                    ids, valid = ids.pin_memory(), valid.pin_memory()
                yield rows, ids.to(self.device, non_blocking=True), valid.to(self.device, non_blocking=True)

    @torch.inference_mode()
    def compute(self, input_ids: np.ndarray, sentence_id: np.ndarray, length: np.ndarray) -> dict[str, np.ndarray]:
        """input_ids, sentence_id: (W, T) with -1 padding; length: (W,). Returns the tier arrays."""
        w, t = input_ids.shape
        l, h, d = self.loaded.n_layers, self.loaded.n_heads, self.loaded.head_size
        out: dict[str, np.ndarray] = {}
        if "default" in self.tiers:
            out["topk_index"] = np.full((w, l, h, t, self.k), -1, np.int16)
            out["topk_value"] = np.full((w, l, h, t, self.k), np.nan, np.float16)
            out["attention_mass"] = np.full((w, l, h, 8), np.nan, np.float32)
        if "vectors" in self.tiers:
            out["head_vectors"] = np.full((w, l, h, t, d), np.nan, np.float16)
        if "dense" in self.tiers:
            out["similarity"] = np.full((w, l, h, t, t), np.nan, np.float16)

        # One sentence count for the whole unit, not per batch: it is the width of attention_mass's
        # key-category matmul, whose rounding depends on that width.
        n_sentences = sentences_per_window(sentence_id)
        for rows, ids, valid in self.batches(input_ids, length):
            tb = ids.shape[1]
            sent = torch.from_numpy(sentence_id[rows, :tb].astype(np.int64)).to(self.device)
            ctx = {
                "n_sentences": n_sentences,
                "valid": valid,
                "cls": ids.eq(self.cls) & valid,
                "sep": ids.eq(self.sep) & valid,
                "punct": self.punct_table[ids] & valid,
                "sent": sent,
                "inf_keys": key_bias(valid, float("-inf")),
                "nan_keys": key_bias(valid, float("nan")),
            }

            results: list = []  # (array name, layer, device tensor (B, H, Tb, ...))

            def on_layer(taps, results=results, ctx=ctx):
                self._layer(results, taps.layer, ctx, taps.q, taps.k, taps.z)

            # queries and keys only for the attention mass (default tier)
            with head_taps(self.loaded, on_layer, points=("q", "k", "z") if "default" in self.tiers else ("z",)):
                self.loaded.model(input_ids=ids, attention_mask=valid.long())
            # One host transfer per batch, after every layer's kernels were queued (a GPU keeps going).
            for name, layer, tensor in results:
                host = tensor.cpu().numpy()
                if name == "attention_mass":
                    out[name][rows, layer] = host
                elif name == "similarity":
                    out[name][rows, layer, :, :tb, :tb] = host
                else:
                    out[name][rows, layer, :, :tb] = host
        return out

    def _layer(self, results, layer, ctx, q, key, z) -> None:
        """One layer's tier tensors, left on the device; copied to the host once per batch."""
        h = self.loaded.n_heads
        valid = ctx["valid"]
        v = split_heads(z, h)  # (B, H, Tb, d)
        if "vectors" in self.tiers:
            vec = v.float().masked_fill(~valid[:, None, :, None], float("nan"))
            results.append(("head_vectors", layer, vec.to(torch.float16)))
        if "dense" in self.tiers:
            s = similarity(v, self.kind, ctx["nan_keys"])  # (B, H, Tb, Tb), NaN on padding keys
            s.masked_fill_(~valid[:, None, :, None], float("nan"))  # and on padding queries
            results.append(("similarity", layer, s.to(torch.float16)))
        if "default" in self.tiers:
            s = similarity(v, self.kind, ctx["inf_keys"])  # (B, H, Tb, Tb) float32, -inf on padding keys
            index, value = topk_neighbours(s, valid, self.k, already_masked=True)  # (B, H, Tb, k)
            results.append(("topk_index", layer, index.to(torch.int16)))
            results.append(("topk_value", layer, value.to(torch.float16)))
            qh, kh, categories = split_heads(q, h), split_heads(key, h), (ctx["cls"], ctx["sep"], ctx["punct"], ctx["sent"], ctx["n_sentences"])
            if self.mass_kernel == "fused":  # one fused attention call, no T x T tensor
                mass = fused_attention_mass(qh, kh, valid, *categories)  # (B, H, C)
            else:
                mass = attention_mass(attention_scores(qh, kh, valid), valid, *categories)
            results.append(("attention_mass", layer, mass))


def mass_kernel(device: torch.device) -> str:
    """Which attention-mass path a device gets: "fused" (`fused_mass`: one fused attention call, no
    T x T tensor) on CUDA where its probe passes, else "reference" (`kernels.attention_mass` on
    recomputed scores). The CPU keeps the reference: the fused path measured no faster there
    (benchmarks/RESULTS.md, 2026-12-03), and the CPU's stored bytes stay as they were. Both agree
    within agreement.py's tolerances (tests/unit/test_fused_mass.py)."""
    return "fused" if device.type == "cuda" and fused_works(device) else "reference"


def units_in_flight(cfg: RunConfig, device_type: str) -> int:
    """Units one extractor holds at once: one computing, `unit_writers` being compressed and written.

    Default: none beside it on a CPU (measured on 2 cores, lee/minilm: one writer made extraction 5 %
    slower, serial wall / overlapped 0.953; the writer's compression competes with torch's threads);
    4 on a GPU, which computes a unit faster than one host thread compresses it.
    """
    writers = cfg.unit_writers if cfg.unit_writers is not None else (4 if device_type == "cuda" else 0)
    return 1 + writers


class Extractor:
    """Holds one model and writes whole units of a store; one per actor."""

    def __init__(self, cfg: RunConfig, device: str | None = None, threads: int | None = None, loaded: LoadedModel | None = None):
        if threads:
            torch.set_num_threads(threads)  # Ray may have set OMP_NUM_THREADS=1 for this process
        keep_freed_memory()  # each layer's T x T tensors reuse the last layer's pages (see allocator.py)
        self.cfg = cfg
        self.url = cfg.store_url
        self.root = open_store(self.url, mode="r+")
        meta = read_meta(self.root)
        self.layout = meta.layout
        self.device = pick_device(device or cfg.device)
        dtype = extraction_dtype(cfg, self.device)
        self.loaded = loaded or load_for_extraction(cfg, self.device)
        self.computer = UnitComputer(
            self.loaded,
            kind=meta.similarity_kind,
            k=meta.k,
            tiers=meta.layout.tiers,
            token_classes=meta.token_classes,
            batch_size=cfg.batch_size,
        )
        self.tier_arrays = meta.tier_arrays
        self._compute_lock = threading.Lock()  # one compute at a time: the model and torch's threads are shared
        self._encoder = encoder_pool(self.device.type, torch.get_num_threads())
        self.environment = computation_environment(self.device, dtype)

    def run_unit(self, unit: int) -> dict:
        """Compute, write whole shards, then the marker. Returns the marker's content.

        Thread-safe: callers (threads, or a Ray actor with concurrency) may run `units_in_flight`
        units at once; only the writes overlap.
        """
        began = time.perf_counter()
        tokens = read_unit(self.root, self.layout, unit, ("input_ids", "sentence_id", "length"))
        with self._compute_lock:
            arrays = self.computer.compute(tokens["input_ids"], tokens["sentence_id"], tokens["length"])
        write_unit(self.root, self.layout, unit, arrays, encoder=self._encoder)
        start, stop = self.layout.unit_windows(unit)
        info = {
            "windows": [start, stop],
            "tokens": int(tokens["length"].sum()),
            "checksum": unit_checksum(arrays),
            "checksum_algorithm": CHECKSUM_ALGORITHM,
            "arrays": sorted(arrays),
            "environment": self.environment,
        }
        write_marker(self.url, unit, info)
        return {**info, "unit": unit, "seconds": time.perf_counter() - began, "pid": os.getpid()}

    def run_units(self, units: Iterable[int], on_unit: Callable[[dict], None] = lambda info: None) -> int:
        """Every unit in this process, `units_in_flight` at a time (writes beside the next compute).
        `on_unit` gets each marker as its unit ends; the first error stops the rest and is raised."""
        pending, queue, done = set(), iter(units), 0
        lanes = units_in_flight(self.cfg, self.device.type)
        with ThreadPoolExecutor(lanes, thread_name_prefix="attnsim-unit") as pool:
            try:
                for unit in queue:
                    pending.add(pool.submit(self.run_unit, unit))
                    if len(pending) < lanes:
                        continue
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in finished:
                        on_unit(future.result())
                        done += 1
                for future in pending:
                    on_unit(future.result())
                    done += 1
            finally:
                for future in pending:
                    future.cancel()
        return done
