"""Worker death during extraction on a local Ray session: an actor that exits in the middle of a
unit (the runner's test hook) and a worker process killed by pid from outside. Either way the unit
is retried on another actor, the job finishes, and the store is byte-identical to an undisturbed run.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest
from helpers import array_digest, extract_actor_processes, extract_in_process, tiny_config

from attnsim.config import RunConfig
from attnsim.extract.stage import units_in_flight
from attnsim.pipeline import stage_extract, stage_prepare
from attnsim.store.io import completed_units


def config(tiny_bert, corpus_dir, out, **kw) -> RunConfig:
    return tiny_config(tiny_bert, corpus_dir, out, **{"windows_per_shard": 2, "batch_size": 2, **kw})


@pytest.fixture(scope="module")
def undisturbed(tiny_bert, corpus_dir, tmp_path_factory) -> dict:
    """The reference bytes: the same run in process, nothing killed (Ray and local runs are identical)."""
    cfg = config(tiny_bert, corpus_dir, tmp_path_factory.mktemp("undisturbed"))
    extract_in_process(cfg)
    digest = array_digest(cfg.store_url)
    assert len([k for k in digest if k.startswith("_markers")]) == 15  # 15 units: enough to die among
    return digest


def test_actor_that_exits_mid_unit_costs_only_its_units_in_flight(tiny_bert, corpus_dir, tmp_path, ray_session, undisturbed):
    cfg = config(tiny_bert, corpus_dir, tmp_path, unit_writers=1)  # two units in flight on the actor
    stage_prepare(cfg, use_ray=False)
    # slot 0's actor calls os._exit(1) when its second unit starts: no cleanup, no marker
    result = stage_extract(cfg, use_ray=True, fail_on_unit={0: 1})
    assert 1 <= result["retried"] <= units_in_flight(cfg, "cpu")  # the unit it died in, and those beside it
    assert result["done"] == 15 and result["remaining"] == 0
    assert array_digest(cfg.store_url) == undisturbed


def extract_actors_at_work() -> list[psutil.Process]:
    """Our session's actor processes that are inside run_unit right now."""
    return [proc for proc, title in extract_actor_processes().items() if title == "ray::ExtractActor.run_unit"]


def test_worker_process_killed_by_pid_mid_unit(tiny_bert, corpus_dir, tmp_path, ray_session, undisturbed):
    cfg = config(tiny_bert, corpus_dir, tmp_path)
    stage_prepare(cfg, use_ray=False)
    killed: list[int] = []
    stop = threading.Event()

    def killer():
        # After the first marker (the pool is warm), SIGKILL one actor while it computes a unit.
        while not stop.is_set() and not completed_units(cfg.store_url):
            time.sleep(0.01)
        while not stop.is_set() and not killed:
            for proc in extract_actors_at_work():
                os.kill(proc.pid, signal.SIGKILL)
                killed.append(proc.pid)
                break
            time.sleep(0.005)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        result = stage_extract(cfg, use_ray=True)
    finally:
        stop.set()
        thread.join(10)
    assert len(killed) == 1, "the killer never found an actor inside run_unit"
    assert result["retried"] >= 1, "a killed actor's unit must be retried"
    assert result["remaining"] == 0
    assert array_digest(cfg.store_url) == undisturbed
    assert not list(Path(cfg.store_url).rglob("*.partial"))


# ----------------------------------------------------------------------------- actors that cannot start
@pytest.fixture
def all_cpus_held(ray_session):
    """An actor that holds both CPUs of the session: no extraction actor (2 cores each) can be placed."""
    import ray

    blocker = ray.remote(num_cpus=2)(type("Blocker", (), {"ping": lambda self: os.getpid()})).remote()
    ray.get(blocker.ping.remote(), timeout=120)
    yield blocker
    ray.kill(blocker)


@pytest.mark.timeout(180)
def test_actor_wait_timeout_fails_with_what_an_actor_asks_for(tiny_bert, corpus_dir, tmp_path, all_cpus_held, undisturbed):
    import ray

    from attnsim.executors.lifecycle import PoolStarved

    cfg = config(tiny_bert, corpus_dir, tmp_path, actor_wait_timeout_s=3)
    stage_prepare(cfg, use_ray=False)
    start = time.monotonic()
    with pytest.raises(PoolStarved) as err:
        stage_extract(cfg, use_ray=True)
    took = time.monotonic() - start
    message = str(err.value)
    assert 3 <= took < 3 + 2 * 5.0 + 5, took  # the limit, plus at most two polls and the pool's start
    assert "actor_wait_timeout_s=3" in message and "each asks for {'num_cpus': 2}" in message, message
    assert "the cluster has {} free" in message or "'CPU': 0.0" in message, message
    assert "run the same command again" in message and "\n" not in message
    assert not completed_units(cfg.store_url)
    ray.kill(all_cpus_held)  # the cluster has room again: the same call finishes the job
    assert stage_extract(cfg, use_ray=True)["remaining"] == 0
    assert array_digest(cfg.store_url) == undisturbed


@pytest.mark.timeout(180)
def test_actor_wait_timeout_0_waits_for_room(tiny_bert, corpus_dir, tmp_path, all_cpus_held, undisturbed):
    import ray

    cfg = config(tiny_bert, corpus_dir, tmp_path, actor_wait_timeout_s=0)  # as with an autoscaler
    stage_prepare(cfg, use_ray=False)
    freed = threading.Timer(12.0, ray.kill, args=(all_cpus_held,))  # "a node joins" after 12 s
    freed.start()
    try:
        start = time.monotonic()
        result = stage_extract(cfg, use_ray=True)
    finally:
        freed.cancel()
    assert time.monotonic() - start >= 12 and result["remaining"] == 0
    assert array_digest(cfg.store_url) == undisturbed


@pytest.mark.timeout(240)
def test_a_unit_whose_actor_keeps_dying_stops_the_job_with_one_line(tiny_bert, corpus_dir, tmp_path, ray_session, undisturbed):
    from attnsim.executors.lifecycle import ActorsFailed

    cfg = config(tiny_bert, corpus_dir, tmp_path, max_unit_retries=0)  # no retry: the first death is the last
    stage_prepare(cfg, use_ray=False)
    with pytest.raises(ActorsFailed) as err:
        stage_extract(cfg, use_ray=True, fail_on_unit={0: 0})  # slot 0's actor exits as its first unit starts
    message = str(err.value)
    assert "died 1 times (max_unit_retries=0" in message and "run the same command again" in message and "\n" not in message, message
    assert err.value.exit_code == 3
    assert stage_extract(cfg, use_ray=True)["remaining"] == 0  # the same call again resumes
    assert array_digest(cfg.store_url) == undisturbed
