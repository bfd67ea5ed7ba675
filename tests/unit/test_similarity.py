"""Tensor kernels against brute-force loops on synthetic tensors (no model)."""

from __future__ import annotations

import math

import numpy as np
import torch

from attnsim.model.kernels import (
    attention_mass,
    attention_probs,
    row_topk,
    sentences_per_window,
    similarity,
    split_heads,
    topk_neighbours,
)
from attnsim.store.meta import MASS_CATEGORIES


def test_split_heads_and_dot_similarity():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 3 * 4)  # (B, T, H*d)
    v = split_heads(x, 3)
    assert v.shape == (2, 3, 5, 4)
    s = similarity(v, "dot")
    for b in range(2):
        for h in range(3):
            for i in range(5):
                for j in range(5):
                    expected = float(x[b, i, h * 4 : (h + 1) * 4] @ x[b, j, h * 4 : (h + 1) * 4])
                    assert math.isclose(float(s[b, h, i, j]), expected, rel_tol=1e-5, abs_tol=1e-5)


def test_cosine_similarity_is_bounded_and_one_on_diagonal():
    v = torch.randn(1, 2, 6, 8)
    s = similarity(v, "cosine")
    assert torch.allclose(torch.diagonal(s, 0, -2, -1), torch.ones(1, 2, 6), atol=1e-6)
    assert s.abs().max() <= 1 + 1e-6


def test_topk_matches_brute_force_and_skips_self_and_padding():
    torch.manual_seed(1)
    b, h, t, k = 3, 2, 7, 3
    s = torch.randn(b, h, t, t)
    lengths = [7, 4, 2]
    valid = torch.tensor([[j < n for j in range(t)] for n in lengths])
    index, value = topk_neighbours(s.clone(), valid, k)
    for bb, n in enumerate(lengths):
        for hh in range(h):
            for i in range(t):
                if i >= n:
                    assert (index[bb, hh, i] == -1).all() and torch.isnan(value[bb, hh, i]).all()
                    continue
                candidates = sorted(((float(s[bb, hh, i, j]), j) for j in range(n) if j != i), reverse=True)[:k]
                got = [int(j) for j in index[bb, hh, i] if j >= 0]
                assert got == [j for _, j in candidates]
                assert i not in got and all(j < n for j in got)
                missing = k - len(candidates)
                if missing:
                    assert (index[bb, hh, i, -missing:] == -1).all()


def test_topk_of_long_rows_takes_the_two_pass_path_and_matches_brute_force():
    # t = 70, k = 8: 17 groups of 4 columns (>= 2k, so row_topk's two passes run) and a tail of 2.
    # Distinct values (a permutation), so the expected indices are unique.
    b, h, t, k = 2, 3, 70, 8
    s = torch.randperm(b * h * t * t, generator=torch.Generator().manual_seed(3)).float().view(b, h, t, t)
    lengths = [70, 21]
    valid = torch.tensor([[j < n for j in range(t)] for n in lengths])
    index, value = topk_neighbours(s.clone(), valid, k)
    for bb, n in enumerate(lengths):
        for hh in range(h):
            for i in range(n):
                expected = sorted(((float(s[bb, hh, i, j]), j) for j in range(n) if j != i), reverse=True)[:k]
                assert index[bb, hh, i].tolist() == [j for _, j in expected]
                assert value[bb, hh, i].tolist() == [v for v, _ in expected]


def test_row_topk_equals_torch_topk_on_every_shape():
    # Values and (where no two values are equal) indices as torch.topk, for lengths around the
    # group size, with -inf columns as padding makes them; group sizes other than the default too.
    gen = torch.Generator().manual_seed(4)
    for t in (5, 31, 63, 64, 65, 127, 128, 255, 256, 257):
        for k in (1, 3, 8, 16):
            for group in (2, 4, 8):
                if k > t:
                    continue
                s = torch.randperm(2 * t * t, generator=gen).float().view(2, 1, t, t)
                s[1, :, :, t // 3 :] = float("-inf")
                value, index = row_topk(s, k, group)
                expected_value, expected_index = torch.topk(s, k, dim=-1)
                assert torch.equal(value, expected_value), (t, k, group)
                finite = torch.isfinite(expected_value)
                assert torch.equal(index[finite], expected_index[finite]), (t, k, group)
                assert torch.equal(torch.gather(s, -1, index), value), (t, k, group)


def test_topk_pads_when_window_shorter_than_k():
    s = torch.randn(1, 1, 3, 3)
    index, value = topk_neighbours(s, torch.ones(1, 3, dtype=torch.bool), k=5)
    assert index.shape == (1, 1, 3, 5)
    assert (index[..., 2:] == -1).all() and torch.isnan(value[..., 2:]).all()


def test_attention_probs_match_softmax_with_mask():
    torch.manual_seed(2)
    q, k = torch.randn(1, 1, 4, 8), torch.randn(1, 1, 4, 8)
    valid = torch.tensor([[True, True, True, False]])
    p = attention_probs(q, k, valid)
    scores = (q[0, 0] @ k[0, 0].T) / math.sqrt(8)
    expected = torch.softmax(scores[:, :3], dim=-1)
    assert torch.allclose(p[0, 0, :, :3], expected, atol=1e-6)
    assert torch.all(p[0, 0, :, 3] == 0)


def test_attention_mass_hand_counted():
    # One window: [CLS] a b [SEP] + padding; sentence ids -1 0 0 -1; "b" is punctuation.
    p = torch.zeros(1, 1, 5, 5)
    p[0, 0, 0] = torch.tensor([1.0, 0, 0, 0, 0])  # CLS attends to itself: not a real query, ignored
    p[0, 0, 1] = torch.tensor([0.5, 0, 0.5, 0, 0])  # a: half CLS, half next (b)
    p[0, 0, 2] = torch.tensor([0, 1.0, 0, 0, 0])  # b: all on previous (a)
    p[0, 0, 3] = torch.tensor([0, 0, 0, 1.0, 0])  # SEP on itself: ignored too
    p[0, 0, 4] = torch.tensor([0.2, 0.2, 0.2, 0.2, 0.2])  # padding query: ignored
    valid = torch.tensor([[True, True, True, True, False]])
    is_cls = torch.tensor([[True, False, False, False, False]])
    is_sep = torch.tensor([[False, False, False, True, False]])
    is_punct = torch.tensor([[False, False, True, False, False]])
    sent = torch.tensor([[-1, 4, 4, -1, -1]])  # sentence ids need not start at 0 in a window
    scores = torch.log(p).clamp_min(-1e9)  # logits whose softmax is p (padding keys at -1e9)
    mass = attention_mass(scores, valid, is_cls, is_sep, is_punct, sent)[0, 0]
    got = dict(zip(MASS_CATEGORIES, mass.tolist()))
    # Means over the real queries a and b only: [CLS] and [SEP] are keys, not queries (issue 11).
    assert np.isclose(got["cls"], 0.5 / 2)
    assert np.isclose(got["sep"], 0.0)
    assert np.isclose(got["punct"], 0.5 / 2)
    assert np.isclose(got["self"], 0.0)
    assert np.isclose(got["prev"], (0.5 + 1.0) / 2)  # a -> CLS is also "previous"
    assert np.isclose(got["next"], 0.5 / 2)
    assert np.isclose(got["same_sentence"], (0.5 + 1.0) / 2)
    assert np.isclose(got["entropy"], (2 * 0.5 * math.log(2)) / 2)
    # The sentence count the extractor reads off the host copy (no GPU wait) gives the same masses.
    n = sentences_per_window(sent.numpy())
    assert n == 1
    assert torch.equal(attention_mass(scores, valid, is_cls, is_sep, is_punct, sent, n)[0, 0], mass)


def test_sentences_per_window_counts_the_widest_window():
    ids = np.array([[-1, 3, 3, 4, 5, -1], [-1, 7, -1, -1, -1, -1], [-1, -1, -1, -1, -1, -1]])
    assert sentences_per_window(ids) == 3  # sentences 3..5; the second window has 1, the third none
    assert sentences_per_window(np.full((2, 4), -1)) == 0
