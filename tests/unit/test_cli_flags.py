"""One config surface: the CLI's flags come from RunConfig, help and defaults included."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import attnsim.cli as cli
from attnsim.cli_flags import field_help, overrides_from_flags
from attnsim.config import RunConfig
from attnsim.store.meta import CONFIG_SETTINGS

NESTED = {"labels"}  # groups of settings: YAML or job overrides (labels.anchor_share=0.3), not flags
NOT_FLAGS = {"out"}  # given by its own option, shared by every command


def test_every_config_field_is_a_flag_of_run_and_every_store_setting_of_prepare():
    run_fields = set(cli.PREPARE_FIELDS) | set(cli.EXTRACT_FIELDS) | set(cli.REDUCE_FIELDS)
    assert run_fields | NESTED | NOT_FLAGS == set(RunConfig.model_fields)
    assert set(CONFIG_SETTINGS) <= set(cli.PREPARE_FIELDS), "prepare fixes the store: it must take every setting that does"


@pytest.mark.parametrize("name", ["k", "max_tokens", "sentence_separator", "tiers", "one_per_line"])
def test_help_reads_the_default_and_choices_from_the_config(name):
    text = field_help(name)
    field = RunConfig.model_fields[name]
    assert field.description.split()[0].lower() in text.lower()
    assert f"config key {name}" in text
    if name == "k":
        assert "default 8;" in text
    if name == "sentence_separator":
        assert "One of: none, sep." in text
    if name == "tiers":
        assert "default default;" in text and "Comma list" in text
    if name == "one_per_line":
        assert "default" not in text.split("(")[-1]  # a flag off by default shows no default


def test_flags_reach_the_config_as_overrides(monkeypatch, tmp_path):
    seen = {}

    def fake_prepare(cfg, use_ray):
        seen["cfg"], seen["use_ray"] = cfg, use_ray
        raise cli.UserError("stop here")

    monkeypatch.setattr("attnsim.pipeline.stage_prepare", fake_prepare)
    args = [
        "prepare",
        "--out",
        str(tmp_path),
        "--k",
        "12",
        "--sentence-separator",
        "sep",
        "--tiers",
        "vectors,dense",
        "--one-per-line",
        "--similarity",
        "cosine",
        "--local",
    ]
    r = CliRunner().invoke(cli.app, args)
    assert r.exit_code == 2 and "stop here" in r.output
    cfg = seen["cfg"]
    assert (cfg.k, cfg.sentence_separator, cfg.tiers, cfg.one_per_line, cfg.similarity_kind) == (12, "sep", ["default", "vectors", "dense"], True, "cosine")
    assert cfg.max_tokens == RunConfig().max_tokens and seen["use_ray"] is False  # not given: the config's value


def test_bad_flag_values_are_one_line_naming_the_key(tmp_path):
    r = CliRunner().invoke(cli.app, ["prepare", "--out", str(tmp_path), "--sentence-separator", "comma", "--local"])
    assert r.exit_code == 2 and "sentence_separator" in r.output and "'none' or 'sep'" in r.output


def test_overrides_drop_flags_not_given():
    assert overrides_from_flags({"k": None, "one_per_line": False, "tiers": "vectors, dense", "model": "x"}) == {"tiers": ["vectors", "dense"], "model": "x"}
