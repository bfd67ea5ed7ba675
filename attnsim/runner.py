"""Scheduling, the one place Ray appears: the prepare fan-out and the extraction actor pool.

The pool holds one actor per GPU (``actors_per_gpu`` to share one) or, on a CPU cluster, actors of
``cpus_per_worker`` cores. Each actor loads the model once and takes one unit at a time. An actor
that dies (worker killed, node lost) costs only its unit: the unit goes back to the queue, a new
actor replaces the dead one, and the job ends with the same bytes. A unit that raises a Python
error is a data bug and is not retried.

Example::

    ensure_ray()
    run_extract(cfg, units=[0, 1, 2], on_unit=print)
"""

from __future__ import annotations

import collections
import logging
import os
from typing import Callable

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, WorkerCrashedError

from attnsim.config import RunConfig
from attnsim.extract import Extractor

log = logging.getLogger("attnsim")
INFRA_ERRORS = (RayActorError, ActorDiedError, ActorUnavailableError, WorkerCrashedError)


def ensure_ray(address: str | None = None) -> None:
    """Join the cluster named by `address` or RAY_ADDRESS, else start a local one (token auth on)."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    ray.init(
        address=address,
        include_dashboard=False,
        log_to_driver=True,
        logging_level=logging.WARNING,
        # Workers import attnsim from the same environment as the driver.
        runtime_env=None,
    )


def ray_map(fn: Callable, items: list):
    """Map fn over items with one Ray task each, yielding results in order (prepare's fan-out)."""
    remote = ray.remote(num_cpus=1, max_retries=3)(fn)
    refs = [remote.remote(item) for item in items]
    for ref in refs:
        yield ray.get(ref)


@ray.remote(max_restarts=0, max_task_retries=0)
class ExtractActor:
    def __init__(self, cfg_json: dict, threads: int | None, fail_on_unit: int | None = None):
        gpu_ids = ray.get_gpu_ids()
        device = "cuda" if gpu_ids and cfg_json.get("device", "auto") != "cpu" else "cpu"
        self.gpu_ids = [str(g) for g in gpu_ids]
        self.extractor = Extractor(RunConfig.model_validate(cfg_json), device=device, threads=threads)
        self.fail_on_unit = fail_on_unit  # test hook: die in the middle of this unit
        self.units_done = 0

    def info(self) -> dict:
        return {
            "pid": os.getpid(),
            "gpu_ids": self.gpu_ids,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "device": str(self.extractor.device),
            "node_id": ray.get_runtime_context().get_node_id(),
        }

    def run_unit(self, unit: int) -> dict:
        if self.fail_on_unit is not None and self.units_done == self.fail_on_unit:
            os._exit(1)  # simulated crash: no cleanup, like a killed process
        result = self.extractor.run_unit(unit)
        self.units_done += 1
        return result


def pool_plan(cfg: RunConfig, resources: dict | None = None) -> tuple[int, dict, int | None]:
    """(number of actors, actor resource options, torch threads per actor) for this cluster."""
    resources = resources if resources is not None else ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus and cfg.device != "cpu":
        n = cfg.workers or gpus * cfg.actors_per_gpu
        return n, {"num_gpus": 1 / cfg.actors_per_gpu, "num_cpus": 1}, None
    cpus = max(1, int(resources.get("CPU", 1)))
    if cfg.workers:
        n = cfg.workers
        per = cfg.cpus_per_worker or max(1, cpus // n)
    else:
        per = cfg.cpus_per_worker or min(cpus, 4)
        n = max(1, cpus // per)
    return n, {"num_cpus": per}, per


def run_extract(
    cfg: RunConfig,
    units: list[int],
    on_unit: Callable[[dict], None] = lambda info: None,
    fail_on_unit: dict[int, int] | None = None,
) -> dict:
    """Run every unit on the actor pool; returns counts of units done and retried."""
    if not units:
        return {"done": 0, "retried": 0, "actors": 0}
    n, options, threads = pool_plan(cfg)
    n = min(n, len(units))
    cfg_json = cfg.model_dump(mode="json")
    fail_on_unit = fail_on_unit or {}

    def spawn(slot: int):
        return ExtractActor.options(**options).remote(cfg_json, threads, fail_on_unit.pop(slot, None))

    actors = {slot: spawn(slot) for slot in range(n)}
    queue = collections.deque(units)
    attempts = collections.Counter()
    in_flight: dict = {}  # ref -> (slot, unit)
    done = retried = 0

    def submit(slot: int) -> None:
        if queue:
            unit = queue.popleft()
            in_flight[actors[slot].run_unit.remote(unit)] = (slot, unit)

    for slot in actors:
        submit(slot)
    while in_flight:
        ready, _ = ray.wait(list(in_flight), num_returns=1)
        ref = ready[0]
        slot, unit = in_flight.pop(ref)
        try:
            info = ray.get(ref)
        except INFRA_ERRORS as e:
            attempts[unit] += 1
            if attempts[unit] > cfg.max_unit_retries:
                raise RuntimeError(f"unit {unit:06d} failed {attempts[unit]} times; last error: {e}") from e
            log.warning("actor for unit %06d died (%s); retrying it on a new actor", unit, type(e).__name__)
            retried += 1
            queue.appendleft(unit)
            ray.kill(actors[slot], no_restart=True)
            actors[slot] = spawn(slot)
            submit(slot)
            continue
        done += 1
        on_unit(info)
        submit(slot)
    for actor in actors.values():
        ray.kill(actor, no_restart=True)
    return {"done": done, "retried": retried, "actors": n}


def run_extract_local(cfg: RunConfig, units: list[int], on_unit: Callable[[dict], None] = lambda info: None) -> dict:
    """The same units in this process, without Ray (debugging, `memory://` stores, tests)."""
    extractor = Extractor(cfg)
    for unit in units:
        on_unit(extractor.run_unit(unit))
    return {"done": len(units), "retried": 0, "actors": 0}
