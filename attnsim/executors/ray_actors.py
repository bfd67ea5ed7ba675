"""Former home of the executors, kept so that imports of `attnsim.executors.ray_actors` still work.

The code now lives in `cluster` (joining Ray, prepare's fan-out), `extract_actor` (the actor and
the pool's size), `actor_pool` (the pool), `local` (no Ray) and `lifecycle` (stopping cleanly).
"""

from attnsim.executors.actor_pool import START_GRACE_S, ActorPool, run_extract
from attnsim.executors.cluster import ensure_ray, ray_map
from attnsim.executors.extract_actor import INFRA_ERRORS, ExtractActor, pool_plan
from attnsim.executors.local import run_extract_local

__all__ = ["START_GRACE_S", "ActorPool", "run_extract", "ensure_ray", "ray_map", "INFRA_ERRORS", "ExtractActor", "pool_plan", "run_extract_local"]
