"""The actor pool that `attnsim run` starts before prepare: its actors load the model while the store
does not exist yet, extract the same bytes as an undisturbed run, keep no more actors than units,
and are all stopped when prepare fails."""

from __future__ import annotations

import time

import pytest
from helpers import array_digest, extract_actor_processes, tiny_config, tiny_extracted

from attnsim.errors import UserError
from attnsim.executors.actor_pool import start_pool
from attnsim.pipeline import run_all, stage_extract, stage_prepare
from attnsim.store.io import store_exists


@pytest.fixture(scope="module")
def reference(tiny_bert, corpus_dir, tmp_path_factory):
    return tiny_extracted(tiny_bert, corpus_dir, tmp_path_factory.mktemp("reference"), windows_per_shard=4)


def no_actor_left(timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while extract_actor_processes() and time.monotonic() < deadline:
        time.sleep(0.5)
    return not extract_actor_processes()


def test_a_pool_started_before_the_store_exists_extracts_the_same_bytes(tiny_bert, corpus_dir, tmp_path, ray_session, reference):
    cfg = tiny_config(tiny_bert, corpus_dir, tmp_path, windows_per_shard=4, workers=2)
    pool = start_pool(cfg)  # the actors load the model now; there is no store yet
    assert not store_exists(cfg.store_url)
    stage_prepare(cfg, use_ray=True)
    result = stage_extract(cfg, use_ray=True, pool=pool)
    assert result["done"] == 8 and result["remaining"] == 0 and result["actors"] == 2
    assert array_digest(cfg.store_url) == array_digest(reference.store_url)
    assert no_actor_left()


def test_an_early_pool_keeps_no_more_actors_than_units(tiny_bert, corpus_dir, tmp_path, ray_session, reference):
    # 3 actors of 1 CPU asked for on a 2-CPU cluster, then only 2 units to do: the surplus goes,
    # and the one the cluster cannot place is not waited for.
    cfg = tiny_config(tiny_bert, corpus_dir, tmp_path, windows_per_shard=4, workers=3)
    pool = start_pool(cfg)
    stage_prepare(cfg, use_ray=True)
    result = stage_extract(cfg, use_ray=True, units=[0, 1], pool=pool)
    assert result["done"] == 2 and result["actors"] == 2
    assert no_actor_left()


def test_run_stops_the_early_pool_when_prepare_fails(tiny_bert, tmp_path, ray_session):
    cfg = tiny_config(tiny_bert, str(tmp_path / "missing.txt"), tmp_path / "run")
    with pytest.raises(UserError):
        run_all(cfg)
    assert no_actor_left()
