"""What a model folder may make attnsim do: its own Python code runs only with --trust-remote-code,
and pickled (.bin) weights load only with --allow-pickle-weights."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from attnsim.errors import UserError
from attnsim.model.loading import load_model

EVIL_CODE = """
import os, pathlib
pathlib.Path(os.environ["ATTNSIM_TEST_SENTINEL"]).write_text("model code ran")
from transformers import PretrainedConfig, PreTrainedModel


class EvilConfig(PretrainedConfig):
    model_type = "evil-bert"


class EvilModel(PreTrainedModel):
    config_class = EvilConfig
"""


@pytest.fixture
def code_model(tmp_path, tiny_bert, monkeypatch) -> tuple[Path, Path]:
    """A model folder whose config asks for its own Python module; importing it leaves a file."""
    folder = tmp_path / "code_model"
    folder.mkdir()
    config = {"model_type": "evil-bert", "auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "evil.py").write_text(EVIL_CODE)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(Path(tiny_bert, name), folder / name)
    sentinel = tmp_path / "ran"
    monkeypatch.setenv("ATTNSIM_TEST_SENTINEL", str(sentinel))
    return folder, sentinel


def test_model_code_never_runs_without_trust_remote_code(code_model):
    folder, sentinel = code_model
    with pytest.raises(UserError, match="needs to run code from its repository; pass --trust-remote-code"):
        load_model(str(folder))
    assert not sentinel.exists()


def test_model_code_runs_only_when_the_user_trusts_it(code_model, tmp_path):
    """The other side of the test above: the sentinel does catch the code running (in a child
    process, so the module cache it writes goes to a temp folder, not the user's home)."""
    folder, sentinel = code_model
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    probe = (
        f"from attnsim.model.loading import load_model\ntry:\n    load_model({str(folder)!r}, trust_remote_code=True)\n"
        "except Exception as e:\n    print(type(e).__name__, e)"
    )
    r = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert sentinel.exists(), r.stdout + r.stderr
    assert "not a BERT-family encoder" in r.stdout  # it ran, and attnsim still refused the architecture


def test_pickle_weights_load_only_when_allowed(tiny_bert, tmp_path):
    import torch
    from transformers import AutoConfig

    folder = tmp_path / "bin_only"
    folder.mkdir()
    AutoConfig.from_pretrained(tiny_bert).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(Path(tiny_bert, name), folder / name)
    torch.save(load_model(tiny_bert).model.state_dict(), folder / "pytorch_model.bin")  # the weights, pickled
    assert not list(folder.glob("*.safetensors"))

    with pytest.raises(UserError) as err:
        load_model(str(folder))
    assert "no safetensors weights" in str(err.value) and "--allow-pickle-weights" in str(err.value)
    loaded = load_model(str(folder), allow_pickle_weights=True)
    assert loaded.weights_hash == load_model(tiny_bert).weights_hash  # the same weights, once allowed


def test_cli_refuses_pickle_weights_with_one_line(tiny_bert, corpus_dir, tmp_path):
    import torch
    from typer.testing import CliRunner

    from attnsim.cli import app

    folder = tmp_path / "bin_only"
    shutil.copytree(tiny_bert, folder)
    weights = load_model(tiny_bert).model.state_dict()
    (folder / "model.safetensors").unlink()
    torch.save(weights, folder / "pytorch_model.bin")
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["run", "--model", str(folder), "--corpus", corpus_dir, "--out", str(out), "--local"])
    assert r.exit_code == 2
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "--allow-pickle-weights" in lines[0], r.stderr
    assert not out.exists()
