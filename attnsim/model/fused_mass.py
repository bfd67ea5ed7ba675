"""`attention_mass` without a T x T tensor: one fused attention call per layer that returns its log-sum-exp.

The fused kernel (flash attention on the CPU, memory-efficient attention on CUDA) computes
out_i = sum_j p_ij v_j and lse_i without materialising p. With values v_j = [k_j | key categories of
j] (the categories of `kernels.key_categories`: [CLS], [SEP], punctuation, one column per sentence),
out_i holds every category's mass (sum_j p_ij c_j) and sum_j p_ij k_j, from which

    entropy_i = lse_i - scale q_i . (sum_j p_ij k_j)       (log p_ij = scale q_i . k_j - lse_i)
    p_ij = exp(scale q_i . k_j - lse_i)                     for j = i, i - 1, i + 1 (O(T d) dots)

The kernel wants one head size for Q, K and V, so Q and K are padded with zero columns to V's
width; one of those columns carries the padding mask (q: 1, k: -1e9 / scale on padding keys, 0 on
valid ones), so no mask tensor is needed. Keys are centred (the mean valid key of the window and
head subtracted): softmax does not change (a per-query constant), and the entropy's two terms, which
cancel, get smaller, and with them its rounding error.

Agreement with the T x T reference (`kernels.attention_mass`) is within agreement.py's tolerances
(mass 1e-6, entropy 1e-5), tested in tests/unit/test_fused_mass.py. Each query row is computed by
one thread with the same blocking whatever the batch: the same bits for any batch size and thread
count (tests/integration/test_determinism.py).
"""

from __future__ import annotations

import functools
import logging

import torch

from attnsim.model.agreement import ENTROPY_TOLERANCE, MASS_TOLERANCE
from attnsim.model.kernels import _MASKED, attention_mass, attention_scores, key_categories, own_sentence, query_means

log = logging.getLogger("attnsim")

# Q/K/V's padded head size is rounded up to this (CUDA's memory-efficient kernel wants aligned rows).
WIDTH_MULTIPLE = 8


def fused_available(device: torch.device) -> bool:
    """Whether this torch has the fused kernel with a log-sum-exp for `device`."""
    name = "_scaled_dot_product_efficient_attention" if device.type == "cuda" else "_scaled_dot_product_flash_attention_for_cpu"
    return device.type in ("cpu", "cuda") and hasattr(torch.ops.aten, name)


@functools.cache
def fused_works(device: torch.device) -> bool:
    """The fused kernel exists on `device` and agrees with the T x T reference on a small probe
    (3 windows of 2-3 sentences, padding, T = 45, within agreement.py's tolerances); once a process."""
    if not fused_available(device):
        return False
    g = torch.Generator().manual_seed(0)
    b, h, t, d = 3, 2, 45, 32
    q, k = (torch.randn(b, h, t, d, generator=g).mul_(3).to(device) for _ in range(2))
    valid = (torch.arange(t)[None] < torch.tensor([[t], [30], [17]])).to(device)
    special = torch.zeros(b, t, dtype=torch.bool, device=device)
    is_cls, is_sep = special.clone(), special.clone()
    is_cls[:, 0], is_sep[[0, 1, 2], [t - 1, 29, 16]] = True, True
    sentence = torch.where(valid & ~is_cls & ~is_sep, torch.arange(t, device=device)[None] // 12, -1)
    categories = (valid, is_cls, is_sep, special, sentence)
    try:
        fused = fused_attention_mass(q, k, *categories).double().cpu()
    except RuntimeError as e:  # the kernel refuses these shapes or dtypes on this device
        log.warning("fused attention mass unavailable on %s (%s); using the T x T reference", device, e)
        return False
    gap = (fused - attention_mass(attention_scores(q, k, valid), *categories).double().cpu()).abs()
    ok = bool(gap[..., :-1].max() <= MASS_TOLERANCE and gap[..., -1].max() <= ENTROPY_TOLERANCE)
    if not ok:
        log.warning("fused attention mass disagrees with the reference on %s (gap %.2e); using the reference", device, gap.max())
    return ok


def attend_with_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(scale q k^T) v and its log-sum-exp per query, (B, H, T, D) float32 -> (B, H, T, D), (B, H, T)."""
    if q.device.type == "cuda":
        out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, True, 0.0, False, scale=scale)[:2]
        return out, lse[..., : q.shape[-2]]  # its lse is padded along T
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False, scale=scale)


def fused_attention_mass(
    q: torch.Tensor,
    k: torch.Tensor,
    valid: torch.Tensor,
    is_cls: torch.Tensor,
    is_sep: torch.Tensor,
    is_punct: torch.Tensor,
    sentence: torch.Tensor,
    n_sentences: int | None = None,
) -> torch.Tensor:
    """`attention_scores` + `attention_mass` in one fused call: q, k (B, H, T, d) -> (B, H, C) float32.

    The other arguments as for `kernels.attention_mass`; MASS_CATEGORIES order."""
    b, h, t, d = q.shape
    scale = d**-0.5
    qf, kc = q.float(), centred_keys(k.float(), valid)
    bias = torch.zeros(valid.shape, dtype=torch.float32, device=q.device).masked_fill_(~valid, _MASKED)  # (B, T)
    near = near_scores(qf, kc, bias, scale)  # (B, H, T, 4): scale q_i . k_j + bias_j for j = i, i - 1, i + 1, 0
    shift = near.amax(-1)  # (B, H, T): near the row's largest score, so that the kernel's lse is near 0
    keys, sentence = key_categories(is_cls, is_sep, is_punct, sentence, n_sentences)  # (B, T, C0)
    c0 = keys.shape[-1]
    width = -(-(d + max(2, c0)) // WIDTH_MULTIPLE) * WIDTH_MULTIPLE
    zeros = torch.zeros(b, h, t, width - d - 2, dtype=torch.float32, device=q.device)
    ones = torch.ones(b, h, t, 1, dtype=torch.float32, device=q.device)
    mask = (bias / scale)[:, None, :, None].expand(b, h, t, 1)
    qp = torch.cat([qf, ones, -shift[..., None] / scale, zeros], -1)  # (B, H, T, width): scores minus the shift
    kp = torch.cat([kc, mask, ones, zeros], -1)
    vp = torch.cat([kc, keys[:, None].to(torch.float32).expand(b, h, t, c0), zeros.new_zeros(b, h, t, width - d - c0)], -1)
    out, lse = attend_with_lse(qp, kp, vp, scale)  # (B, H, T, width), lse of the shifted scores (B, H, T)
    sums = out[..., d : d + c0]  # (B, H, T, 3 + S)
    # entropy = lse - sum_j p_ij s_ij, with both terms shifted: lse' + shift - scale q_i . sum_j p_ij k_j
    entropy = (lse.double() + shift.double() - scale * (qf.double() * out[..., :d].double()).sum(-1)).float()
    p_near = torch.exp(near[..., :3] - shift[..., None] - lse[..., None])  # (B, H, T, 3): p_ii, p_i,i-1, p_i,i+1
    per_token = torch.cat([sums[..., :3], p_near, own_sentence(sums, sentence)[..., None], entropy[..., None]], dim=-1)
    return query_means(per_token, sentence >= 0)


def centred_keys(k: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """k (B, H, T, d) minus its mean over valid keys: the same softmax, smaller scores to cancel."""
    w = valid[:, None, :, None].to(k.dtype)  # (B, 1, T, 1)
    return k - (k * w).sum(2, keepdim=True) / w.sum(2, keepdim=True).clamp_min(1.0)


def near_scores(q: torch.Tensor, k: torch.Tensor, bias: torch.Tensor, scale: float) -> torch.Tensor:
    """scale q_i . k_j + bias_j for j = i, i - 1, i + 1 and 0 ([CLS]): (B, H, T, 4); -inf where j is off the window."""
    b, h, t, _ = q.shape
    off = torch.full((b, h, 1), float("-inf"), dtype=q.dtype, device=q.device)
    own = scale * (q * k).sum(-1) + bias[:, None]  # (B, H, T)
    prev = torch.cat([off, scale * (q[:, :, 1:] * k[:, :, :-1]).sum(-1) + bias[:, None, :-1]], -1)
    nxt = torch.cat([scale * (q[:, :, :-1] * k[:, :, 1:]).sum(-1) + bias[:, None, 1:], off], -1)
    first = scale * (q * k[:, :, :1]).sum(-1) + bias[:, None, :1]
    return torch.stack([own, prev, nxt, first], -1)
