"""Stage `extract` on one work unit: the unit's tokens -> `compute.UnitComputer`'s arrays -> store.

Ray-free: `attnsim.executors` schedules units onto actors that each hold one `Extractor`; tests call it
directly. Every unit writes whole shards, then its marker, so the bytes do not depend on the number
of workers, the order, retries or restarts.

Several units may be in flight on one Extractor (`units_in_flight`): their computes take turns under
a lock while the other units' compression and writes run beside it (on a GPU, several writers keep
up with the device). The bytes are those of the serial path: the same arrays reach the same
`UnitArrays.write`.

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

import torch

from attnsim.config import RunConfig
from attnsim.extract.compute import UnitComputer
from attnsim.model.allocator import keep_freed_memory
from attnsim.model.loading import LoadedModel, load_model
from attnsim.store.io import CHECKSUM_ALGORITHM, UnitArrays, open_store, read_meta, unit_checksum, write_marker
from attnsim.store.shards import encoder_pool


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
        self.units = UnitArrays(self.root, self.layout)  # array handles looked up once
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
        tokens = self.units.read(unit, ("input_ids", "sentence_id", "length"))
        with self._compute_lock:
            arrays = self.computer.compute(tokens["input_ids"], tokens["sentence_id"], tokens["length"])
        self.units.write(unit, arrays, encoder=self._encoder)
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
