"""The fused S + top-k kernel (model/fused_topk.py) against the reference, in Triton's interpreter.

On a machine without CUDA, Triton runs the kernel's body with numpy (conftest.py sets TRITON_INTERPRET=1
before anything imports Triton; on a GPU the compiled kernel is tested); its `tl.dot` is
a float32 matmul in another order than torch's GEMM, so values are compared within 1e-5 relative
(float32 rounding of dots of ~30 terms) and indices exactly on random vectors (no near ties at that
precision in these draws). Exact ties (integer vectors) are checked against an independent numpy
ranking: descending S, then the lower index.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("triton")

from attnsim.extract.compute import UnitComputer, topk_kernel  # noqa: E402
from attnsim.model import fused_topk  # noqa: E402
from attnsim.model.agreement import disagreements  # noqa: E402
from attnsim.model.fused_topk import MAX_TOKENS, fused_similarity_topk, fused_topk_works, reference_similarity_topk  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # compiled on a GPU, else interpreted


def padded_batch(lengths: list[int], t: int, h: int, d: int, seed: int, integers: bool = False):
    g = torch.Generator().manual_seed(seed)
    v = torch.randint(-1, 2, (len(lengths), h, t, d), generator=g).float() if integers else torch.randn(len(lengths), h, t, d, generator=g)
    valid = torch.arange(t)[None] < torch.tensor(lengths)[:, None]
    return v.to(DEVICE), valid.to(DEVICE)


def assert_same_neighbours(index: torch.Tensor, ref_index: torch.Tensor) -> None:
    """Identical here (the interpreter's float32 matmul and torch's agree on these draws); on a GPU,
    cuBLAS and the kernel sum in different orders, so a rare swap of two values within float32
    rounding of each other is allowed (tests/gpu/test_fused_topk_cuda.py bounds it too)."""
    if DEVICE.type == "cpu":
        assert torch.equal(index, ref_index)
    else:
        assert (index != ref_index).float().mean().item() < 1e-3


@pytest.mark.parametrize("kind", ["dot", "cosine"])
@pytest.mark.parametrize("t", [1, 2, 8, 9, 16, 17, 33, 100, 257])
def test_same_neighbours_as_the_reference(t, kind):
    lengths = sorted({t, max(1, t - 5), min(t, 6), 0})[::-1]  # full, padded, shorter than k + 1, empty
    v, valid = padded_batch(lengths, t, h=2, d=24, seed=t)
    index, value = fused_similarity_topk(v, valid, 8, kind)
    ref_index, ref_value = reference_similarity_topk(v, valid, 8, kind)
    assert index.shape == ref_index.shape == (len(lengths), 2, t, 8) and index.dtype == torch.int64
    assert_same_neighbours(index, ref_index)
    assert torch.equal(value.isnan(), ref_value.isnan())
    torch.testing.assert_close(value, ref_value, rtol=1e-5, atol=1e-6, equal_nan=True)


def test_exact_ties_take_the_lower_index():
    t, k = 40, 8
    v, valid = padded_batch([40, 31], t, h=3, d=4, seed=7, integers=True)  # S: small integers, many ties
    index, value = fused_similarity_topk(v, valid, k)
    s = torch.einsum("bhid,bhjd->bhij", v, v).cpu().numpy().astype(np.float64)
    index, value = index.cpu(), value.cpu()
    for b, n in enumerate([40, 31]):
        for h in range(3):
            for i in range(t):
                if i >= n:
                    assert (index[b, h, i] == -1).all() and value[b, h, i].isnan().all()
                    continue
                others = [j for j in range(n) if j != i]
                ranked = sorted(others, key=lambda j: (-s[b, h, i, j], j))[:k]
                assert index[b, h, i].tolist() == ranked
                assert value[b, h, i].tolist() == [s[b, h, i, j] for j in ranked]


def test_half_precision_vectors_are_ranked_in_float32():
    v, valid = padded_batch([50, 20], 50, h=2, d=32, seed=3)
    half = v.half()
    index, value = fused_similarity_topk(half, valid, 8)
    ref_index, ref_value = reference_similarity_topk(half, valid, 8)  # the reference upcasts too
    assert_same_neighbours(index, ref_index)
    torch.testing.assert_close(value, ref_value, rtol=1e-5, atol=1e-6, equal_nan=True)


def test_too_long_windows_are_refused_in_one_line():
    v, valid = padded_batch([MAX_TOKENS + 1], MAX_TOKENS + 1, h=1, d=16, seed=0)
    with pytest.raises(ValueError, match=f"at most {MAX_TOKENS} tokens"):
        fused_similarity_topk(v, valid, 8)


def test_probe_passes_and_the_cpu_keeps_the_reference():
    fused_topk.fused_topk_works.cache_clear()
    try:
        assert fused_topk_works(DEVICE)  # it runs (interpreted without a GPU) and agrees
    finally:
        fused_topk.fused_topk_works.cache_clear()
    assert topk_kernel(torch.device("cpu")) == "reference"  # the CPU's bytes do not depend on Triton


def test_windows_longer_than_one_tile_keep_the_reference(caplog):
    assert not fused_topk_works(DEVICE, max_tokens=MAX_TOKENS + 1)
    assert f"at most {MAX_TOKENS} tokens" in caplog.text


def test_unit_arrays_agree_with_the_reference_path(tiny_bert):
    from attnsim.model.loading import load_model
    from attnsim.prepare.stage import token_classes

    loaded = load_model(tiny_bert, device=DEVICE)
    texts = ["The cat sat on the mat. The cat slept.", "Dogs bark at night, and the dogs run. Then they rest!", "Short one."]
    encoded = [loaded.tokenizer(x)["input_ids"] for x in texts]
    t = max(map(len, encoded))
    ids = np.full((len(texts), t), -1, np.int64)
    sentence = np.full((len(texts), t), -1, np.int64)
    for w, e in enumerate(encoded):
        ids[w, : len(e)] = e
        sentence[w, 1 : len(e) - 1] = 0
    length = np.array([len(e) for e in encoded])
    computer = UnitComputer(loaded, kind="dot", k=4, tiers=("default",), token_classes=token_classes(loaded.tokenizer), batch_size=2)
    reference = computer.compute(ids, sentence, length)
    computer.topk_kernel = "fused"
    fused = computer.compute(ids, sentence, length)
    assert not disagreements(reference, fused)
    assert (fused["topk_index"][0, :, :, : length[0]] >= 0).all()  # every real token of a long window has 4 neighbours
