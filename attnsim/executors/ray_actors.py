"""Scheduling, the one place Ray appears: the prepare fan-out and the extraction actor pool.

The pool holds one actor per GPU (``actors_per_gpu`` to share one) or, on a CPU cluster, actors of
``cpus_per_worker`` cores. Each actor loads the model once and holds `extract.units_in_flight`
units at a time (one computing, the others being written). An actor that dies (worker killed, node
lost) costs only its units in flight: they go back to the queue for any running actor, a
replacement is started and joins once it runs (after a node loss it may never find a free GPU; the
job then ends on the remaining actors), and the job ends with the same bytes.
A unit that raises a Python error is a data bug and is not retried.

Example::

    ensure_ray()
    run_extract(cfg, units=[0, 1, 2], on_unit=print)
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import time
from typing import Callable

import ray
import torch
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, WorkerCrashedError

from attnsim.config import RunConfig
from attnsim.errors import UserError
from attnsim.extract.stage import Extractor, units_in_flight

log = logging.getLogger("attnsim")
INFRA_ERRORS = (RayActorError, ActorDiedError, ActorUnavailableError, WorkerCrashedError)


def ensure_ray(address: str | None = None) -> None:
    """Join the cluster named by `address` or RAY_ADDRESS, else start a local one (token auth on)."""
    if ray.is_initialized():
        return
    # "local" rather than None: None would join whatever cluster another process last recorded in
    # /tmp/ray, which surprises a user who asked for nothing (jobs/ pass address="auto" explicitly).
    address = address or os.environ.get("RAY_ADDRESS") or "local"
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


# How long the first actors up wait for the rest of the first wave before they start on the units
# (model loads on different nodes finish seconds apart; an actor the cluster cannot place never does).
START_GRACE_S = 30.0


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
                os.getpid(), ",".join(self.gpu_ids), os.environ.get("CUDA_VISIBLE_DEVICES"),
            )
            self.device = "cpu"
        self.extractor = Extractor(RunConfig.model_validate(cfg_json), device="cpu" if self.device == "cpu" else "cuda", threads=threads)
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
        return self.extractor.run_unit(unit)


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
    log.info("extract: %d units on %d actors, each %s", len(units), n, options)
    cfg_json = cfg.model_dump(mode="json")
    fail_on_unit = fail_on_unit or {}
    lanes = units_in_flight(cfg, "cuda" if "num_gpus" in options else "cpu")

    def spawn(slot: int):
        return ExtractActor.options(**options, max_concurrency=lanes).remote(cfg_json, threads, fail_on_unit.pop(slot, None))

    # An actor is handed units only once it has started (its info() answered): one that cannot be
    # placed (more workers than the cluster has CPUs or GPUs, and no autoscaler to add them; or no
    # GPU left after a node loss) would otherwise hold its units forever while the others sit idle.
    # The first actors up wait for the rest of the first wave, at most START_GRACE_S, and then get
    # units round-robin, so that all share the work from the start.
    actors = {slot: spawn(slot) for slot in range(n)}
    starting: dict = {actors[slot].info.remote(): slot for slot in actors}  # ref of info() -> slot
    first_wave = set(actors)  # first actors neither started nor failed yet
    held: list[int] = []  # first actors up, waiting for the others (or the grace) before they get units
    first_up_at = 0.0
    queue = collections.deque(units)
    attempts = collections.Counter()
    in_flight: dict = {}  # ref of run_unit -> (slot, unit, the actor handle it was sent to)
    start_failures = collections.Counter()  # slot -> actors in that slot that died before starting
    idle: collections.deque = collections.deque()  # free lanes: a slot once per unit it can take more
    done = retried = 0
    start_error: Exception | None = None  # why the last actor that did not start failed

    def feed() -> None:
        while queue and idle:
            slot = idle.popleft()
            unit = queue.popleft()
            in_flight[actors[slot].run_unit.remote(unit)] = (slot, unit, actors[slot])

    def release() -> None:
        # Round-robin lanes: every actor gets a unit before any gets its second.
        idle.extend(slot for _ in range(lanes) for slot in held)
        held.clear()
        first_wave.clear()  # late ones join as they start

    def replace(slot: int) -> None:
        # Like the first actors, a replacement gets units once it has started; until then its
        # units wait in the queue for anyone.
        ray.kill(actors[slot], no_restart=True)
        actors[slot] = spawn(slot)
        starting[actors[slot].info.remote()] = slot
        idle_lanes = [s for s in idle if s != slot]  # the dead actor's free lanes go with it
        idle.clear()
        idle.extend(idle_lanes)

    try:
        while in_flight or (queue and starting) or held:
            timeout = 60.0
            if held:
                timeout = min(timeout, max(0.0, first_up_at + START_GRACE_S - time.monotonic()))
            ready, _ = ray.wait([*in_flight, *starting], num_returns=1, timeout=timeout)
            if held and time.monotonic() >= first_up_at + START_GRACE_S:
                log.warning("extract: %d of %d actors not up %.0f s after the first; starting without them", len(first_wave), n, START_GRACE_S)
                release()
                feed()
            if not ready:
                if not in_flight and not held:
                    log.warning(
                        "extract: %d units wait for an actor to start: each asks for %s, the cluster has %s free "
                        "(add nodes, or lower workers / cpus_per_worker / actors_per_gpu)",
                        len(queue), options, {k: v for k, v in ray.available_resources().items() if k in ("CPU", "GPU")},
                    )
                continue
            ref = ready[0]
            if ref in starting:
                slot = starting.pop(ref)
                try:
                    ray.get(ref)
                    if slot in first_wave:
                        first_wave.discard(slot)
                        first_up_at = first_up_at or time.monotonic()
                        held.append(slot)
                    else:
                        idle.extend([slot] * lanes)
                except INFRA_ERRORS as e:  # its node went (too), or the model cannot load there
                    first_wave.discard(slot)  # its replacement is not waited for
                    start_error = e
                    start_failures[slot] += 1
                    log.warning("extraction actor %d did not start (%s)", slot, type(e).__name__)
                    if start_failures[slot] <= cfg.max_unit_retries:
                        replace(slot)  # else the pool shrinks by one; the others take its units
                if held and not first_wave:
                    release()
                feed()
                continue
            slot, unit, actor = in_flight.pop(ref)
            current = actor is actors[slot]  # False: a unit of an actor that was already replaced
            try:
                info = ray.get(ref)
            except INFRA_ERRORS as e:
                attempts[unit] += 1
                if attempts[unit] > cfg.max_unit_retries:
                    raise RuntimeError(f"unit {unit:06d} failed {attempts[unit]} times; last error: {e}") from e
                log.warning("actor for unit %06d died (%s); retrying it on another actor", unit, type(e).__name__)
                retried += 1
                queue.appendleft(unit)
                if current:  # its other unit in flight fails too, and must not replace the replacement
                    replace(slot)
                feed()
                continue
            done += 1
            on_unit(info)
            if current:
                idle.append(slot)
            feed()
        if queue:
            raise RuntimeError(f"no extraction actor could be started; {len(queue)} units were not extracted; last error: {start_error}")
        if starting:
            log.warning("extract: %d of %d actors never started (the cluster could not place them: %s each)", len(starting), n, options)
        pool = _pool_info([actors[slot] for slot in sorted(set(idle))])
    finally:  # also on a data error in a unit (not retried): never leave actors holding GPUs
        for actor in actors.values():
            ray.kill(actor, no_restart=True)
    return {"done": done, "retried": retried, "actors": n, "pool": pool}


def _pool_info(actors: list) -> list[dict]:
    """Each actor's info() (pid, GPU ids, device): where the pool actually ran, for logs and tests."""
    try:
        return ray.get([a.info.remote() for a in actors], timeout=30)
    except (*INFRA_ERRORS, ray.exceptions.GetTimeoutError) as e:  # diagnostic only: never fail a finished run
        log.warning("could not read the extraction pool's info: %s", type(e).__name__)
        return []


def run_extract_local(cfg: RunConfig, units: list[int], on_unit: Callable[[dict], None] = lambda info: None) -> dict:
    """The same units in this process, without Ray (debugging, `memory://` stores, tests)."""
    done = Extractor(cfg).run_units(units, on_unit)
    return {"done": done, "retried": 0, "actors": 0}
