"""The extraction actor pool: one actor per GPU (``actors_per_gpu`` to share one) or, on a CPU
cluster, actors of ``cpus_per_worker`` cores.

Each actor loads the model once and holds `extract.units_in_flight` units at a time (one computing,
the others being written). An actor is handed units only once it has started, so one the cluster
cannot place never holds units that others could do. An actor that dies (worker killed, node lost)
costs only its units in flight: they go back to the queue, a replacement is started, and the job
ends with the same bytes. A unit that raises a Python error is a data bug and is not retried.

The pool never waits for ever: when no actor runs it checks every `POLL_S` that the driver's node
is alive (a dead local node can never free a CPU: `ClusterLost` at once) and gives up after
`actor_wait_timeout_s` (0: wait, an autoscaler will add nodes) with `PoolStarved`.

Example::

    ensure_ray()
    run_extract(cfg, units=[0, 1, 2], on_unit=print)
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Callable

import ray

from attnsim.config import RunConfig
from attnsim.executors.cluster import driver_node_dead
from attnsim.executors.extract_actor import INFRA_ERRORS, ExtractActor, pool_plan
from attnsim.executors.lifecycle import RESUME_HINT, ActorsFailed, ClusterLost, PoolStarved
from attnsim.extract.stage import units_in_flight

log = logging.getLogger("attnsim")

# How long the first actors up wait for the rest of the first wave before they start on the units
# (model loads on different nodes finish seconds apart; an actor the cluster cannot place never does).
START_GRACE_S = 30.0
# How often an idle pool looks at the cluster: a node is declared dead ~15-30 s after its raylet
# died (measured, Ray 2.60), so a lost local node is reported well inside a minute.
POLL_S = 5.0
WAIT_LOG_S = 60.0  # how often a pool that waits for actors says so


class ActorPool:
    """A small state machine over slots (one actor each): starting -> held (first wave) -> idle lanes
    -> units in flight; a dead actor's slot is respawned, its units re-queued."""

    def __init__(self, cfg: RunConfig, fail_on_unit: dict[int, int] | None = None):
        self.cfg = cfg
        self.n, self.options, self.threads = pool_plan(cfg)  # at most one actor a unit: `run` trims
        self.lanes = units_in_flight(cfg, "cuda" if "num_gpus" in self.options else "cpu")
        self.on_unit: Callable[[dict], None] = lambda info: None
        self.fail_on_unit = dict(fail_on_unit or {})  # test hook: slot -> die when its unit of this index starts
        self.cfg_json = cfg.model_dump(mode="json")
        self.total = 0
        self.queue: collections.deque = collections.deque()
        self.actors: dict = {}  # slot -> its current actor handle
        self.starting: dict = {}  # ref of info() -> slot
        self.first_wave: set = set()  # first actors neither started nor failed yet
        self.held: list[int] = []  # first actors up, waiting for the others (or the grace) before they get units
        self.first_up_at = 0.0
        self.idle: collections.deque = collections.deque()  # free lanes: a slot once per unit it can take more
        self.in_flight: dict = {}  # ref of run_unit -> (slot, unit, the actor handle it was sent to)
        self.attempts = collections.Counter()
        self.start_failures = collections.Counter()  # slot -> actors in that slot that died before starting
        self.start_error: Exception | None = None  # why the last actor that did not start failed
        self.done = self.retried = 0
        self.starved_since: float | None = None  # when the pool last had no actor at work and units to do
        self.last_wait_log = 0.0

    # ------------------------------------------------------------------ the loop
    def start(self) -> ActorPool:
        """Spawn the actors (once): each loads the model and opens the store only at its first unit,
        so a pool may start before the store is prepared. The caller must `run` or `close` it."""
        if not self.actors:
            for slot in range(self.n):
                self._spawn(slot)
            self.first_wave = set(self.actors)
        return self

    def run(self, units: list[int], on_unit: Callable[[dict], None]) -> dict:
        """Extract `units` (started or not: no more actors than units) and close the pool."""
        self.queue, self.total, self.on_unit = collections.deque(units), len(units), on_unit
        self._trim(len(units))
        log.info("extract: %d units on %d actors, each %s", self.total, self.n, self.options)
        try:
            self.start()
            while self.in_flight or (self.queue and self.starting) or self.held:
                self._step()
            if self.queue:
                why = first_error_line(self.start_error)
                raise ActorsFailed(f"no extraction actor could be started ({len(self.queue)} units not extracted; last error: {why}); {RESUME_HINT}")
            if self.starting:
                log.warning("extract: %d of %d actors never started (the cluster could not place them: %s each)", len(self.starting), self.n, self.options)
            pool = _pool_info([self.actors[slot] for slot in sorted(set(self.idle))])
        finally:  # also on a data error, a signal or a lost cluster: never leave actors holding GPUs
            self.close()
        return {"done": self.done, "retried": self.retried, "actors": self.n, "pool": pool}

    def _step(self) -> None:
        ready, _ = ray.wait([*self.in_flight, *self.starting], num_returns=1, timeout=self._timeout())
        if self.held and time.monotonic() >= self.first_up_at + START_GRACE_S:
            log.warning("extract: %d of %d actors not up %.0f s after the first; starting without them", len(self.first_wave), self.n, START_GRACE_S)
            self._release()
        if not ready:
            self._check_cluster()
        elif ready[0] in self.starting:
            self._on_started(ready[0])
        else:
            self._on_result(ready[0])
        self._feed()

    def _timeout(self) -> float:
        if self.held:
            return min(POLL_S, max(0.0, self.first_up_at + START_GRACE_S - time.monotonic()))
        return POLL_S

    def close(self) -> None:
        for actor in self.actors.values():
            try:
                ray.kill(actor, no_restart=True)
            except Exception as e:  # noqa: BLE001 - the cluster may be gone; nothing is left to stop then
                log.debug("could not kill an actor: %s", e)
        self.actors.clear()

    # ------------------------------------------------------------------ events
    def _on_started(self, ref) -> None:
        slot = self.starting.pop(ref)
        try:
            ray.get(ref)
        except INFRA_ERRORS as e:  # its node went (too), or the model cannot load there
            self.first_wave.discard(slot)  # its replacement is not waited for
            self.start_error = e
            self.start_failures[slot] += 1
            log.warning("extraction actor %d did not start (%s)", slot, type(e).__name__)
            self._check_cluster()
            if self.start_failures[slot] <= self.cfg.max_unit_retries:
                self._replace(slot)  # else the pool shrinks by one; the others take its units
        else:
            if slot in self.first_wave:
                self.first_wave.discard(slot)
                self.first_up_at = self.first_up_at or time.monotonic()
                self.held.append(slot)
            else:
                self.idle.extend([slot] * self.lanes)
        if self.held and not self.first_wave:
            self._release()

    def _on_result(self, ref) -> None:
        slot, unit, actor = self.in_flight.pop(ref)
        current = actor is self.actors[slot]  # False: a unit of an actor that was already replaced
        try:
            info = ray.get(ref)
        except INFRA_ERRORS as e:
            self.attempts[unit] += 1
            if self.attempts[unit] > self.cfg.max_unit_retries:
                raise ActorsFailed(
                    f"the actor of unit {unit:06d} died {self.attempts[unit]} times "
                    f"(max_unit_retries={self.cfg.max_unit_retries}; last error: {first_error_line(e)}); {RESUME_HINT}"
                ) from e
            log.warning("actor for unit %06d died (%s); retrying it on another actor", unit, type(e).__name__)
            self.retried += 1
            self.queue.appendleft(unit)
            if current:  # its other unit in flight fails too, and must not replace the replacement
                self._check_cluster()
                self._replace(slot)
            return
        self.done += 1
        self.on_unit(info)
        if current:
            self.idle.append(slot)

    # ------------------------------------------------------------------ actions
    def _spawn(self, slot: int) -> None:
        actor = ExtractActor.options(**self.options, max_concurrency=self.lanes).remote(self.cfg_json, self.threads, self.fail_on_unit.pop(slot, None))
        self.actors[slot] = actor
        self.starting[actor.info.remote()] = slot

    def _replace(self, slot: int) -> None:
        # Like the first actors, a replacement gets units once it has started; until then its
        # units wait in the queue for anyone.
        ray.kill(self.actors[slot], no_restart=True)
        self._spawn(slot)
        idle_lanes = [s for s in self.idle if s != slot]  # the dead actor's free lanes go with it
        self.idle.clear()
        self.idle.extend(idle_lanes)

    def _trim(self, wanted: int) -> None:
        """No more actors than units: the surplus of a pool started before the units were known goes."""
        for slot in sorted(self.actors)[wanted:]:
            ray.kill(self.actors.pop(slot), no_restart=True)
            self.starting = {ref: s for ref, s in self.starting.items() if s != slot}
            self.first_wave.discard(slot)
            self.held = [s for s in self.held if s != slot]
            self.idle = collections.deque(s for s in self.idle if s != slot)
        self.n = min(self.n, wanted)

    def _release(self) -> None:
        # Round-robin lanes: every actor gets a unit before any gets its second.
        self.idle.extend(slot for _ in range(self.lanes) for slot in self.held)
        self.held.clear()
        self.first_wave.clear()  # late ones join as they start

    def _feed(self) -> None:
        while self.queue and self.idle:
            slot = self.idle.popleft()
            unit = self.queue.popleft()
            self.in_flight[self.actors[slot].run_unit.remote(unit)] = (slot, unit, self.actors[slot])
        working = self.in_flight or self.held
        if working or not self.queue:
            self.starved_since = None
        elif self.starved_since is None:
            self.starved_since = time.monotonic()

    # ------------------------------------------------------------------ never wait for ever
    def _check_cluster(self) -> None:
        """Raise ClusterLost when the driver's node is dead; PoolStarved when no actor has run for
        `actor_wait_timeout_s`; else say, now and then, what the waiting actors ask for."""
        dead = driver_node_dead()
        if dead:
            raise ClusterLost(f"{dead} during extraction ({self.done} of {self.total} units done in this session); {RESUME_HINT}")
        if self.starved_since is None:
            return
        waited = time.monotonic() - self.starved_since
        limit = self.cfg.actor_wait_timeout_s
        if limit and waited >= limit:
            raise PoolStarved(f"no extraction actor could start for {waited:.0f} s (actor_wait_timeout_s={limit:g}): {self._wanted()}; {RESUME_HINT}")
        if waited >= WAIT_LOG_S and time.monotonic() - self.last_wait_log >= WAIT_LOG_S:  # not during a model load
            self.last_wait_log = time.monotonic()
            log.warning("extract: %d units wait for an actor to start (%.0f s so far): %s", len(self.queue), waited, self._wanted())

    def _wanted(self) -> str:
        free = {k: v for k, v in ray.available_resources().items() if k in ("CPU", "GPU")}
        return f"each asks for {self.options}, the cluster has {free} free (add nodes, or lower workers / cpus_per_worker / actors_per_gpu)"


def first_error_line(e: BaseException | None) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:160] if e is not None else "none"


def run_extract(
    cfg: RunConfig,
    units: list[int],
    on_unit: Callable[[dict], None] = lambda info: None,
    fail_on_unit: dict[int, int] | None = None,
    pool: ActorPool | None = None,
) -> dict:
    """Run every unit on the actor pool (`pool`: one `start_pool` started early, else a new one),
    then close it; returns counts of units done and retried."""
    if not units:
        if pool is not None:
            pool.close()
        return {"done": 0, "retried": 0, "actors": 0}
    return (pool or ActorPool(cfg, fail_on_unit)).run(units, on_unit)


def start_pool(cfg: RunConfig) -> ActorPool:
    """Start the extraction actors now (Ray must be up), before the units are known: their model
    loads overlap whatever the driver does next (prepare). Hand the pool to `stage_extract`."""
    return ActorPool(cfg).start()


def _pool_info(actors: list) -> list[dict]:
    """Each actor's info() (pid, GPU ids, device): where the pool actually ran, for logs and tests."""
    try:
        return ray.get([a.info.remote() for a in actors], timeout=30)
    except (*INFRA_ERRORS, ray.exceptions.GetTimeoutError) as e:  # diagnostic only: never fail a finished run
        log.warning("could not read the extraction pool's info: %s", type(e).__name__)
        return []
