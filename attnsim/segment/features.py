"""Per-sentence sums of chosen heads' output vectors: what the segmenter compares across a gap.

For a block of sentences B and a head, let m_B be the sum of the head's output vectors u_i over the
tokens of B (u_i = v_i for the paper's dot product, v_i / |v_i| for cosine). Then

    m_L · m_R / (|m_L| |m_R|)  =  mean S(L, R) / sqrt(mean S(L, L) · mean S(R, R))

where S(A, B) is the head's context similarity matrix S[i, j] = u_i · u_j restricted to tokens i in A
and j in B (i = j included): the similarity that crosses a gap, relative to the similarity inside the blocks on each
side. So the model is run once and each sentence keeps only its per-head sum of u_i.

Where the model sees a sentence matters. By default (``window=0``) every sentence is its own window
``[CLS] s [SEP]``: nothing on one side of a gap can attend to the other side, and a sentence's vectors
do not depend on which text it appears in (they are cached by sentence text). With ``window=N`` the
sentences are packed into overlapping windows of N tokens that straddle the gaps, and each sentence
keeps the vectors of the window in which it has the most context on both sides; attention then mixes
the two sides of a gap, which the evaluation shows blurs the boundary (README, Text segmentation).

Example::

    loaded = load_model("minilm")
    vecs = sentence_vectors(loaded, [["One sentence.", "Another one."]], heads=[(5, 0), (5, 1)])
    vecs[0].shape                    # (sentence, head, dim) = (2, 2, 32)
"""

from __future__ import annotations

import numpy as np
import torch

from attnsim.model.kernels import split_heads
from attnsim.model.loading import LoadedModel
from attnsim.model.similarity import as_kind
from attnsim.model.taps import head_taps


def plan_windows(lengths: list[int], capacity: int) -> list[tuple[int, int]]:
    """Overlapping windows of whole sentences, as (first, end) sentence ranges.

    Each window holds as many sentences as fit in ``capacity`` tokens (at least one); the next starts
    at the sentence where the previous window's first half ends, so every gap lies well inside one.
    """
    n = len(lengths)
    out: list[tuple[int, int]] = []
    start = 0
    while start < n:
        end, used = start, 0
        while end < n and (end == start or used + lengths[end] <= capacity):
            used += lengths[end]
            end += 1
        out.append((start, end))
        if end >= n:
            break
        half, nxt = 0, start
        while nxt < end - 1 and half + lengths[nxt] <= used / 2:
            half += lengths[nxt]
            nxt += 1
        start = max(nxt, start + 1)
    return out


def sentence_vectors(
    loaded: LoadedModel,
    texts: list[list[str]],
    heads: list[tuple[int, int]],
    *,
    kind: str = "cosine",
    window: int = 0,
    max_tokens: int = 256,
    batch_tokens: int = 8192,
    cache: dict | None = None,
) -> list[np.ndarray]:
    """For each text (a list of sentences), a (sentence, head, dim) float32 array of summed u_i.

    ``heads`` are (layer, head) pairs. A sentence longer than ``max_tokens - 2`` tokens (or, with
    ``window``, a quarter of a window) is cut into pieces of at most that many tokens; each piece is
    encoded as if it were a sentence of its own and the pieces' sums are added, so every token
    counts. ``cache`` (sentence text -> vectors) is used and filled in the default mode.
    """
    if kind not in ("dot", "cosine"):
        raise ValueError(f"unknown similarity kind {kind!r}")
    tok = loaded.tokenizer
    limit = min(window or max_tokens, loaded.max_tokens) - 2
    cap = max(1, limit // 4) if window else limit
    flat = sorted({s for sentences in texts for s in sentences})
    pieces = dict(zip(flat, (_pieces(x, cap) for x in _tokenize(tok, flat))))
    if not window:
        cache = {} if cache is None else cache
        todo = [(s, p) for s in flat if s not in cache for p in pieces[s]]  # (sentence, one piece of it)
        pooled: dict[str, np.ndarray] = {}
        for (s, _), v in zip(todo, _encode_all(loaded, [[p] for _, p in todo], heads, kind, batch_tokens)):
            pooled[s] = pooled[s] + v[0] if s in pooled else v[0]
        cache.update(pooled)
        return [np.stack([cache[s] for s in sentences]) if sentences else _empty(heads, loaded) for sentences in texts]
    # Window mode: the pieces of all sentences of a text are the units packed into windows.
    units = [[p for s in sentences for p in pieces[s]] for sentences in texts]
    owner = [np.repeat(np.arange(len(sentences)), [len(pieces[s]) for s in sentences]) for sentences in texts]
    jobs = []  # (text, first unit, end) of every window
    for t, u in enumerate(units):
        jobs += [(t, a, b) for a, b in plan_windows([len(x) for x in u], limit)]
    encoded = _encode_all(loaded, [units[t][a:b] for t, a, b in jobs], heads, kind, batch_tokens)
    kept = [np.zeros((len(u), len(heads), loaded.head_size), np.float32) for u in units]
    best = [np.full(len(u), -1) for u in units]  # context each unit's kept vectors had
    for (t, a, b), vecs in zip(jobs, encoded):
        lengths = np.asarray([len(x) for x in units[t][a:b]])
        before = np.cumsum(lengths) - lengths
        context = np.minimum(before, lengths.sum() - before - lengths)  # tokens on the shorter side
        for i in np.flatnonzero(context > best[t][a:b]):
            kept[t][a + i], best[t][a + i] = vecs[i], context[i]
    out = [np.zeros((len(s), len(heads), loaded.head_size), np.float32) for s in texts]
    for t in range(len(texts)):
        np.add.at(out[t], owner[t], kept[t])  # pool each sentence's pieces
    return out


def _tokenize(tok, sentences: list[str]) -> list[np.ndarray]:
    if not sentences:
        return []
    encoded = tok(sentences, add_special_tokens=False, verbose=False)["input_ids"]
    return [np.asarray(x or [tok.unk_token_id], np.int64) for x in encoded]  # empty -> one [UNK]


def _pieces(ids: np.ndarray, cap: int) -> list[np.ndarray]:
    """A sentence's token ids in consecutive pieces of at most ``cap`` tokens."""
    return [ids[i : i + cap] for i in range(0, len(ids), cap)]


def _empty(heads, loaded) -> np.ndarray:
    return np.zeros((0, len(heads), loaded.head_size), np.float32)


def _encode_all(loaded, windows, heads, kind, batch_tokens) -> list[np.ndarray]:
    """Per window, a (sentence, head, dim) array; windows are batched by length to limit padding."""
    out: list[np.ndarray | None] = [None] * len(windows)
    order = sorted(range(len(windows)), key=lambda w: sum(len(x) for x in windows[w]))
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and (end - start + 1) * (sum(len(x) for x in windows[order[end]]) + 2) <= batch_tokens:
            end += 1
        batch = order[start:end]
        for w, vecs in zip(batch, _forward(loaded, [windows[w] for w in batch], heads, kind)):
            out[w] = vecs
        start = end
    return out  # type: ignore[return-value]


@torch.inference_mode()
def _forward(loaded: LoadedModel, windows: list[list[np.ndarray]], heads, kind: str) -> list[np.ndarray]:
    tok = loaded.tokenizer
    b = len(windows)
    t = max(sum(len(x) for x in w) for w in windows) + 2
    n_max = max(len(w) for w in windows)
    ids = torch.full((b, t), tok.pad_token_id or 0, dtype=torch.long)
    sentence = torch.full((b, t), -1, dtype=torch.long)  # -1 = [CLS], [SEP] or padding
    for r, w in enumerate(windows):
        row = np.concatenate([[tok.cls_token_id], *w, [tok.sep_token_id]])
        ids[r, : len(row)] = torch.from_numpy(row)
        sentence[r, 1 : len(row) - 1] = torch.from_numpy(np.repeat(np.arange(len(w)), [len(x) for x in w]))
    lengths = torch.tensor([sum(len(x) for x in w) + 2 for w in windows])
    mask = torch.arange(t)[None, :] < lengths[:, None]  # (B, T) real tokens
    device = next(loaded.model.parameters()).device
    onehot = torch.nn.functional.one_hot(sentence + 1, n_max + 1)[..., 1:].float().to(device)  # (B, T, S)
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)
    got: dict[tuple[int, int], torch.Tensor] = {}

    def on_layer(taps):
        layer = taps.layer
        v = as_kind(split_heads(taps.z, loaded.n_heads).float(), kind)  # (B, H, T, d)
        sums = torch.einsum("bts,bhtd->bshd", onehot, v)  # (B, S, H, d)
        for head in by_layer[layer]:
            got[(layer, head)] = sums[:, :, head]  # (B, S, d)

    with head_taps(loaded, on_layer, points=("z",), layers=set(by_layer)):
        loaded.model(input_ids=ids.to(device), attention_mask=mask.long().to(device))
    stacked = torch.stack([got[h] for h in heads], 2).cpu().numpy().astype(np.float32)  # (B, S, P, d)
    return [stacked[r, : len(w)] for r, w in enumerate(windows)]
