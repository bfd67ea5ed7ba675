"""CUDA's fused attention mass (memory-efficient attention with its log-sum-exp, no T x T tensor)
against the T x T reference on the same device, within agreement.py's tolerances (mass 1e-6,
entropy 1e-5), with the same bits for any batch size; and the GPU's extraction takes that path.

Runs only where torch sees a CUDA device (skipped on CI, which has none; run it on a GPU machine).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from attnsim.extract.compute import mass_kernel
from attnsim.model.agreement import ENTROPY_TOLERANCE, MASS_TOLERANCE
from attnsim.model.fused_mass import fused_attention_mass, fused_works
from attnsim.model.kernels import attention_mass, attention_scores

sys.path.insert(0, str(Path(__file__).parents[1] / "unit"))  # the CPU test's inputs
from test_fused_mass import SHAPES, windows  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CUDA = torch.device("cuda")


@pytest.mark.parametrize("shape", SHAPES)
def test_cuda_fused_mass_agrees_with_the_reference(shape):
    b, h, t, d = shape
    g = torch.Generator().manual_seed(t * d)
    q = (torch.randn(b, h, t, d, generator=g) * 3).to(CUDA)
    k = (torch.randn(b, h, t, d, generator=g) * 3 + 3).to(CUDA)
    categories = tuple(c.to(CUDA) for c in windows(b, t))
    reference = attention_mass(attention_scores(q, k, categories[0]), *categories).double()
    gap = (reference - fused_attention_mass(q, k, *categories).double()).abs().cpu()
    assert gap[..., :-1].max() <= MASS_TOLERANCE, f"mass gap {gap[..., :-1].max():.2e}"
    assert gap[..., -1].max() <= ENTROPY_TOLERANCE, f"entropy gap {gap[..., -1].max():.2e}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_fused_mass_has_the_same_bits_for_any_batch(dtype):
    b, h, t, d = 6, 4, 160, 64
    g = torch.Generator().manual_seed(1)
    q, k = ((torch.randn(b, h, t, d, generator=g) * 3).to(CUDA, dtype) for _ in range(2))
    categories = tuple(c.to(CUDA) for c in windows(b, t))
    whole = fused_attention_mass(q, k, *categories, n_sentences=8)
    for size in (1, 4):
        rows = [slice(i, i + size) for i in range(0, b, size)]
        parts = [fused_attention_mass(q[r], k[r], *(c[r] for c in categories), n_sentences=8) for r in rows]
        assert torch.equal(torch.cat(parts), whole), size


def test_the_gpu_takes_the_fused_path():
    assert fused_works(CUDA)
    assert mass_kernel(CUDA) == "fused"
