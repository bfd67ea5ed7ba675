"""Stopping cleanly without a cluster: what a killed driver's record makes the next run stop (real
processes, killed by pid), the exit code of a signal, and where an address makes Ray connect."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from attnsim.errors import UserError
from attnsim.executors import lifecycle
from attnsim.executors.cluster import gcs_endpoint, probe_address


def sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


def identity(pid: int) -> dict:
    return {"pid": pid, "create_time": psutil.Process(pid).create_time()}


@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path


def write_record(owner: str, driver: dict | None, processes: list[dict]) -> None:
    path = lifecycle.record_path(owner)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"owner": owner, "driver": driver, "processes": processes}))


@pytest.mark.timeout(60)
def test_processes_of_a_killed_driver_are_stopped_by_the_next_run(state):
    dead_driver = sleeper()
    dead_driver.kill()
    dead_driver.wait()
    leftovers = [sleeper(), sleeper()]
    write_record("runs/x/store.zarr", {"pid": dead_driver.pid, "create_time": 1.0}, [identity(p.pid) for p in leftovers])
    assert lifecycle.reap_previous_run("runs/y/store.zarr") == 0  # another store's run: not ours
    assert all(p.poll() is None for p in leftovers)
    assert lifecycle.reap_previous_run("runs/x/store.zarr") == 2
    for p in leftovers:  # reaped by the call (they are this test's children): gone, pid and all
        p.wait(timeout=10)
        assert not psutil.pid_exists(p.pid)
    assert not lifecycle.record_path("runs/x/store.zarr").exists()


@pytest.mark.timeout(60)
def test_a_live_driver_and_a_reused_pid_are_left_alone(state):
    driver, other = sleeper(), sleeper()
    try:
        write_record("a", identity(driver.pid), [identity(other.pid)])
        assert lifecycle.reap_previous_run("a") == 0  # its driver still runs: its cluster is its own
        # The recorded pid now belongs to a process started at another time: never kill it.
        write_record("b", None, [{"pid": other.pid, "create_time": identity(other.pid)["create_time"] - 100}])
        assert lifecycle.reap_previous_run("b") == 0
        assert driver.poll() is None and other.poll() is None
    finally:
        for p in (driver, other):
            p.kill()
            p.wait()


def test_interrupt_exit_codes():
    for signum, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        lifecycle._last_signal[:] = [signum]
        got, line = lifecycle.interrupt_exit()
        assert got == code and signal.Signals(signum).name in line and lifecycle.RESUME_HINT in line


def test_sigterm_becomes_keyboard_interrupt_inside_stop_on_signals():
    with pytest.raises(KeyboardInterrupt):
        with lifecycle.stop_on_signals():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler interrupts the sleep at once
    assert lifecycle._last_signal == [signal.SIGTERM]
    assert signal.getsignal(signal.SIGTERM) is not lifecycle._on_signal  # restored after the block


@pytest.mark.parametrize(
    "address, expected",
    [
        ("10.0.0.5:6379", ("10.0.0.5", 6379)),
        ("ray://head:10001", ("head", 10001)),
        ("head", ("head", 6379)),
        ("[::1]:6380", ("::1", 6380)),
    ],
)
def test_gcs_endpoint(address, expected):
    assert gcs_endpoint(address) == expected


def test_probe_of_a_port_nothing_listens_on_is_one_user_error():
    with pytest.raises(UserError, match=r"127\.0\.0\.1:1.*RAY_ADDRESS.*RAY_AUTH_TOKEN"):
        probe_address("127.0.0.1:1", timeout=5)
