"""The same bytes whatever the threads and the batch size; the documented tolerances where the model's
own arithmetic differs (another attention kernel, another padded length: as another library would)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr
from helpers import make_tiny_model

import attnsim.extract.compute as extract
from attnsim.config import RunConfig
from attnsim.extract.compute import UnitComputer
from attnsim.model.agreement import disagreements
from attnsim.model.loading import load_model
from attnsim.pipeline import stage_prepare

TIERS = ["default", "vectors", "dense"]


@pytest.fixture(scope="module", params=["tiny", "minilm"])
def unit(request, corpus_dir, tmp_path_factory):
    """(model name, store attributes, the windows of a prepared store): a 4-layer random BERT on
    32-token windows, and minilm on 64-token windows."""
    if request.param == "tiny":
        name, width = make_tiny_model(tmp_path_factory.mktemp("tiny4"), layers=4, hidden=32), 32
    else:
        name, width = "minilm", 64
    cfg = RunConfig(model=name, corpus=corpus_dir, out=str(tmp_path_factory.mktemp("store")), max_tokens=width, tiers=TIERS)
    stage_prepare(cfg, use_ray=False)
    root = zarr.open_group(cfg.store_url, mode="r")
    windows = tuple(root[n][:] for n in ("input_ids", "sentence_id", "length"))
    assert len(np.unique(windows[2])) > 3, "windows of several lengths, so batches mix lengths"
    return name, dict(root.attrs), windows


def compute(loaded, attrs, windows, batch_size: int) -> dict[str, np.ndarray]:
    computer = UnitComputer(
        loaded,
        kind=attrs["similarity_kind"],
        k=attrs["k"],
        tiers=attrs["tiers"],
        token_classes=attrs["tokenizer"]["token_classes"],
        batch_size=batch_size,
    )
    return computer.compute(*windows)


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def test_bytes_identical_for_any_threads_and_batch_size(unit, threads):
    name, attrs, windows = unit
    loaded = load_model(name)
    reference = None
    for n_threads in (1, 2, 4):
        threads(n_threads)
        for batch_size in (1, 3, 8):
            arrays = compute(loaded, attrs, windows, batch_size)
            assert sorted(arrays) == ["attention_mass", "head_vectors", "similarity", "topk_index", "topk_value"]
            if reference is None:
                reference = arrays
                continue
            for array, data in arrays.items():
                assert data.tobytes() == reference[array].tobytes(), f"{array} differs at {n_threads} threads, batch {batch_size}"


def test_other_arithmetic_stays_within_the_documented_tolerances(unit, monkeypatch):
    """Eager attention instead of SDPA, and every window padded to the full width: other kernels
    and shapes, so other rounding, as on another device or library version."""
    name, attrs, windows = unit
    loaded = load_model(name)
    base = compute(loaded, attrs, windows, 8)
    eager = load_model(name)
    eager.model.set_attn_implementation("eager")
    other = compute(eager, attrs, windows, 8)
    assert disagreements(base, other) == []
    assert any(not np.array_equal(base[n], other[n], equal_nan=True) for n in base), "the arithmetic did differ"
    monkeypatch.setattr(extract, "PAD_MULTIPLE", 10_000)
    assert disagreements(base, compute(loaded, attrs, windows, 8)) == []


def test_tolerances_catch_real_differences(unit):
    """The check fails on what is not rounding: a far neighbour, a mass off by 1e-5, a changed value."""
    name, attrs, windows = unit
    base = compute(load_model(name), attrs, windows, 8)
    swapped = {**base, "topk_index": base["topk_index"].copy()}
    row = np.argwhere((base["topk_index"][..., -1] >= 0) & (base["topk_index"][..., 0] >= 0))[0]
    w, l, h, i = row
    real = np.flatnonzero(windows[0][w] >= 0)
    far = [j for j in real if j != i and j not in base["topk_index"][w, l, h, i]]
    swapped["topk_index"][w, l, h, i, 0] = far[0]  # the best neighbour replaced by one outside the top k
    assert any("topk_index" in p for p in disagreements(base, swapped))
    mass = {**base, "attention_mass": base["attention_mass"] + np.float32(1e-5)}
    assert any(p.startswith("attention_mass:") for p in disagreements(base, mass))
    value = {**base, "topk_value": base["topk_value"].copy()}
    value["topk_value"][w, l, h, i, 0] *= np.float16(1.01)
    assert any("topk_value" in p for p in disagreements(base, value))
