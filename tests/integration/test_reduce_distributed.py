"""The reduce on a dask.distributed cluster (a local one with two worker processes): the same Parquet
tables as the threaded scheduler, the blocks computed by the cluster's workers, and the client that
reduce opened closed again. Also how `dask_scheduler` values are read."""

from __future__ import annotations

import json

import polars as pl
import pytest
from helpers import extract_in_process
from polars.testing import assert_frame_equal

from attnsim.config import RunConfig
from attnsim.errors import UserError
from attnsim.reduce.stage import check_scheduler, reduce_store

TABLES = ("head_stats", "distance_decay", "anchors", "layer_summary")


@pytest.fixture(scope="module")
def store(tiny_bert, corpus_dir, tmp_path_factory) -> RunConfig:
    cfg = RunConfig(
        model=tiny_bert,
        corpus=corpus_dir,
        out=str(tmp_path_factory.mktemp("dist")),
        max_tokens=32,
        windows_per_shard=4,
        batch_size=4,
        bootstrap=20,
        tiers=["default", "vectors"],
    )
    extract_in_process(cfg)
    return cfg


@pytest.fixture(scope="module")
def cluster():
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, host="127.0.0.1") as c:
        yield c


def assert_same_outputs(a, b) -> None:
    for name in TABLES:
        assert_frame_equal(pl.read_parquet(a / f"{name}.parquet"), pl.read_parquet(b / f"{name}.parquet"), check_exact=True)
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    for s in (sa, sb):
        s.pop("reduce_seconds")
    assert sa == sb


@pytest.mark.parametrize("mode", ["topk", "quantile"])
def test_distributed_reduce_equals_threaded(store, cluster, tmp_path, mode):
    cfg = store.model_copy(update={"high_mode": mode})
    clients_before = set(cluster.scheduler.clients)
    reduce_store(cfg.model_copy(update={"dask_scheduler": "threads"}), stats_url=str(tmp_path / "threads"))
    summary = reduce_store(cfg.model_copy(update={"dask_scheduler": cluster.scheduler_address}), stats_url=str(tmp_path / "dist"))
    assert_same_outputs(tmp_path / "threads", tmp_path / "dist")
    assert summary["windows"] > 0

    # The blocks ran on the cluster's workers (the scheduler counted them) ...
    prefixes = cluster.scheduler.task_prefixes
    assert prefixes["block"].state_counts["memory"] >= 8
    # ... and the client reduce connected with is gone again.
    assert set(cluster.scheduler.clients) == clients_before


def test_address_without_scheme_is_distributed(store, cluster, tmp_path):
    host_port = cluster.scheduler_address.removeprefix("tcp://")
    reduce_store(store.model_copy(update={"dask_scheduler": host_port}), stats_url=str(tmp_path / "dist"))
    assert (tmp_path / "dist" / "head_stats.parquet").is_file()


@pytest.mark.parametrize(
    "spec, kind",
    [
        ("threads", "local"),
        ("synchronous", "local"),
        ("processes", "local"),
        ("tcp://10.0.0.5:8786", "distributed"),
        ("tls://sched.example:8786", "distributed"),
        ("10.0.0.5:8786", "distributed"),
    ],
)
def test_scheduler_kinds(spec, kind):
    assert check_scheduler(spec) == kind


def test_unknown_scheduler_is_named():
    with pytest.raises(UserError, match="dask_scheduler 'thread' is not a scheduler"):
        check_scheduler("thread")


def test_dask_on_ray_is_refused_with_the_reason():
    with pytest.raises(UserError, match="Dask on Ray.*dask.distributed scheduler"):
        check_scheduler("ray")
