"""Shared fixtures: tiny random models built from configs, small corpora, one Ray session per module."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
if not torch.cuda.is_available():
    # Triton (a test extra) reads this when imported: without a GPU its kernels run in its numpy
    # interpreter, which is how tests/unit/test_fused_topk.py checks model/fused_topk.py here.
    os.environ.setdefault("TRITON_INTERPRET", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from helpers import make_corpus, make_tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    """A 2-layer, 4-head random BERT with minilm's WordPiece tokenizer, saved as safetensors."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> str:
    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray session per test module (token authentication stays on)."""
    import ray

    # address="local": always a new cluster, never one another process left in /tmp/ray
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 1024**2)
    yield ray
    ray.shutdown()
