"""CUDA's fused S + top-k (model/fused_topk.py, a compiled Triton kernel) against the reference on the
same device, at minilm's and BERT-base's head sizes and up to 512 tokens; the same bits for any batch
size; and the GPU's extraction takes that path.

Runs only where torch sees a CUDA device and Triton is installed (skipped on CI; run on a GPU machine).
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from attnsim.extract.compute import topk_kernel  # noqa: E402
from attnsim.model.fused_topk import fused_similarity_topk, fused_topk_works, reference_similarity_topk  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CUDA = torch.device("cuda")


def batch(b: int, h: int, t: int, d: int, dtype=torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(b, h, t, d, generator=g).to(CUDA, dtype)
    lengths = torch.tensor([t - 7 * i for i in range(b)]).clamp(min=1)
    return v, (torch.arange(t)[None] < lengths[:, None]).to(CUDA)


@pytest.mark.parametrize("kind", ["dot", "cosine"])
@pytest.mark.parametrize("t, d", [(17, 32), (100, 32), (256, 32), (256, 64), (512, 64)])
def test_cuda_fused_topk_agrees_with_the_reference(t, d, kind):
    v, valid = batch(4, 12, t, d, seed=t + d)
    index, value = fused_similarity_topk(v, valid, 8, kind)
    ref_index, ref_value = reference_similarity_topk(v, valid, 8, kind)
    torch.testing.assert_close(value, ref_value, rtol=1e-5, atol=1e-5, equal_nan=True)
    # the same neighbours, except swaps of values within float32 rounding of each other
    differ = (index != ref_index).float().mean().item()
    assert differ < 1e-4, f"{differ:.2e} of neighbour slots differ"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cuda_fused_topk_has_the_same_bits_for_any_batch(dtype):
    v, valid = batch(6, 12, 192, 64, dtype=dtype, seed=1)
    whole = fused_similarity_topk(v, valid, 8)
    for size in (1, 4):
        parts = [fused_similarity_topk(v[i : i + size], valid[i : i + size], 8) for i in range(0, 6, size)]
        assert torch.equal(torch.cat([p[0] for p in parts]), whole[0]), size
        assert torch.equal(torch.cat([p[1] for p in parts]).nan_to_num(), whole[1].nan_to_num()), size


def test_the_gpu_takes_the_fused_topk_path():
    assert fused_topk_works(CUDA)
    assert topk_kernel(CUDA) == "fused"
