"""GPU pinning without GPUs: on a Ray cluster that declares two logical GPUs, the extraction pool runs
one actor per GPU (or `actors_per_gpu` of them), each actor is given its own GPU id and a matching
CUDA_VISIBLE_DEVICES, would put the model on cuda:0 of that view, and, as this torch has no CUDA,
falls back to the CPU and still writes the same bytes as an in-process run; an actor the cluster
cannot place is never handed units. Pool sizing from CPUs and the size options are checked on the plan."""

from __future__ import annotations

import collections

import pytest
import torch
from helpers import array_digest

from attnsim.config import RunConfig
from attnsim.errors import UserError
from attnsim.executors import actor_pool as runner
from attnsim.executors.actor_pool import run_extract
from attnsim.executors.extract_actor import pool_plan
from attnsim.executors.local import run_extract_local
from attnsim.pipeline import pending_units, stage_prepare
from attnsim.store.verify import verify_store


def config(tiny_bert, corpus_dir, out, **kw) -> RunConfig:
    base = dict(model=tiny_bert, corpus=corpus_dir, out=str(out), max_tokens=32, windows_per_shard=4, batch_size=4)
    return RunConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def gpu_cluster():
    """A fresh local Ray instance (never one found on the machine) with 2 logical GPUs, 4 logical CPUs."""
    import ray

    ray.init(address="local", num_cpus=4, num_gpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 1024**2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def prepared(tiny_bert, corpus_dir, tmp_path_factory):
    cfg = config(tiny_bert, corpus_dir, tmp_path_factory.mktemp("pinned"))
    stage_prepare(cfg, use_ray=False)
    todo, layout = pending_units(cfg.store_url)
    assert len(todo) == layout.n_units >= 4
    return cfg, todo


def run_pool(cfg, units):
    seen = []
    result = run_extract(cfg, units, on_unit=seen.append)
    assert result["done"] == len(units) and result["retried"] == 0
    assert sorted(info["unit"] for info in seen) == sorted(units)
    return result, seen


def test_one_actor_per_gpu_each_on_its_own_gpu(gpu_cluster, prepared, tiny_bert, corpus_dir, tmp_path):
    cfg, units = prepared
    result, seen = run_pool(cfg, units)
    pool = result["pool"]
    assert result["actors"] == len(pool) == 2
    assert sorted(tuple(a["gpu_ids"]) for a in pool) == [("0",), ("1",)]  # distinct GPUs
    for actor in pool:
        assert actor["cuda_visible_devices"] == actor["gpu_ids"][0]  # Ray narrowed the view to its GPU
        assert actor["target_device"] == "cuda:0"  # the first (only) GPU of that view
        if not torch.cuda.is_available():
            assert actor["device"] == "cpu"  # logical GPU, no CUDA: fell back with a warning
    assert {a["pid"] for a in pool} == {info["pid"] for info in seen}  # both actors did units
    assert not verify_store(cfg.store_url).bad_units

    # The pinned pool wrote exactly what one in-process extractor writes.
    local = config(tiny_bert, corpus_dir, tmp_path / "local")
    stage_prepare(local, use_ray=False)
    run_extract_local(local, units)
    assert array_digest(cfg.store_url) == array_digest(local.store_url)


def test_actors_per_gpu_share_each_gpu(gpu_cluster, prepared):
    cfg, units = prepared
    shared = cfg.model_copy(update={"actors_per_gpu": 2})
    result, _ = run_pool(shared, units[:4])
    pool = result["pool"]
    assert len(pool) == 4 and len({a["pid"] for a in pool}) == 4
    per_gpu = collections.Counter(a["gpu_ids"][0] for a in pool)
    assert per_gpu == {"0": 2, "1": 2}


@pytest.mark.timeout(180)  # before the fix this hung: the third actor's units waited for it forever
def test_more_actors_than_gpus_finish_on_those_that_start(gpu_cluster, prepared, monkeypatch):
    # workers=3 on a cluster of 2 GPUs and no autoscaler: the third actor can never be placed. The
    # two that start wait START_GRACE_S for it, then share the units.
    monkeypatch.setattr(runner, "START_GRACE_S", 3.0)
    cfg, units = prepared
    result, seen = run_pool(cfg.model_copy(update={"workers": 3}), units)
    assert result["actors"] == 3 and len(result["pool"]) == 2  # planned 3, two ever started
    assert sorted(a["gpu_ids"][0] for a in result["pool"]) == ["0", "1"]
    assert {info["pid"] for info in seen} == {a["pid"] for a in result["pool"]}  # both did units


@pytest.mark.parametrize(
    "resources, node_cpus, options, expected",
    [
        ({"CPU": 16, "GPU": 4}, 16, {}, (4, {"num_gpus": 1.0, "num_cpus": 1}, None)),  # one actor per GPU
        ({"CPU": 16, "GPU": 4}, 16, {"actors_per_gpu": 2}, (8, {"num_gpus": 0.5, "num_cpus": 1}, None)),
        ({"CPU": 16, "GPU": 4}, 16, {"workers": 2}, (2, {"num_gpus": 1.0, "num_cpus": 1}, None)),
        ({"CPU": 16, "GPU": 4}, 16, {"device": "cpu"}, (4, {"num_cpus": 4}, 4)),  # GPUs ignored
        ({"CPU": 8}, 8, {}, (2, {"num_cpus": 4}, 4)),  # no GPUs: sized from the CPUs, 4 cores each
        ({"CPU": 2}, 2, {}, (1, {"num_cpus": 2}, 2)),
        ({"CPU": 8}, 8, {"cpus_per_worker": 1}, (8, {"num_cpus": 1}, 1)),
        ({"CPU": 8}, 8, {"workers": 3}, (3, {"num_cpus": 2}, 2)),
        ({"CPU": 8}, 2, {}, (4, {"num_cpus": 2}, 2)),  # four 2-core nodes: an actor must fit on one
    ],
)
def test_pool_plan(resources, node_cpus, options, expected):
    assert pool_plan(RunConfig(**options), resources, node_cpus) == expected


def test_pool_plan_refuses_actors_larger_than_any_node():
    with pytest.raises(UserError, match="cpus_per_worker=8 but the largest node has 4 CPUs"):
        pool_plan(RunConfig(cpus_per_worker=8), {"CPU": 16}, 4)
