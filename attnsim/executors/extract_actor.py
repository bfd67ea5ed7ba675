"""The extraction actor and the pool's size: what runs on each worker of the actor pool.

`pool_plan` sizes the pool from the cluster's resources; `ExtractActor` holds one model (on its
GPU, or the CPU) and runs whole units with `attnsim.extract`, which knows nothing of Ray.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading

import ray
import torch
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, WorkerCrashedError

from attnsim.config import RunConfig
from attnsim.errors import UserError
from attnsim.extract.stage import Extractor, load_for_extraction

log = logging.getLogger("attnsim")
# What an actor's death looks like to the driver: infrastructure, retried; never a unit's own error.
INFRA_ERRORS = (RayActorError, ActorDiedError, ActorUnavailableError, WorkerCrashedError)


# A threaded actor (max_concurrency, set at spawn): its units in flight run at once, their computes
# serialised by the Extractor.
@ray.remote(max_restarts=0, max_task_retries=0)
class ExtractActor:
    def __init__(self, cfg_json: dict, threads: int | None, fail_on_unit: int | None = None):
        self.gpu_ids = [str(g) for g in ray.get_gpu_ids()]
        # Ray narrows CUDA_VISIBLE_DEVICES to this actor's GPU, so inside the process it is cuda:0.
        self.target_device = "cuda:0" if self.gpu_ids and cfg_json.get("device", "auto") != "cpu" else "cpu"
        self.device = self.target_device
        if self.device != "cpu" and not torch.cuda.is_available():
            log.warning(
                "actor pid %d was given GPU %s (CUDA_VISIBLE_DEVICES=%s) but torch.cuda is not available "
                "(a CPU build of torch, or no driver); running on the CPU",
                os.getpid(),
                ",".join(self.gpu_ids),
                os.environ.get("CUDA_VISIBLE_DEVICES"),
            )
            self.device = "cpu"
        self.cfg = RunConfig.model_validate(cfg_json)
        if threads:
            torch.set_num_threads(threads)  # before the model loads; Ray may have set OMP_NUM_THREADS=1
        # The model loads now, the store opens at the first unit: `pipeline.run_all` starts the pool
        # while prepare is still writing the store, so the model is loaded by the time units come.
        self.compute_device = "cpu" if self.device == "cpu" else "cuda"
        self.loaded = load_for_extraction(self.cfg, torch.device(self.compute_device))
        self._extractor: Extractor | None = None
        self._opening = threading.Lock()  # lanes (max_concurrency) may ask for it at once
        self.fail_on_unit = fail_on_unit  # test hook: die when the unit of this index (0-based) starts
        # Counted as units start, not as they finish: with several units in flight, two can finish
        # before the next one starts, and a count of finished units would skip the index.
        self.units_started = itertools.count()

    def info(self) -> dict:
        return {
            "pid": os.getpid(),
            "gpu_ids": self.gpu_ids,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "device": self.device,  # where the model is
            "target_device": self.target_device,  # where Ray's placement says it should be
            "node_id": ray.get_runtime_context().get_node_id(),
        }

    def run_unit(self, unit: int) -> dict:
        if next(self.units_started) == self.fail_on_unit:  # next() on a count is atomic under the GIL
            os._exit(1)  # simulated crash: no cleanup, like a killed process
        return self.extractor().run_unit(unit)

    def extractor(self) -> Extractor:
        with self._opening:
            if self._extractor is None:
                self._extractor = Extractor(self.cfg, device=self.compute_device, loaded=self.loaded)  # threads: set above
            return self._extractor


def pool_plan(cfg: RunConfig, resources: dict | None = None, node_cpus: int | None = None) -> tuple[int, dict, int | None]:
    """(number of actors, actor resource options, torch threads per actor) for this cluster.

    GPUs: `actors_per_gpu` actors per GPU, or `workers` of them (more than the cluster holds now wait
    for its autoscaler). CPUs only: actors of `cpus_per_worker` cores (default: up to 4, never more
    than the largest node has), as many as fit, or `workers` of them.
    """
    if resources is None:
        resources = ray.cluster_resources()
        node_cpus = max((int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n["Alive"]), default=None)
    gpus = int(resources.get("GPU", 0))
    if gpus and cfg.device != "cpu":
        n = cfg.workers or gpus * cfg.actors_per_gpu
        return n, {"num_gpus": 1 / cfg.actors_per_gpu, "num_cpus": 1}, None
    cpus = max(1, int(resources.get("CPU", 1)))
    largest = max(1, node_cpus or cpus)  # one actor's cores must fit on one node
    if cfg.cpus_per_worker and cfg.cpus_per_worker > largest:
        raise UserError(f"cpus_per_worker={cfg.cpus_per_worker} but the largest node has {largest} CPUs; lower cpus_per_worker")
    if cfg.workers:
        n = cfg.workers
        per = cfg.cpus_per_worker or min(largest, max(1, cpus // n))
    else:
        per = cfg.cpus_per_worker or min(cpus, largest, 4)
        n = max(1, cpus // per)
    return n, {"num_cpus": per}, per
