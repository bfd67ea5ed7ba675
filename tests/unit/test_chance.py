"""The random head's building blocks, hand-counted: token classes by position, c, uniform attention."""

from __future__ import annotations

import math

import numpy as np
import pytest

from attnsim.reduce.chance import CLASS_CLS, CLASS_FINAL, CLASS_NONE, CLASS_SEP, pair_weight, token_classes_by_position, window_null

CLS, SEP, DOT, QUOTE, U, S, GOV, ENDS, PAD = 101, 102, 1012, 1005, 7, 8, 9, 10, -1
CLASSES = {"cls": CLS, "sep": SEP, "punct": [DOT, QUOTE], "final_punct": [DOT]}


def window():
    # [CLS] u . s . gov ends . " | ends . [SEP] pad: "U.S. gov ends." and a second sentence "ends."
    ids = np.array([[CLS, U, DOT, S, DOT, GOV, ENDS, DOT, QUOTE, ENDS, DOT, SEP, PAD]], np.int32)
    sid = np.array([[-1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, -1, -1]], np.int32)
    return ids, sid


def test_sentence_final_punctuation_is_found_by_position():
    ids, sid = window()
    classes, punct = token_classes_by_position(ids, sid, CLASSES)
    expected = [CLASS_CLS] + [CLASS_NONE] * 6 + [CLASS_FINAL, CLASS_NONE, CLASS_NONE, CLASS_FINAL, CLASS_SEP, CLASS_NONE]
    assert classes[0].tolist() == expected  # the '.' of "U.S." end nothing; the one before the quote does
    assert punct[0].tolist() == [False, False, True, False, True, False, False, True, True, False, True, False, False]


def test_pair_weight_is_k_over_the_candidates():
    assert pair_weight(np.array([12, 5, 1]), k=8).tolist() == [8 / 11, 1.0, 0.0]  # 4 candidates < k: all drawn
    assert pair_weight(np.array([12, 1]), k=None).tolist() == [1.0, 0.0]


def test_uniform_attention_chance_by_hand():
    ids, sid = window()
    null = window_null(ids, sid, np.array([12]), CLASSES, k=8)
    n, r = 12, 10  # valid tokens, real tokens (queries)
    got = dict(zip(("cls", "sep", "punct", "self", "prev", "next", "same_sentence", "entropy"), null.mass_chance[0]))
    assert got["cls"] == pytest.approx(1 / n) and got["sep"] == pytest.approx(1 / n)
    assert got["punct"] == pytest.approx(5 / n)  # by id, as the kernel's category
    assert got["self"] == pytest.approx(1 / n) and got["prev"] == pytest.approx(1 / n) and got["next"] == pytest.approx(1 / n)
    assert got["same_sentence"] == pytest.approx((8 * 8 + 2 * 2) / (r * n))  # each query: its sentence's size / n
    assert got["entropy"] == pytest.approx(math.log(n))
    # expected in-degree of [SEP]: c * (real sources), c = 8 / 11
    sep = null.indegree.filter(null.indegree["token"] == SEP)["expected"][0]
    assert sep == pytest.approx(8 / 11 * r)
    final = null.indegree.filter(null.indegree["token"] == DOT)["expected"][0]  # four '.' tokens, all real
    assert final == pytest.approx(8 / 11 * 4 * (r - 1))
