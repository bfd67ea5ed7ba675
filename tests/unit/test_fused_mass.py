"""The fused attention mass (one fused attention call, no T x T tensor) against the T x T reference.

Tolerances are agreement.py's, those two environments' computations must keep: 1e-6 for the
probability categories, 1e-5 (nats) for the entropy. Inputs: padding, several sentences a window,
windows of different lengths in one batch, T not a multiple of the kernel's blocks, scores as large
as a trained model's (|q . k| / sqrt(d) up to about 30), real queries and keys of minilm on real text.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import DOCS

from attnsim.extract.compute import UnitComputer, mass_kernel
from attnsim.model.agreement import ENTROPY_TOLERANCE, MASS_TOLERANCE
from attnsim.model.fused_mass import fused_attention_mass, fused_available, fused_works
from attnsim.model.kernels import attention_mass, attention_scores, split_heads
from attnsim.model.loading import load_model
from attnsim.model.taps import head_taps
from attnsim.prepare.stage import token_classes

pytestmark = pytest.mark.skipif(not fused_available(torch.device("cpu")), reason="this torch has no fused CPU attention with lse")

SHAPES = [(1, 1, 5, 8), (3, 4, 37, 32), (4, 12, 173, 64), (2, 6, 257, 32), (5, 2, 65, 16), (2, 2, 600, 32)]


def windows(b: int, t: int, seed: int = 0):
    """valid, is_cls, is_sep, is_punct, sentence (B, T): windows of lengths t/2..t, 1-4 sentences each."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(max(t // 2, 3), t + 1, (b,), generator=g)
    lengths[0] = t
    valid = torch.arange(t)[None] < lengths[:, None]
    is_cls = torch.zeros(b, t, dtype=torch.bool)
    is_cls[:, 0] = True
    is_sep = torch.zeros_like(is_cls)
    is_sep[torch.arange(b), lengths - 1] = True
    is_punct = (torch.rand(b, t, generator=g) < 0.1) & valid & ~is_cls & ~is_sep
    sentence = torch.full((b, t), -1, dtype=torch.int64)
    for row, n in enumerate(lengths.tolist()):
        per = max((n - 2) // int(torch.randint(1, 5, (1,), generator=g)), 1)
        sentence[row, 1 : n - 1] = torch.arange(n - 2) // per + 7 * row  # ids need not start at 0
    return valid, is_cls, is_sep, is_punct, sentence


def assert_agrees(q, k, categories):
    valid = categories[0]
    reference = attention_mass(attention_scores(q, k, valid), *categories).double()
    fused = fused_attention_mass(q, k, *categories).double()
    gap = (reference - fused).abs()
    assert gap[..., :-1].max() <= MASS_TOLERANCE, f"mass gap {gap[..., :-1].max():.2e}"
    assert gap[..., -1].max() <= ENTROPY_TOLERANCE, f"entropy gap {gap[..., -1].max():.2e}"
    return fused


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("spread", [1.0, 4.0])
def test_fused_mass_agrees_with_the_reference_on_random_inputs(shape, spread):
    b, h, t, d = shape
    g = torch.Generator().manual_seed(t * d)
    q = torch.randn(b, h, t, d, generator=g) * spread
    k = torch.randn(b, h, t, d, generator=g) * spread + spread  # keys with a shared component, as trained ones
    assert_agrees(q, k, windows(b, t))


def test_fused_mass_has_the_same_bits_for_any_batch_and_thread_count():
    b, h, t, d = 6, 4, 96, 32
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(b, h, t, d, generator=g) * 3, torch.randn(b, h, t, d, generator=g) * 3
    categories = windows(b, t)
    before = torch.get_num_threads()
    try:
        whole = fused_attention_mass(q, k, *categories, n_sentences=8)
        for threads in (1, 2, 4):
            torch.set_num_threads(threads)
            for size in (1, 4):
                parts = [
                    fused_attention_mass(q[i : i + size], k[i : i + size], *(c[i : i + size] for c in categories), n_sentences=8) for i in range(0, b, size)
                ]
                assert torch.equal(torch.cat(parts), whole), (threads, size)
    finally:
        torch.set_num_threads(before)


def test_fused_mass_agrees_on_minilm_queries_and_keys():
    loaded = load_model("minilm")
    classes = token_classes(loaded.tokenizer)
    computer = UnitComputer(loaded, kind="dot", k=8, tiers=("default",), token_classes=classes, batch_size=8)
    encoded = [loaded.tokenizer(" ".join(DOCS[: j + 1]), truncation=True, max_length=160)["input_ids"] for j in range(5)]
    t = max(map(len, encoded))
    ids = np.full((len(encoded), t), -1, np.int64)
    sentence = np.full((len(encoded), t), -1, np.int64)
    for row, e in enumerate(encoded):
        ids[row, : len(e)] = e
        sentence[row, 1 : len(e) - 1] = np.arange(len(e) - 2) // 17
    captured = []
    for rows, batch, valid in computer.batches(ids, np.array([len(e) for e in encoded])):
        tb = batch.shape[1]
        cats = (valid, batch.eq(computer.cls) & valid, batch.eq(computer.sep) & valid, computer.punct_table[batch] & valid)
        cats += (torch.from_numpy(sentence[rows, :tb]),)
        with torch.inference_mode(), head_taps(loaded, lambda taps: captured.append((taps.q, taps.k, cats)), points=("q", "k", "z")):
            loaded.model(input_ids=batch, attention_mask=valid.long())
    assert len(captured) >= 2 * loaded.n_layers, "windows of several padded lengths"
    for q, k, cats in captured:
        assert_agrees(split_heads(q, loaded.n_heads), split_heads(k, loaded.n_heads), cats)


def test_the_cpu_keeps_the_reference_and_the_probe_passes_on_it():
    """The CPU measured no faster fused (benchmarks/RESULTS.md): its stored bytes stay the reference's.
    The probe that guards CUDA's fused path passes on the CPU's kernel."""
    assert mass_kernel(torch.device("cpu")) == "reference"
    assert fused_works(torch.device("cpu"))
