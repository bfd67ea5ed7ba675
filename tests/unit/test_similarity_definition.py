"""The one definition of S from head vectors: numpy and torch agree, cosine is a scaled dot product."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnsim.model.kernels import similarity
from attnsim.model.similarity import as_kind, similarity_matrix


@pytest.mark.parametrize("kind", ["dot", "cosine"])
def test_numpy_and_torch_give_the_same_s(kind):
    rng = np.random.default_rng(0)
    v = rng.normal(size=(2, 3, 7, 5)).astype(np.float32)  # (B, H, T, d)
    v[0, 0, 3] = 0.0  # a zero vector: cosine keeps it zero rather than NaN
    expected = np.einsum("bhtd,bhsd->bhts", v, v).astype(np.float64)  # independent: plain sums
    if kind == "cosine":
        norm = np.sqrt((v.astype(np.float64) ** 2).sum(-1))
        expected = expected / np.maximum(norm[..., :, None] * norm[..., None, :], 1e-24)
    np.testing.assert_allclose(similarity_matrix(v, kind), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(similarity_matrix(torch.from_numpy(v), kind).numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(similarity(torch.from_numpy(v), kind).numpy(), expected, rtol=1e-5, atol=1e-6)  # the kernel's GEMM
    assert np.isfinite(similarity_matrix(v, kind)).all()


def test_padding_stays_nan_and_unknown_kinds_are_refused():
    v = np.ones((4, 3), np.float32)
    v[2] = np.nan
    s = similarity_matrix(v, "cosine")
    assert np.isnan(s[2]).all() and np.isnan(s[:, 2]).all() and np.allclose(s[0, 1], 1.0)
    with pytest.raises(ValueError, match="unknown similarity kind 'l2'"):
        as_kind(v, "l2")
