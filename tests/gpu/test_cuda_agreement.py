"""The GPU path computes what the CPU path computes: same windows, same weights, CUDA vs CPU float32.

Runs only where torch sees a CUDA device (skipped on CI, which has none; run it on a GPU machine).
The model is `minilm`, or the folder in ATTNSIM_GPU_TEST_MODEL (a GPU machine without the package).
Tolerances, per model dtype on the GPU (the CPU reference is always float32):
  float32: head vectors rel. error <= 1e-4, S values (stored float16) <= 2e-3 of the row's scale,
           attention mass <= 1e-4 absolute (entropy <= 1e-3);
  float16: head vectors rel. error <= 2e-2, S values <= 3e-2 of the row's scale, mass <= 1e-2 (entropy 5e-2);
  bfloat16 (3 fewer mantissa bits): 5e-2, 0.15, 2e-2, 0.1.
The half-precision bounds are about 2x what bfloat16 on the CPU measured against float32 there,
scaled by 1/8 for float16 (vectors 9.7e-3, S 0.108 at most, mass 6e-3, entropy 2.0e-2).
A top-k neighbour may differ from the CPU's only at a near tie: the CPU's S at the GPU's neighbour
must be within the S tolerance of the CPU's value at that rank.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from helpers import DOCS

from attnsim.extract.compute import UnitComputer
from attnsim.model.loading import load_model
from attnsim.prepare.stage import token_classes
from attnsim.store.meta import MASS_CATEGORIES

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

MODEL = os.environ.get("ATTNSIM_GPU_TEST_MODEL", "minilm")
TOLERANCE = {  # dtype -> (vectors rel., S of row scale, mass abs., entropy abs.)
    "float32": (1e-4, 2e-3, 1e-4, 1e-3),
    "float16": (2e-2, 3e-2, 1e-2, 5e-2),
    "bfloat16": (5e-2, 0.15, 2e-2, 0.1),
}
AGREEMENT = {"float32": 0.99, "float16": 0.9, "bfloat16": 0.85}  # top-k indices equal to the CPU's


def windows(tokenizer, n: int = 24):
    """(input_ids, sentence_id, length) of n windows of varied lengths, -1 padded (no pysbd needed)."""
    texts = [" ".join(DOCS[i % len(DOCS)] for i in range(j % 7 + 1)) for j in range(n)]
    encoded = [tokenizer(t, truncation=True, max_length=128)["input_ids"] for t in texts]
    t = max(map(len, encoded))
    ids = np.full((n, t), -1, np.int32)
    sent = np.full((n, t), -1, np.int32)
    for row, e in enumerate(encoded):
        ids[row, : len(e)] = e
        sent[row, 1 : len(e) - 1] = np.arange(len(e) - 2) // 20  # 20-token "sentences": exercises same_sentence
    return ids, sent, np.array([len(e) for e in encoded], np.int32)


def compute(device: str, dtype: str, ids, sent, length) -> dict:
    loaded = load_model(MODEL, device=device, dtype=dtype)
    computer = UnitComputer(loaded, kind="dot", k=8, tiers=("default", "vectors", "dense"), token_classes=token_classes(loaded.tokenizer), batch_size=8)
    return computer.compute(ids, sent, length)


@pytest.fixture(scope="module")
def reference():
    loaded_cpu = load_model(MODEL)
    data = windows(loaded_cpu.tokenizer)
    return data, compute("cpu", "float32", *data)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_cuda_matches_cpu(reference, dtype):
    data, cpu = reference
    gpu = compute("cuda", dtype, *data)
    tol_vec, tol_s, tol_mass, tol_entropy = TOLERANCE[dtype]

    valid = ~np.isnan(cpu["head_vectors"])
    assert np.array_equal(valid, ~np.isnan(gpu["head_vectors"]))  # the same padding everywhere
    a, b = cpu["head_vectors"][valid].astype(np.float64), gpu["head_vectors"][valid].astype(np.float64)
    assert np.linalg.norm(a - b) / np.linalg.norm(a) <= tol_vec

    # Top-k: same missing neighbours; values equal within tolerance of the row's largest |S|.
    assert np.array_equal(cpu["topk_index"] < 0, gpu["topk_index"] < 0)
    dense = cpu["similarity"].astype(np.float32)  # (W, L, H, T, T)
    scale = np.where(np.isnan(dense), 0, np.abs(dense)).max(-1, keepdims=True)  # (W, L, H, T, 1)
    have = cpu["topk_index"] >= 0
    value_gap = np.abs(cpu["topk_value"].astype(np.float32) - gpu["topk_value"].astype(np.float32))
    assert np.all(value_gap[have] <= tol_s * np.broadcast_to(scale, value_gap.shape)[have])
    # A neighbour the GPU picked differently is a near tie: the CPU's own S there is as large.
    picked = np.take_along_axis(dense, np.where(have, gpu["topk_index"], 0).astype(np.int64), axis=-1)
    tie_gap = cpu["topk_value"].astype(np.float32) - picked
    assert np.all(tie_gap[have] <= 2 * tol_s * np.broadcast_to(scale, tie_gap.shape)[have])
    agree = (cpu["topk_index"] == gpu["topk_index"])[have].mean()
    assert agree >= AGREEMENT[dtype]

    entropy = MASS_CATEGORIES.index("entropy")
    mass_gap = np.abs(cpu["attention_mass"] - gpu["attention_mass"])
    assert np.nanmax(np.delete(mass_gap, entropy, axis=-1)) <= tol_mass
    assert np.nanmax(mass_gap[..., entropy]) <= tol_entropy
    print(f"{dtype}: top-k index agreement {agree:.4f}, max mass gap {np.nanmax(mass_gap):.2e}")
