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
