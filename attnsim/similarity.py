"""Device-agnostic tensor kernels: context similarity, top-k neighbours, attention mass.

Axis names follow the store: B = window (in a batch), H = head, T = token, J = other token, d = dim.
Every kernel accumulates in float32 whatever the model's dtype, and works on CPU or GPU tensors.
"""

from __future__ import annotations

import torch

# Order of the attention-mass categories; also written to the store's attributes.
MASS_CATEGORIES = ("cls", "sep", "punct", "self", "prev", "next", "same_sentence", "entropy")


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(B, T, H*d) -> (B, H, T, d)."""
    b, t, hd = x.shape
    return x.view(b, t, n_heads, hd // n_heads).transpose(1, 2)  # (B, H, T, d)


def similarity(v: torch.Tensor, kind: str = "dot") -> torch.Tensor:
    """S[b, h, i, j] = v_i . v_j (or the cosine); v is (B, H, T, d), S is float32 (B, H, T, T)."""
    v = v.float()
    if kind == "cosine":
        v = torch.nn.functional.normalize(v, dim=-1)
    elif kind != "dot":
        raise ValueError(f"unknown similarity kind {kind!r}")
    return v @ v.transpose(-1, -2)  # (B, H, T, T)


def topk_neighbours(s: torch.Tensor, valid: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For each valid token i, the k tokens j != i, j valid, of largest S[i, j], descending.

    s: (B, H, T, T) float32; valid: (B, T) bool (False = padding).
    Returns index (B, H, T, k) int64 with -1 where there is no neighbour, value float32 with NaN there.
    """
    b, h, t, _ = s.shape
    kk = min(k, t)
    allowed = valid[:, None, None, :] & ~torch.eye(t, dtype=torch.bool, device=s.device)  # (B, 1, T, J)
    masked = s.masked_fill(~allowed, float("-inf"))
    value, index = torch.topk(masked, kk, dim=-1, sorted=True)  # (B, H, T, kk)
    missing = torch.isinf(value) | ~valid[:, None, :, None]
    index = index.masked_fill(missing, -1)
    value = value.masked_fill(missing, float("nan"))
    if kk < k:  # windows shorter than k + 1 tokens: pad the k axis
        pad = (0, k - kk)
        index = torch.nn.functional.pad(index, pad, value=-1)
        value = torch.nn.functional.pad(value, pad, value=float("nan"))
    return index, value


def attention_probs(q: torch.Tensor, k: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d) + mask) over keys, recomputed in float32; q, k are (B, H, T, d)."""
    scores = (q.float() @ k.float().transpose(-1, -2)) * q.shape[-1] ** -0.5  # (B, H, T, J)
    scores = scores.masked_fill(~valid[:, None, None, :], float("-inf"))
    return torch.softmax(scores, dim=-1)


def attention_mass(
    p: torch.Tensor,
    valid: torch.Tensor,
    is_cls: torch.Tensor,
    is_sep: torch.Tensor,
    is_punct: torch.Tensor,
    sentence: torch.Tensor,
) -> torch.Tensor:
    """Mean over valid query tokens of the attention mass per category (Clark et al. 2019).

    p: (B, H, T, J) probabilities; valid, is_cls, is_sep, is_punct: (B, T) bool; sentence: (B, T)
    int (-1 = special/padding). Returns (B, H, C) float32 in the order of MASS_CATEGORIES.
    """
    t = p.shape[-1]
    f = lambda m: m.to(p.dtype)  # noqa: E731 - bool -> float mask
    cls = p @ f(is_cls)[:, None, :, None]  # (B, H, T, 1)
    sep = p @ f(is_sep)[:, None, :, None]
    punct = p @ f(is_punct)[:, None, :, None]
    diag = torch.diagonal(p, 0, -2, -1)  # (B, H, T)
    prev = torch.nn.functional.pad(torch.diagonal(p, -1, -2, -1), (1, 0))  # p[i, i-1], 0 at i = 0
    nxt = torch.nn.functional.pad(torch.diagonal(p, 1, -2, -1), (0, 1))  # p[i, i+1], 0 at the end
    same = (sentence[:, :, None] == sentence[:, None, :]) & (sentence[:, :, None] >= 0)  # (B, T, J)
    same_sentence = (p * f(same)[:, None]).sum(-1)
    entropy = -(p * torch.log(p.clamp_min(1e-30))).sum(-1)
    per_token = torch.stack(
        [cls[..., 0], sep[..., 0], punct[..., 0], diag, prev, nxt, same_sentence, entropy], dim=-1
    )  # (B, H, T, C)
    w = f(valid)[:, None, :, None]  # (B, 1, T, 1)
    assert per_token.shape[2] == t
    return (per_token * w).sum(2) / w.sum(2).clamp_min(1.0)  # (B, H, C)
