"""The typed config: defaults, validation, one-line errors naming the bad key."""

from __future__ import annotations

import pytest

from attnsim.config import RunConfig
from attnsim.errors import UserError


def test_defaults_are_the_embedded_run():
    cfg = RunConfig()
    assert (cfg.model, cfg.corpus, cfg.max_tokens, cfg.k, cfg.similarity_kind) == ("minilm", "lee", 256, 8, "dot")
    assert cfg.store_url.endswith("runs/default/store.zarr")
    assert cfg.tiers == ["default"]


def test_misspelt_key_is_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("modle: minilm\n")
    with pytest.raises(UserError, match="unknown config key 'modle'"):
        RunConfig.load(path)


def test_bad_value_is_named():
    with pytest.raises(UserError, match="similarity_kind"):
        RunConfig.from_dict({"similarity_kind": "euclid"})


def test_tiers_always_include_default():
    assert RunConfig(tiers=["dense"]).tiers == ["default", "dense"]


def test_quantile_mode_needs_a_dense_or_vectors_tier():
    with pytest.raises(Exception, match="quantile"):
        RunConfig(high_mode="quantile")
    assert RunConfig(high_mode="quantile", tiers=["vectors"]).high_mode == "quantile"


@pytest.mark.parametrize("store", ["../elsewhere.zarr", "a/../../b.zarr", ".."])
def test_store_cannot_escape_the_run_folder(store):
    with pytest.raises(UserError, match="escapes the run folder"):
        RunConfig.from_dict({"store": store})


def test_object_store_urls_are_joined():
    cfg = RunConfig(out="s3://bucket/runs/x")
    assert cfg.store_url == "s3://bucket/runs/x/store.zarr"
    assert cfg.stats_url == "s3://bucket/runs/x/stats"
