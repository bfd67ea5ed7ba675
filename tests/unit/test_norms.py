"""Anchor norms (issue 11, part 6): is a dot-product anchor a high-norm token? Hand-counted norms."""

from __future__ import annotations

import math

import numpy as np
import pytest

from attnsim.reduce.norms import anchor_norm_ratio, empty_norms, norm_table


def test_anchor_norm_ratio_hand_counted():
    ids = np.array([[5, 6, 5, -1]], np.int32)
    v = np.full((1, 1, 2, 4, 2), np.nan, np.float16)  # (W, L, H, T, d): two heads
    v[0, 0, 0, :3] = [[3, 4], [0, 1], [6, 8]]  # head 0: norms 5, 1, 10
    v[0, 0, 1, :3] = [[0, 1], [0, 2], [0, 1]]  # head 1: norms 1, 2, 1
    table = norm_table(v, ids)
    assert table.filter((table["head"] == 0) & (table["token"] == 5))["norm_sum"][0] == 15.0
    top = np.array([[5.0, 6.0]])  # head 0's anchor is id 5, head 1's is id 6
    ratio = anchor_norm_ratio(table, top)
    assert ratio[0, 0] == pytest.approx(7.5 / (16 / 3), rel=1e-12)
    assert ratio[0, 1] == pytest.approx(2.0 / (4 / 3), rel=1e-12)
    assert math.isnan(anchor_norm_ratio(empty_norms(), top)[0, 0])  # no vectors tier: not known
    assert norm_table(None, ids).height == 0
