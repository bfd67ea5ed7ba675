"""Synthetic stores with planted heads: windows of prose-like token ids and heads whose top-k
neighbours follow a known rule, written as a real store so that the real reduce runs on them.

Window: [CLS], 5 sentences of 16-24 tokens (each ending in '.', some holding a '.' inside, as "U.S."
does, and commas), [SEP]. Word ids come from a 40-word vocabulary with falling frequencies, so that
repeats are common; ANCHOR is one mid-frequency word (about 3% of tokens).
"""

from __future__ import annotations

import numpy as np

from attnsim.model.loading import resolve_model_source
from attnsim.store.io import create_store, write_marker, write_unit
from attnsim.store.meta import MASS_CATEGORIES, Layout

CLS, SEP, DOT, COMMA = 101, 102, 1012, 1010
WORDS = np.arange(2000, 2040)
ANCHOR = 2010
T, K = 128, 4
HEADS = ("random", "local", "sentence", "repetition", "anchor", "separator")
CLASSES = {"cls": CLS, "sep": SEP, "punct": [COMMA, DOT], "final_punct": [DOT]}


def make_window(rng) -> tuple[np.ndarray, np.ndarray]:
    """One window's token ids and sentence ids (-1 on [CLS]/[SEP])."""
    p = 1.0 / np.arange(1, len(WORDS) + 1) ** 0.8
    ids, sid = [CLS], [-1]
    for s in range(5):
        n = int(rng.integers(16, 25))
        words = rng.choice(WORDS, size=n - 1, p=p / p.sum())
        if rng.random() < 0.5:  # an abbreviation's '.' inside the sentence: not sentence-final
            words[rng.integers(1, n - 3)] = DOT
        if rng.random() < 0.5:
            words[rng.integers(1, n - 3)] = COMMA
        ids += [*words.tolist(), DOT]
        sid += [s] * n
    ids.append(SEP)
    sid.append(-1)
    return np.asarray(ids, np.int32), np.asarray(sid, np.int32)


def _fill(rng, chosen: list[int], candidates: np.ndarray, k: int) -> list[int]:
    """chosen, then random other candidates until k (or the candidates run out)."""
    rest = np.setdiff1d(candidates, chosen)
    extra = rng.choice(rest, size=min(k - len(chosen), len(rest)), replace=False).tolist()
    return chosen + extra


def neighbours(kind: str, rng, ids: np.ndarray, sid: np.ndarray, i: int, k: int = K) -> list[int]:
    """The planted head's top-k of token i: the indices j its rule picks."""
    n = len(ids)
    candidates = np.array([j for j in range(n) if j != i])
    if kind == "random":  # the null model itself: k distinct candidates, uniformly
        return rng.choice(candidates, size=min(k, n - 1), replace=False).tolist()
    if kind == "local":  # the k nearest by |i - j|, no sentence preference
        return sorted(candidates, key=lambda j: (abs(i - j), j))[:k]
    if kind == "sentence":  # uniform over the token's own sentence
        own = np.array([j for j in candidates if sid[j] == sid[i]])
        return rng.choice(own, size=min(k, len(own)), replace=False).tolist()
    if kind == "repetition":  # other tokens of the same id first
        same = [int(j) for j in candidates if ids[j] == ids[i]]
        return _fill(rng, rng.permutation(same)[:k].tolist() if same else [], candidates, k)
    if kind == "anchor":  # the anchor word's occurrences first
        hits = [int(j) for j in candidates if ids[j] == ANCHOR]
        return _fill(rng, rng.permutation(hits)[:k].tolist() if hits else [], candidates, k)
    if kind == "separator":  # [SEP] and the sentence-final '.' tokens
        ends = [int(j) for j in candidates if ids[j] == SEP or (ids[j] == DOT and (j + 1 >= n or sid[j + 1] != sid[j]))]
        return rng.permutation(ends)[:k].tolist()
    raise ValueError(kind)


def planted_arrays(seed: int, n_windows: int, heads=HEADS) -> dict[str, np.ndarray]:
    """Token arrays and topk_index (W, 1, H, T, K) of planted heads, one layer."""
    rng = np.random.default_rng(seed)
    ids = np.full((n_windows, T), -1, np.int32)
    sid = np.full((n_windows, T), -1, np.int32)
    length = np.zeros(n_windows, np.int32)
    topk = np.full((n_windows, 1, len(heads), T, K), -1, np.int16)
    for w in range(n_windows):
        wid, wsid = make_window(rng)
        n = len(wid)
        ids[w, :n], sid[w, :n], length[w] = wid, wsid, n
        for h, kind in enumerate(heads):
            for i in range(n):
                if wsid[i] >= 0:  # rows of [CLS]/[SEP] are never counted
                    picked = neighbours(kind, rng, wid, wsid, i)
                    topk[w, 0, h, i, : len(picked)] = picked
    return {"input_ids": ids, "sentence_id": sid, "length": length, "topk_index": topk}


def planted_vectors(ids: np.ndarray, n_heads: int, seed: int, anchor_norm: float = 3.0) -> np.ndarray:
    """(W, 1, H, T, 4) random unit-ish head vectors, ANCHOR's scaled to `anchor_norm`; NaN on padding."""
    rng = np.random.default_rng(seed)
    v = rng.normal(size=ids.shape[:1] + (1, n_heads) + ids.shape[1:] + (4,)) / 2.0  # mean norm about 1
    v *= np.where(ids == ANCHOR, anchor_norm, 1.0)[:, None, None, :, None]
    v[np.broadcast_to((ids < 0)[:, None, None, :, None], v.shape)] = np.nan
    return v.astype(np.float16)


def write_planted_store(url: str, seed: int, n_windows: int = 24, heads=HEADS, windows_per_shard: int = 8, vectors: bool = False) -> str:
    """A complete store (markers written) of planted heads; see `planted_arrays`. vectors: add the
    `vectors` tier (`planted_vectors`: the anchor word's vectors 3x as long as the others)."""
    arrays = planted_arrays(seed, n_windows, heads)
    tiers = ("default", "vectors") if vectors else ("default",)
    layout = Layout(n_windows, T, 1, len(heads), 4, K, len(MASS_CATEGORIES), windows_per_shard, tiers)
    if vectors:
        arrays["head_vectors"] = planted_vectors(arrays["input_ids"], len(heads), seed)
    attrs = {
        "tiers": list(tiers),
        "similarity_kind": "dot",
        "k": K,
        "model": {"name": "planted"},
        "corpus": {"spec": "planted", "windows": n_windows, "tokens": int(arrays["length"].sum())},
        "tokenizer": {"source": resolve_model_source("minilm"), "token_classes": CLASSES},
    }
    root = create_store(url, layout, attrs)
    arrays |= {
        "doc_id": np.arange(n_windows, dtype=np.int64),
        "char_span": np.full((n_windows, T, 2), -1, np.int64),
        "topk_value": np.zeros(arrays["topk_index"].shape, np.float16),
        "attention_mass": np.full((n_windows, 1, len(heads), len(MASS_CATEGORIES)), np.nan, np.float32),
    }
    for unit in range(layout.n_units):
        a, b = layout.unit_windows(unit)
        write_unit(root, layout, unit, {k: v[a:b] for k, v in arrays.items()})
        write_marker(url, unit, {"windows": [a, b]})
    return url
