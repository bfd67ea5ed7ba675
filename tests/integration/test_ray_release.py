"""`run_all` stops the local Ray cluster it started as soon as extraction is over, while reduce and
the report run (Ray's own exit hook would stop it after the last output, with a fixed pause), and
leaves alone a Ray session it joined."""

from __future__ import annotations

import time

import matplotlib
import ray
from helpers import tiny_config

from attnsim import pipeline
from attnsim.executors import lifecycle


def wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.1)
    return condition()


def test_a_run_stops_the_local_ray_it_started_while_reduce_runs(tiny_bert, corpus_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MPLCONFIGDIR", matplotlib.get_cachedir())  # the report's font cache stays where it is
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "state"))  # the cluster's record, away from ~/.cache
    assert not ray.is_initialized(), "an earlier test module left Ray running"
    seen = {}
    extract, reduce = pipeline.stage_extract, pipeline.stage_reduce

    def extract_and_look(*args, **kwargs):
        result = extract(*args, **kwargs)
        seen["ray up after extraction"] = ray.is_initialized()  # the stop starts only after this
        return result

    def reduce_and_watch(cfg):
        seen["stopped during reduce"] = wait_until(lambda: not ray.is_initialized(), timeout=60)
        return reduce(cfg)

    monkeypatch.setattr(pipeline, "stage_extract", extract_and_look)
    monkeypatch.setattr(pipeline, "stage_reduce", reduce_and_watch)
    cfg = tiny_config(tiny_bert, corpus_dir, tmp_path / "run", windows_per_shard=8)
    try:
        result = pipeline.run_all(cfg)
    finally:
        lifecycle.stop_local_ray()  # whatever happened, no cluster outlives the test
    assert result["extract"]["remaining"] == 0
    assert seen == {"ray up after extraction": True, "stopped during reduce": True}
    assert not ray.is_initialized()
    record = lifecycle.record_path(cfg.store_url)
    assert record.is_relative_to(tmp_path / "state") and not record.exists()  # the cluster's record went with it


def test_a_run_leaves_a_ray_session_it_joined_running(tiny_bert, corpus_dir, tmp_path, ray_session):
    cfg = tiny_config(tiny_bert, corpus_dir, tmp_path / "run", windows_per_shard=8)
    pipeline.run_all(cfg)
    assert ray.is_initialized()
