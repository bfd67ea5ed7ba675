"""Device-agnostic tensor kernels: context similarity, top-k neighbours, attention mass.

Axis names follow the store: B = window (in a batch), H = head, T = token, J = other token, d = dim.
Every kernel accumulates in float32 whatever the model's dtype, and works on CPU or GPU tensors.
"""

from __future__ import annotations

import numpy as np
import torch

from attnsim.model.similarity import as_kind


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(B, T, H*d) -> (B, H, T, d)."""
    b, t, hd = x.shape
    return x.view(b, t, n_heads, hd // n_heads).transpose(1, 2)  # (B, H, T, d)


def similarity(v: torch.Tensor, kind: str = "dot", key_bias: torch.Tensor | None = None) -> torch.Tensor:
    """S[b, h, i, j] = v_i . v_j (or the cosine); v is (B, H, T, d), S is float32 (B, H, T, T).

    key_bias (B, T), if given, is added to every row inside the matmul (e.g. -inf on padding keys),
    which saves a separate pass over the T x T result.
    """
    v = as_kind(v.float(), kind)
    return _bmm_t(v, v, key_bias)


def _bmm_t(a: torch.Tensor, b: torch.Tensor, key_bias: torch.Tensor | None, alpha: float = 1.0) -> torch.Tensor:
    """alpha * a @ b^T (+ key_bias per key) for (B, H, T, d) inputs, as one batched GEMM."""
    bsz, h, t, d = a.shape
    a3, b3 = a.reshape(bsz * h, t, d), b.reshape(bsz * h, t, d)
    if key_bias is None:
        out = torch.bmm(a3, b3.transpose(1, 2))
        if alpha != 1.0:
            out.mul_(alpha)
    else:
        bias = key_bias[:, None, None, :].expand(bsz, h, 1, t).reshape(bsz * h, 1, t)
        out = torch.baddbmm(bias, a3, b3.transpose(1, 2), alpha=alpha)
    return out.view(bsz, h, t, t)  # (B, H, T, J)


def key_bias(valid: torch.Tensor, masked: float) -> torch.Tensor:
    """(B, T) float32: 0 on valid keys, `masked` on padding."""
    return torch.zeros(valid.shape, dtype=torch.float32, device=valid.device).masked_fill_(~valid, masked)


def topk_neighbours(s: torch.Tensor, valid: torch.Tensor, k: int, already_masked: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """For each valid token i, the k tokens j != i, j valid, of largest S[i, j], descending.

    s: (B, H, T, T) float32, overwritten (self and padding set to -inf: no copy of a T x T tensor);
    valid: (B, T) bool (False = padding); already_masked: padding keys of s are -inf already.
    Returns index (B, H, T, k) int64 with -1 where there is no neighbour, value float32 with NaN there.
    """
    b, h, t, _ = s.shape
    kk = min(k, t)
    if not already_masked:
        s.masked_fill_(~valid[:, None, None, :], float("-inf"))
    s.diagonal(0, -2, -1).fill_(float("-inf"))
    value, index = row_topk(s, kk)  # (B, H, T, kk)
    missing = torch.isinf(value) | ~valid[:, None, :, None]
    index = index.masked_fill(missing, -1)
    value = value.masked_fill(missing, float("nan"))
    if kk < k:  # windows shorter than k + 1 tokens: pad the k axis
        pad = (0, k - kk)
        index = torch.nn.functional.pad(index, pad, value=-1)
        value = torch.nn.functional.pad(value, pad, value=float("nan"))
    return index, value


# Columns per group in `row_topk`'s first pass (measured best of 2, 4, 8 on a 2-core CPU, T = 256).
TOPK_GROUP = 4


def row_topk(s: torch.Tensor, k: int, group: int = TOPK_GROUP) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.topk(s, k, dim=-1, sorted=True) in two passes: topk's cost grows with the row's length.

    The first T - T % group columns are cut into G = T // group strided groups (group c holds
    columns c, c + G, c + 2G, ...); one max over each group, a top-k over the G group maxima, and a
    top-k over the k * group columns of the chosen groups plus the T % group tail columns. That is
    exact: a column among the row's k largest lies in a group whose max is at least the k-th largest
    value, and fewer than k groups have a larger max. Same values as torch.topk; the index picked
    among exactly equal values may differ. Rows shorter than 2 k groups go straight to torch.topk.
    """
    t = s.shape[-1]
    n_groups = t // group
    if n_groups < 2 * k:
        return torch.topk(s, k, dim=-1, sorted=True)
    body = t - t % group
    grouped = s[..., :body].unflatten(-1, (group, n_groups))  # (..., group, G): strided groups
    _, best = torch.topk(grouped.amax(-2), k, dim=-1, sorted=False)  # (..., k) group ids
    offsets = torch.arange(0, body, n_groups, device=s.device)  # (group,)
    columns = (best[..., None, :] + offsets[:, None]).flatten(-2)  # (..., group * k)
    if body < t:  # the tail columns are candidates too
        tail = torch.arange(body, t, device=s.device).expand(*columns.shape[:-1], t - body)
        columns = torch.cat([columns, tail], dim=-1)
    value, pick = torch.topk(torch.gather(s, -1, columns), k, dim=-1, sorted=True)
    return value, torch.gather(columns, -1, pick)


def sentences_per_window(sentence_id: np.ndarray) -> int:
    """The most sentences any window (row) spans; sentence ids are -1 on special tokens and padding."""
    real = sentence_id >= 0
    if not real.any():
        return 0
    big = np.iinfo(sentence_id.dtype).max
    span = np.where(real, sentence_id, -1).max(1) - np.where(real, sentence_id, big).min(1) + 1
    return int(span[real.any(1)].max())


# Padding keys get this score rather than -inf, so that p * score stays 0 (not NaN) at padding.
_MASKED = -1e9


def attention_scores(q: torch.Tensor, k: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Q K^T / sqrt(d) in float32 with padding keys masked; q, k are (B, H, T, d) -> (B, H, T, J)."""
    return _bmm_t(q.float(), k.float(), key_bias(valid, _MASKED), alpha=q.shape[-1] ** -0.5)


def attention_probs(q: torch.Tensor, k: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d) + mask) over keys, recomputed in float32; q, k are (B, H, T, d)."""
    return torch.softmax(attention_scores(q, k, valid), dim=-1)


def attention_mass(
    scores: torch.Tensor,
    valid: torch.Tensor,
    is_cls: torch.Tensor,
    is_sep: torch.Tensor,
    is_punct: torch.Tensor,
    sentence: torch.Tensor,
    n_sentences: int | None = None,
) -> torch.Tensor:
    """Mean over real query tokens (sentence id >= 0) of the attention mass per category (Clark et al. 2019).

    [CLS] and [SEP] are keys only: their own rows are not averaged (their same-sentence mass would be
    0 by definition, and a category's share of them is a statement about special tokens, not text).

    scores: (B, H, T, J) masked attention logits from `attention_scores` (consumed: turned into
    probabilities in place). valid, is_cls, is_sep, is_punct: (B, T) bool (valid is kept for callers:
    queries that are not real are left out through `sentence`); sentence: (B, T) int
    (-1 = special/padding); n_sentences: the most sentences in one window, if the caller knows it
    (reading it off the tensor makes a GPU wait). Returns (B, H, C) float32 in the order of MASS_CATEGORIES.
    """
    p = torch.softmax(scores, dim=-1)  # (B, H, T, J)
    # entropy = -sum p log p = lse - sum p * score, where log p = score - lse. lse is read off the
    # row maximum (log p_max = s_max - lse), so no log or exp of a T x T tensor is needed beyond softmax.
    # Two value-only maxima (softmax is monotonic, so p's max sits at score's max): a max that also
    # returns its index costs 3x as much on a CPU.
    lse = scores.amax(-1) - torch.log(p.amax(-1))  # (B, H, T)
    entropy = lse - torch.linalg.vecdot(p, scores)  # (B, H, T)
    # Every key-category sum in one matmul: [CLS], [SEP], punctuation, then one column per sentence
    # of the window (ids made relative to the window's first sentence to keep that matrix narrow).
    keys, sentence = key_categories(is_cls, is_sep, is_punct, sentence, n_sentences)
    sums = p @ keys.to(p.dtype)[:, None]  # (B, H, T, 3 + S)
    same_sentence = own_sentence(sums, sentence)  # (B, H, T)
    diag = torch.diagonal(p, 0, -2, -1)  # (B, H, T)
    prev = torch.nn.functional.pad(torch.diagonal(p, -1, -2, -1), (1, 0))  # p[i, i-1], 0 at i = 0
    nxt = torch.nn.functional.pad(torch.diagonal(p, 1, -2, -1), (0, 1))  # p[i, i+1], 0 at the end
    per_token = torch.stack([sums[..., 0], sums[..., 1], sums[..., 2], diag, prev, nxt, same_sentence, entropy], dim=-1)
    return query_means(per_token, sentence >= 0)


def key_categories(is_cls, is_sep, is_punct, sentence: torch.Tensor, n_sentences: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The key categories (B, T, 3 + S) bool: [CLS], [SEP], punctuation, then one column per sentence
    of the window (ids made relative to the window's first sentence, to keep the matrix narrow),
    and those relative ids (B, T) (-1 = special/padding). S = n_sentences, read off `sentence` if None."""
    if n_sentences is None:
        n_sentences = sentences_per_window(sentence.cpu().numpy())
    real = sentence >= 0
    first = torch.where(real, sentence, torch.iinfo(sentence.dtype).max).amin(-1, keepdim=True)
    sentence = torch.where(real, sentence - first, -1)
    onehot = torch.nn.functional.one_hot(sentence.clamp_min(0), max(n_sentences, 1)) & real[..., None]
    keys = torch.cat([is_cls[..., None], is_sep[..., None], is_punct[..., None], onehot.bool()], dim=-1)
    return keys, sentence


def own_sentence(sums: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
    """Each query's mass on its own sentence, from the category sums (B, H, T, 3 + S); 0 where not real."""
    b, h, t, _ = sums.shape
    own = sentence.clamp_min(0)[:, None, :, None].expand(b, h, t, 1) + 3
    return torch.gather(sums, -1, own)[..., 0] * (sentence >= 0)[:, None, :].to(sums.dtype)


def query_means(per_token: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """(B, H, T, C) per-query values -> (B, H, C) float32 means over real queries (real: (B, T)).

    In float64, rounded once: a float32 sum would round differently as the vectorised reduction
    splits T differently."""
    w = real.to(torch.float64)[:, None, :, None]  # (B, 1, T, 1): real queries only
    return ((per_token.double() * w).sum(2) / w.sum(2).clamp_min(1.0)).float()  # (B, H, C)
