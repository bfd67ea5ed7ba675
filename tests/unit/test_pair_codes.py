"""A high pair's code (j real, same sentence, same token, j's class) and distance key: the per-block
code table and the per-pair gathers against a plain loop over the pairs, on blocks with padding,
special tokens and repeated ids."""

from __future__ import annotations

import numpy as np
import pytest

from attnsim.reduce import pairs as pairs_module
from attnsim.reduce.pairs import pair_codes, pair_codes_gathered


def random_block(rng, w: int = 5, t: int = 24, n_pairs: int = 4000):
    input_ids = rng.integers(0, 12, size=(w, t)).astype(np.int32)  # a small vocabulary: many repeats
    sentence_id = np.repeat(rng.integers(0, 4, size=(w, t)).cumsum(1) // 3, 1).reshape(w, t).astype(np.int32)
    lengths = rng.integers(3, t + 1, size=w)
    for row, n in enumerate(lengths):
        sentence_id[row, 0] = sentence_id[row, n - 1] = -1  # [CLS] and [SEP]: not real
        sentence_id[row, n:] = -1
        input_ids[row, n:] = -1  # padding
    token_class = rng.integers(0, 4, size=(w, t)).astype(np.uint8)
    win = rng.integers(0, w, size=n_pairs).astype(np.int32)
    i, j = rng.integers(0, t, size=(2, n_pairs)).astype(np.int32)
    zeros = np.zeros(n_pairs, np.int32)
    return input_ids, sentence_id, token_class, (win, zeros, zeros, i, j)


def loop_reference(input_ids, sentence_id, token_class, pairs):
    t = input_ids.shape[1]
    code, dist_key, target = [], [], []
    for w, i, j in zip(pairs[0].tolist(), pairs[3].tolist(), pairs[4].tolist()):
        real_j = sentence_id[w, j] >= 0
        same = real_j and sentence_id[w, i] == sentence_id[w, j]
        rep = real_j and input_ids[w, i] == input_ids[w, j]
        code.append(int(real_j) | int(same) << 1 | int(rep) << 2 | int(token_class[w, j]) << 3)
        dist_key.append(abs(i - j) if real_j else t)
        target.append(input_ids[w, j])
    return np.array(code), np.array(dist_key), np.array(target)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_code_table_and_gathers_equal_a_loop_over_the_pairs(seed):
    block = random_block(np.random.default_rng(seed))
    expected = loop_reference(*block)
    for compute in (pair_codes, pair_codes_gathered):
        code, dist_key, target = compute(*block)
        assert code.dtype == np.uint8
        for got, want in zip((code, dist_key, target), expected):
            np.testing.assert_array_equal(got, want)


def test_a_block_too_large_for_the_table_takes_the_gathers(monkeypatch):
    block = random_block(np.random.default_rng(3))
    table = pair_codes(*block)
    called = []
    monkeypatch.setattr(pairs_module, "CODE_TABLE_ENTRIES", 5 * 24 * 24 - 1)
    monkeypatch.setattr(pairs_module, "pair_codes_gathered", lambda *a: called.append(1) or pair_codes_gathered(*a))
    gathered = pairs_module.pair_codes(*block)
    assert called == [1]
    for a, b in zip(table, gathered):
        np.testing.assert_array_equal(a, b)
