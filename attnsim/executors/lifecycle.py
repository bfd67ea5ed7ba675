"""How a run ends when it cannot finish: signals, a lost cluster, and Ray processes a killed driver left.

A run that stops early always ends the same way: one line saying what happened and that the same
command resumes, and an exit code that says why (3: the cluster failed, 128 + N: signal N, so 130
for Ctrl-C and 143 for SIGTERM). Units with a marker stay done; any other unit is redone whole on
resume (its marker is written last), so stopping is always safe.

A local run records the Ray processes it started (per store, in ``~/.cache/attnsim/ray``). A driver
that was SIGKILLed cannot stop them, and Ray's agents outlive their raylet; the next run of the
same command finds the record, sees that its driver is gone, and stops those processes by pid.
This module imports Ray only when a Ray cluster is already running: `extract --local` never does.

Example::

    with stop_on_signals():
        run_all(cfg)         # Ctrl-C -> KeyboardInterrupt -> exit_code_for_interrupt() == 130
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import logging
import os
import signal
import threading
from pathlib import Path

log = logging.getLogger("attnsim")

RESUME_HINT = "units already marked are kept; run the same command again to resume"
EXIT_CLUSTER = 3  # not 2: nothing the user typed was wrong, and the same command resumes


class RunStopped(Exception):
    """The run stopped before it finished, for a reason outside the user's input; resumable."""

    exit_code = EXIT_CLUSTER


class ClusterLost(RunStopped):
    """The Ray cluster (or the local node of a local run) died under the run."""


class PoolStarved(RunStopped):
    """No extraction actor could be placed for `actor_wait_timeout_s`."""


class ActorsFailed(RunStopped):
    """Actors kept dying: a unit failed `max_unit_retries` + 1 times, or no actor ever started."""


# ---------------------------------------------------------------------------------------- signals
_last_signal: list[int] = []  # the signal that interrupted this process, if any


def _on_signal(signum, frame) -> None:
    _last_signal.append(signum)
    # KeyboardInterrupt, not an exception of our own: Ray's blocking calls (ray.get, ray.wait) check
    # for signals and re-raise only KeyboardInterrupt, so any other exception would be lost there.
    raise KeyboardInterrupt


def install_signal_handlers() -> None:
    """SIGINT and SIGTERM raise KeyboardInterrupt in the main thread (ray.init replaces SIGTERM's
    handler with sys.exit, so this is called again after it)."""
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_signal)
        signal.signal(signal.SIGTERM, _on_signal)


@contextlib.contextmanager
def stop_on_signals():
    """Within the block, SIGINT and SIGTERM unwind the stack (closing the actor pool) as KeyboardInterrupt."""
    _last_signal.clear()
    old = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    install_signal_handlers()
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):  # not the main thread: nothing was installed
            signal.signal(signal.SIGINT, old[0])
            signal.signal(signal.SIGTERM, old[1])


def interrupt_exit(extra: str = "") -> tuple[int, str]:
    """(exit code, one line) for a KeyboardInterrupt: 130 for Ctrl-C, 143 for SIGTERM. Stops the
    local Ray cluster this process started first, so nothing of the run is left running."""
    signum = _last_signal[-1] if _last_signal else signal.SIGINT
    stop_local_ray()
    name = signal.Signals(signum).name
    return 128 + signum, f"stopped by {name}{extra}; {RESUME_HINT}"


# ---------------------------------------------------------------------------------------- local Ray
_stopping = threading.Lock()  # one shutdown at a time: the background stop and an interrupt's


def stop_local_ray() -> None:
    """Shut down Ray in this process; a local cluster this driver started goes with it."""
    import sys

    if "ray" not in sys.modules:  # never import Ray just to stop it
        return
    import ray

    with _stopping:
        if ray.is_initialized():
            ray.shutdown()
        forget_local_cluster()


def stop_local_ray_in_background() -> threading.Thread | None:
    """Stop the local cluster this driver started on a thread, once the run needs Ray no more; the
    caller joins the thread. Ray's own exit hook would stop it after the last output, after a fixed
    0.5 s pause (the shutdown itself ~1.4 s): `attnsim run` on lee ends 3.1-3.3 s sooner this way
    (benchmarks/RESULTS.md). None when this process did not start the cluster: one it joined, or a
    session the caller opened, is not this run's to stop."""
    if not _record_path:
        return None
    thread = threading.Thread(target=stop_local_ray, name="attnsim-ray-stop", daemon=True)
    thread.start()
    return thread


_record_path: list[Path] = []  # the record this process wrote, removed on a clean shutdown


def _records_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base, "attnsim", "ray")


def record_path(owner: str) -> Path:
    """Where the Ray processes of a local run on store `owner` are recorded."""
    return _records_dir() / (hashlib.sha256(owner.encode()).hexdigest()[:16] + ".json")


def _identity(pid: int) -> dict | None:
    import psutil

    try:
        return {"pid": pid, "create_time": psutil.Process(pid).create_time()}
    except psutil.Error:
        return None


def record_local_cluster(owner: str) -> None:
    """Write down the processes of the local cluster this driver just started (GCS, raylet, and
    their children: the agents, which survive a killed raylet)."""
    import psutil
    import ray

    node = ray._private.worker._global_node  # the head this driver started; None when it joined one
    if node is None:
        return
    roots = [info.process.pid for infos in node.all_processes.values() for info in infos]
    pids = set(roots)
    for pid in roots:
        with contextlib.suppress(psutil.Error):
            pids.update(child.pid for child in psutil.Process(pid).children(recursive=True))
    record = {
        "owner": owner,
        "driver": _identity(os.getpid()),
        "session_dir": getattr(node, "_session_dir", None),
        "processes": [ident for ident in map(_identity, sorted(pids)) if ident],
    }
    path = record_path(owner)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    _record_path[:] = [path]
    atexit.register(forget_local_cluster)  # a driver that exits at all has its cluster stopped by Ray's own atexit


def forget_local_cluster() -> None:
    for path in _record_path:
        path.unlink(missing_ok=True)
    _record_path.clear()


def _alive(ident: dict | None):
    """The process of a recorded identity if it still runs (same pid and start time), else None."""
    import psutil

    if not ident:
        return None
    try:
        proc = psutil.Process(ident["pid"])
        if abs(proc.create_time() - ident["create_time"]) < 0.01 and proc.status() != psutil.STATUS_ZOMBIE:
            return proc
    except psutil.Error:
        pass
    return None


def reap_previous_run(owner: str) -> int:
    """Stop the Ray processes a previous local run on store `owner` left behind when its driver
    was killed; returns how many were stopped. A previous driver that still runs is left alone."""
    import psutil

    path = record_path(owner)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return 0
    if _alive(record.get("driver")):
        return 0  # another driver is working on this store; its cluster is its own
    procs = {p.pid: p for p in filter(None, map(_alive, record.get("processes", [])))}
    for proc in list(procs.values()):
        with contextlib.suppress(psutil.Error):
            procs.update({c.pid: c for c in proc.children(recursive=True)})
    for proc in procs.values():
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, left = psutil.wait_procs(list(procs.values()), timeout=5)
    for proc in left:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(left, timeout=5)
    path.unlink(missing_ok=True)
    if procs:
        log.warning("stopped %d Ray processes left by a killed run on this store (driver pid %s)", len(procs), (record.get("driver") or {}).get("pid"))
    return len(procs)
