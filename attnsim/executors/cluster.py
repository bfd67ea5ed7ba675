"""Joining or starting a Ray cluster, and prepare's fan-out of tasks over it.

An address that nothing answers at is one line within seconds: Ray itself retries a GCS address
for ever (measured: `ray.init("127.0.0.1:1")` still retrying after 120 s), so the address is
probed with a plain TCP connection first. A local run first stops what a killed earlier run on the
same store left running (see `lifecycle`).

Example::

    ensure_ray(owner="runs/default/store.zarr")   # RAY_ADDRESS if set, else a new local cluster
    squares = list(ray_map(lambda x: x * x, [1, 2, 3]))
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from typing import Callable

import ray

from attnsim.errors import UserError
from attnsim.executors import lifecycle

log = logging.getLogger("attnsim")

PROBE_TIMEOUT_S = 10.0  # a host that drops packets: give up after this, well inside the 30 s promised
DEFAULT_GCS_PORT = 6379
HOW_TO_JOIN = (
    "set RAY_ADDRESS to the head's HOST:6379 (or unset it to start a local cluster) and give the "
    "cluster's token: export RAY_AUTH_MODE=token RAY_AUTH_TOKEN=$(cat ~/.ray/auth_token) from the head"
)


def ensure_ray(address: str | None = None, owner: str | None = None) -> None:
    """Join the cluster named by `address` or RAY_ADDRESS, else start a local one (token auth on).

    `owner` (the store's URL) names a local run, so that its Ray processes can be found and stopped
    if its driver is killed."""
    if ray.is_initialized():
        return
    # "local" rather than None: None would join whatever cluster another process last recorded in
    # /tmp/ray, which surprises a user who asked for nothing (jobs/ pass address="auto" explicitly).
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    if address == "local":
        lifecycle.reap_previous_run(owner or "")
    else:
        probe_address(address)
    ours = signal.getsignal(signal.SIGINT) is lifecycle._on_signal
    try:
        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=True,
            logging_level=logging.WARNING,
            # Workers import attnsim from the same environment as the driver.
            runtime_env=None,
        )
    except ConnectionError as e:
        if address in ("auto", "local"):  # no cluster recorded on this machine
            raise UserError(f"no Ray cluster to join at address {address!r} ({first_line(e)}); {HOW_TO_JOIN}") from None
        # The TCP probe got through, so something listens: measured with a wrong RAY_AUTH_TOKEN,
        # ray.init gives up after ~20 s with this error (its log says InvalidAuthToken).
        raise UserError(
            f"the Ray cluster at {address!r} answers but did not let this driver join ({first_line(e)}); "
            f"a missing or wrong token is the usual cause: {HOW_TO_JOIN}"
        ) from None
    if ours:  # ray.init replaced SIGTERM's handler with sys.exit: stop through the pool's cleanup instead
        lifecycle.install_signal_handlers()
    if address == "local":
        lifecycle.record_local_cluster(owner or "")


def first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:160]


def gcs_endpoint(address: str) -> tuple[str, int] | None:
    """(host, port) that `address` makes Ray connect to, or None when Ray resolves it itself ("auto")."""
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS", "auto")
        if address == "auto":
            return None
    rest = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = rest.rpartition(":")
    if not sep:
        return rest, DEFAULT_GCS_PORT
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise UserError(f"Ray address {address!r} is not HOST:PORT; {HOW_TO_JOIN}") from None


def probe_address(address: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Raise a UserError naming the address when nothing accepts a TCP connection there."""
    endpoint = gcs_endpoint(address)
    if endpoint is None:
        return
    host, port = endpoint
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        raise UserError(f"no Ray cluster answers at {address!r}: a TCP connection to {host}:{port} failed ({e.strerror or e}); {HOW_TO_JOIN}") from None


def reachable(address: str, timeout: float = 2.0) -> bool:
    """Whether a TCP connection to HOST:PORT opens within `timeout` (a liveness check that never hangs)."""
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
        return True
    except (OSError, ValueError):
        return False


def ray_map(fn: Callable, items: list):
    """Map fn over items with one Ray task each, yielding results in order (prepare's fan-out)."""
    remote = ray.remote(num_cpus=1, max_retries=3)(fn)
    refs = [remote.remote(item) for item in items]
    for ref in refs:
        yield ray.get(ref)


def driver_node_dead() -> str | None:
    """What died, when the node this driver submits through is dead (or the cluster's GCS is gone);
    None while it is alive. A driver whose raylet is gone can never start an actor again.

    The cheap checks come first and never block: a call to a dead GCS (ray.nodes()) hangs until
    Ray's own 60 s reconnect limit and then kills the driver without a word (measured, Ray 2.60)."""
    node = ray._private.worker._global_node
    # A local cluster's own processes (empty when this driver joined a cluster): poll() is instant,
    # where the GCS takes 15-30 s to declare a dead raylet's node dead.
    for kind, infos in (getattr(node, "all_processes", None) or {}).items():
        for info in infos:
            if kind in ("gcs_server", "raylet") and info.process.poll() is not None:
                return f"the local Ray node's {kind} (pid {info.process.pid}) died"
    try:
        gcs = node.gcs_address if node is not None else None
    except AssertionError:  # Ray asserts that it knows the address; a driver always does
        gcs = None
    if gcs and not reachable(gcs):
        return f"the Ray cluster's GCS at {gcs} stopped answering"
    try:
        node_id = ray.get_runtime_context().get_node_id()
        nodes = ray.nodes()
    except Exception as e:  # noqa: BLE001 - the GCS itself is unreachable: the cluster is gone
        return f"the Ray cluster stopped answering ({type(e).__name__})"
    mine = [n for n in nodes if n["NodeID"] == node_id]
    if mine and not mine[0]["Alive"]:
        return f"the Ray node this driver runs on ({mine[0].get('NodeManagerAddress')}, node {node_id[:8]}) died"
    if not any(n["Alive"] for n in nodes):
        return "every node of the Ray cluster died"
    return None
