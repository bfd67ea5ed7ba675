"""The one definition of S from head vectors, for torch tensors (extraction, segmentation) and numpy
arrays (the dataset API, the reduce's quantile mode) alike; no torch import here.

S[i, j] = u_i . u_j with u = v for `dot` (the paper's scalar product) and u = v / max(|v|, 1e-12)
for `cosine` (torch's `normalize`: a zero vector stays zero, NaN padding stays NaN).

Example::

    s = similarity_matrix(vectors, "cosine")  # (..., T, d) -> (..., T, T)
"""

from __future__ import annotations

import numpy as np

KINDS = ("dot", "cosine")
EPS = 1e-12


def as_kind(v, kind: str):
    """The vectors whose scalar products are S of this kind: v itself, or v scaled to unit length."""
    if kind == "dot":
        return v
    if kind != "cosine":
        raise ValueError(f"unknown similarity kind {kind!r}; use one of {', '.join(KINDS)}")
    if isinstance(v, np.ndarray):
        return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), EPS)
    import torch

    return torch.nn.functional.normalize(v, dim=-1, eps=EPS)


def similarity_matrix(v, kind: str):
    """S over the last two axes: (..., T, d) -> (..., T, T), numpy or torch as given."""
    u = as_kind(v, kind)
    return u @ (np.swapaxes(u, -1, -2) if isinstance(u, np.ndarray) else u.transpose(-1, -2))
