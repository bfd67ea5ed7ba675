"""Node loss on a mini-cluster: a head and two worker nodes on this machine, each worker node with
one logical GPU (no CUDA here, so the actors fall back to the CPU). One worker node is removed in
the middle of extraction: the job finishes on the remaining node with the bytes of an undisturbed run.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time

import pytest
from helpers import array_digest, extract_actor_processes

from attnsim.config import RunConfig
from attnsim.pipeline import stage_extract, stage_prepare
from attnsim.store.io import completed_units

MB = 1024**2


@pytest.fixture(scope="module")
def cluster():
    import ray
    from ray._private.authentication.authentication_token_setup import (
        enable_token_auth_by_default,
        ensure_token_if_auth_enabled,
    )
    from ray.cluster_utils import Cluster

    from attnsim.executors.cluster import ensure_ray

    # Cluster() starts nodes the way `ray start` does, which (unlike ray.init) does not switch token
    # authentication on by itself: do what ray.init does for a new cluster, so it runs as in production.
    enable_token_auth_by_default()
    ensure_token_if_auth_enabled(None, create_token_if_missing=True)
    # Cluster() publishes its address in <ray temp>/ray_current_cluster, where a bare ray.init()
    # anywhere on this machine would find and join it: give it a temp dir of its own (short,
    # for Ray's socket paths).
    patch = pytest.MonkeyPatch()
    patch.setenv("RAY_TMPDIR", tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 80 * MB})
    try:
        workers = [cluster.add_node(num_cpus=1, num_gpus=1, object_store_memory=80 * MB) for _ in range(2)]
        cluster.wait_for_nodes()
        ensure_ray(cluster.address)  # attnsim joins an existing cluster through the same entry as `ray job submit`
        yield cluster, workers
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(os.environ["RAY_TMPDIR"], ignore_errors=True)
        patch.undo()


def config(tiny_bert, corpus_dir, out) -> RunConfig:
    return RunConfig(model=tiny_bert, corpus=corpus_dir, out=str(out), max_tokens=32, windows_per_shard=1, batch_size=1)


def test_token_authentication_is_on(cluster):
    from ray._private.authentication.authentication_utils import is_token_auth_enabled

    assert is_token_auth_enabled()


def test_actor_with_a_logical_gpu_but_no_cuda_runs_on_the_cpu(cluster, tiny_bert, corpus_dir, tmp_path):
    import ray
    import torch

    from attnsim.executors.extract_actor import ExtractActor

    assert not torch.cuda.is_available()
    cfg = config(tiny_bert, corpus_dir, tmp_path)
    stage_prepare(cfg, use_ray=False)
    actor = ExtractActor.options(num_gpus=1, num_cpus=1).remote(cfg.model_dump(mode="json"), None)
    try:
        info = ray.get(actor.info.remote(), timeout=120)
        assert info["gpu_ids"] and info["device"] == "cpu"
        marker = ray.get(actor.run_unit.remote(0), timeout=120)
        assert marker["unit"] == 0
    finally:
        ray.kill(actor)


def test_removing_a_worker_node_mid_extraction(cluster, tiny_bert, corpus_dir, tmp_path_factory):
    import ray

    mini, workers = cluster
    reference = config(tiny_bert, corpus_dir, tmp_path_factory.mktemp("reference"))
    stage_prepare(reference, use_ray=False)
    stage_extract(reference, use_ray=False)

    cfg = config(tiny_bert, corpus_dir, tmp_path_factory.mktemp("lossy"))
    stage_prepare(cfg, use_ray=False)
    n_units = 29
    removed = threading.Event()

    def remove_when_busy():
        # Both GPU nodes hold one actor each, and an actor gets units once it has loaded its model:
        # once both have, and units are landing, take a node (and its actor, mid-unit) away.
        def started() -> int:
            return sum(not title.endswith("__init__") for title in extract_actor_processes().values())

        while started() < 2 or len(completed_units(cfg.store_url)) < 2:
            time.sleep(0.01)
        mini.remove_node(workers[1])
        removed.set()

    thread = threading.Thread(target=remove_when_busy, daemon=True)
    thread.start()
    result = stage_extract(cfg, use_ray=True)
    thread.join(60)
    assert removed.is_set()
    assert len(completed_units(cfg.store_url)) == n_units
    assert result["remaining"] == 0 and result["actors"] == 2
    assert result["retried"] >= 1, "the removed node's actor was working on a unit"
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    assert array_digest(cfg.store_url) == array_digest(reference.store_url)
