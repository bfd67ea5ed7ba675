"""User errors through the real CLI: one line naming the problem, exit code 2, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def attnsim(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "attnsim.cli", *args], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=300)


def assert_user_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    error_lines = [l for l in lines if l.startswith("error:")]
    assert len(error_lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in error_lines[0], error_lines[0]
    assert "Traceback" not in result.stderr


def test_missing_corpus(tmp_path):
    out = tmp_path / "run"
    r = attnsim("run", "--corpus", str(tmp_path / "nope"), "--out", str(out), "--local")
    assert_user_error(r, "not found", "nope")
    assert not out.exists()


def test_unknown_model(tmp_path):
    out = tmp_path / "run"
    r = attnsim("run", "--model", "no-such-org/no-such-model", "--out", str(out), "--local")
    assert_user_error(r, "no-such-org/no-such-model", "could not be loaded")
    assert not out.exists()


def test_non_bert_model(tmp_path):
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_head=2, n_embd=8).save_pretrained(tmp_path / "gpt2")
    out = tmp_path / "run"
    r = attnsim("run", "--model", str(tmp_path / "gpt2"), "--out", str(out), "--local")
    assert_user_error(r, "not a BERT-family encoder", "gpt2")
    assert not out.exists()


def test_empty_corpus(tmp_path, tiny_bert):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "a.txt").write_text("   \n")
    (tmp_path / "c" / "b.txt").write_text("")
    out = tmp_path / "run"
    r = attnsim("run", "--model", tiny_bert, "--corpus", str(tmp_path / "c"), "--max-tokens", "64", "--out", str(out), "--local")
    assert_user_error(r, "no text")
    assert not out.exists()


def test_max_tokens_above_model_limit(tmp_path, tiny_bert, corpus_dir):
    out = tmp_path / "run"
    r = attnsim("run", "--model", tiny_bert, "--corpus", corpus_dir, "--max-tokens", "4096", "--out", str(out), "--local")
    assert_user_error(r, "--max-tokens 4096", "128")
    assert not out.exists()


def test_misspelt_config_key(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("max_tokns: 128\n")
    r = attnsim("run", "--config", str(cfg), "--out", str(tmp_path / "run"))
    assert_user_error(r, "max_tokns")


def test_info_on_missing_store(tmp_path):
    r = attnsim("info", str(tmp_path / "none.zarr"))
    assert_user_error(r, "no attnsim store")
