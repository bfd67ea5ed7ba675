"""Text segmentation from context similarity: a boundary where little similarity crosses a sentence gap.

For every gap g between sentences g and g+1, each chosen head h scores the *cohesion* of the blocks
L = the b sentences before the gap and R = the b sentences after it (b = ``block``, or
``block_fraction`` of the text's sentences when that is more: a long text's curve is smoothed more):

    c_h(g) = mean S_h(L, R) / sqrt(mean S_h(L, L) · mean S_h(R, R))

(S_h the head's context similarity, dot product or cosine; see `segment_features`). Each head's
cohesion is standardised over the text's gaps and the heads are averaged, so each head has one vote.
How many boundaries to keep, and where, is the count rule's job (``cutoff``):

- penalised optimum (default ``penalty``): the boundary set that minimises the spread of the
  sentences' head vectors within segments plus ``penalty`` · ln(n) per boundary, solved exactly by
  dynamic programming (`attnsim.segment.penalty`). Chosen on real articles (README, "How the
  defaults were chosen"): it held the count there (7.4 predicted against 7.1 true) with a lower Pk
  than ``depth``, and was no worse than ``hearst`` on any Choi development subset;
- ``depth``: the valleys of the curve, ranked by TextTiling's depth score (how far the curve climbs
  on both sides before it falls again), at least ``threshold`` standard deviations of the curve
  deep. Hearst's liberal cutoff (``hearst``: mean − σ/2 of the valley depths) keeps a fixed share of
  the valleys and predicted 4 times too many boundaries in 200-sentence articles;
- given the number of segments (any cutoff): the deepest valleys, then the deepest other gaps.

Every way, no segment is shorter than ``min_segment`` sentences or ``fraction`` of the text.

Default heads: all heads of the last layer. The evaluation (README, Text segmentation) shows that
the last layer's heads, voting together, mark topic changes far better than the heads the corpus
statistics label sentence-local, which separate every sentence from its neighbours alike.

Example::

    seg = Segmenter(load_model("minilm"))
    for piece in seg.segment_text(open("notes.txt").read()):
        print(piece.start, piece.end, piece.text[:40])
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from attnsim.errors import UserError
from attnsim.model.loading import LoadedModel
from attnsim.segment.features import sentence_vectors
from attnsim.segment.penalty import penalised_boundaries


@dataclass
class SegmentConfig:
    layers: list[int] = field(default_factory=lambda: [-1])  # layers whose heads vote; -1 = the last
    heads: list[tuple[int, int]] | None = None  # explicit (layer, head) pairs; overrides `layers`
    similarity: str = "cosine"  # S = dot product of head outputs (the paper's) or cosine
    block: int = 4  # sentences compared on each side of a gap (at least)
    block_fraction: float = 0.03  # ... or this fraction of the text's sentences, if more (long texts)
    min_segment: int = 2  # fewest sentences in a segment
    cutoff: str = "penalty"  # "penalty": optimal set at penalty·ln(n) a boundary ("penalty:W" sets W); "depth"; "hearst"
    threshold: float = 2.5  # depth cutoff in standard deviations of the text's cohesion curve
    penalty: float = 0.435  # penalty cutoff: price of a boundary in sentences' variance, times ln(sentences)
    fraction: float = 0.04  # a segment also holds at least this fraction of the text's sentences
    window: int = 0  # 0: each sentence is its own model window; N: overlapping N-token windows
    max_tokens: int = 256  # longest sentence window; a longer sentence is encoded in pieces and pooled
    batch_tokens: int = 8192  # padded tokens per forward pass

    def __post_init__(self):
        if self.similarity not in ("dot", "cosine"):
            raise UserError(f"similarity {self.similarity!r} is not dot or cosine")
        if self.cutoff.startswith("penalty:"):
            try:
                self.cutoff, self.penalty = "penalty", float(self.cutoff.partition(":")[2])
            except ValueError:
                raise UserError(f"cutoff {self.cutoff!r}: give penalty:WEIGHT with a number, e.g. penalty:0.435") from None
        if self.cutoff not in ("penalty", "depth", "hearst"):
            raise UserError(f"cutoff {self.cutoff!r} is not penalty, penalty:WEIGHT, depth or hearst")
        if not (0 <= self.fraction < 0.5 and 0 <= self.block_fraction < 0.5):
            raise UserError(f"min fraction ({self.fraction}) and block fraction ({self.block_fraction}) must be in [0, 0.5)")
        if self.block < 1 or self.min_segment < 1:
            raise UserError(f"block ({self.block}) and min_segment ({self.min_segment}) must be at least 1")
        if self.window and self.window < 16:
            raise UserError(f"window {self.window} is too small; give 0 (one sentence per window) or >= 16 tokens")


@dataclass
class Segment:
    index: int  # position of the segment in its text
    start: int  # character offsets of the segment in the text: text[start:end]
    end: int
    first_sentence: int  # sentences [first_sentence, last_sentence] of the text
    last_sentence: int
    text: str

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_heads(cfg: SegmentConfig, n_layers: int, n_heads: int) -> list[tuple[int, int]]:
    """The (layer, head) pairs that vote, checked against the model's shape."""
    if cfg.heads:
        pairs = [(int(layer), int(head)) for layer, head in cfg.heads]
    else:
        layers = sorted({layer + n_layers if layer < 0 else layer for layer in cfg.layers})
        pairs = [(layer, head) for layer in layers for head in range(n_heads)]
    for layer, head in pairs:
        if not (0 <= layer < n_layers and 0 <= head < n_heads):
            raise UserError(f"head {layer}:{head} does not exist; the model has {n_layers} layers x {n_heads} heads")
    if not pairs:
        raise UserError("no heads selected; give --layers or --heads")
    return pairs


def heads_from_stats(path: str, label: str) -> list[tuple[int, int]]:
    """Heads that a run's `stats/head_stats.parquet` labels ``label`` (e.g. `sentence`)."""
    import polars as pl

    try:
        table = pl.read_parquet(path, columns=["layer", "head", "label"])
    except (OSError, pl.exceptions.PolarsError) as e:
        raise UserError(f"head statistics {path!r} could not be read ({str(e).splitlines()[0][:120]}); give a run's stats/head_stats.parquet") from None
    rows = table.filter(pl.col("label") == label).sort(["layer", "head"])
    if rows.height == 0:
        found = ", ".join(sorted(set(table["label"].to_list())))
        raise UserError(f"no head in {path!r} is labelled {label!r} (labels there: {found})")
    return list(zip(rows["layer"].to_list(), rows["head"].to_list()))


def gap_cohesion(vectors: np.ndarray, block: int) -> np.ndarray:
    """(gap, head) cosine of the summed vectors of the ``block`` sentences on each side of each gap.

    vectors: (sentence, head, dim) per-sentence sums of u_i (see `sentence_vectors`).
    """
    n = len(vectors)
    csum = np.concatenate([np.zeros_like(vectors[:1], np.float64), np.cumsum(vectors.astype(np.float64), 0)])  # (n+1, P, d)
    gaps = np.arange(max(n - 1, 0))
    left = csum[gaps + 1] - csum[np.maximum(gaps + 1 - block, 0)]  # (G, P, d) blocks ending at each gap
    right = csum[np.minimum(gaps + 1 + block, n)] - csum[gaps + 1]  # (G, P, d) blocks starting after it
    norm = np.linalg.norm(left, axis=-1) * np.linalg.norm(right, axis=-1)
    return (left * right).sum(-1) / np.maximum(norm, 1e-12)  # (G, P)


def gap_scores(vectors: np.ndarray, block: int) -> np.ndarray:
    """Cohesion across each of the n-1 gaps, (gap,): each head's cohesion standardised over the gaps, averaged."""
    cohesion = gap_cohesion(vectors, block)
    if len(cohesion) == 0:
        return np.zeros(0)
    spread = cohesion.std(0)
    z = (cohesion - cohesion.mean(0)) / np.where(spread > 0, spread, 1.0)  # a flat head contributes 0
    return z.mean(1)


def depth_scores(scores: np.ndarray) -> np.ndarray:
    """TextTiling's depth: climb left and right while the score does not fall; sum the two rises.

    The climb from gap i passes gap i-1 whenever scores[i-1] >= scores[i] and then goes on exactly as
    the climb from i-1, so both peaks follow from one pass each way (linear in the text's length).
    """
    n = len(scores)
    left, right = np.array(scores, np.float64), np.array(scores, np.float64)
    for i in range(1, n):
        if scores[i - 1] >= scores[i]:
            left[i] = left[i - 1]
    for i in range(n - 2, -1, -1):
        if scores[i + 1] >= scores[i]:
            right[i] = right[i + 1]
    return left + right - 2 * np.asarray(scores, np.float64)


def least_segment(n: int, min_segment: int, fraction: float) -> int:
    """Fewest sentences in a segment of a text of n sentences: min_segment, or a fraction of n."""
    return max(min_segment, int(round(fraction * n)))


def choose_boundaries(
    scores: np.ndarray, n_segments: int | None = None, min_segment: int = 2, *, cutoff: str = "depth", threshold: float = 2.5, fraction: float = 0.0
) -> list[int]:
    """Gaps where a segment ends: deep valleys of the cohesion curve (see the module docstring).

    cutoff "depth": valleys at least ``threshold`` standard deviations (of this curve) deep;
    "hearst": at least mean - σ/2 of the valley depths. No segment is shorter than
    `least_segment(n, min_segment, fraction)` sentences, whether the count is given or not.
    """
    n = len(scores) + 1  # sentences
    least = least_segment(n, min_segment, fraction)
    depth = depth_scores(scores)
    valley = np.asarray([(i == 0 or s <= scores[i - 1]) and (i == n - 2 or s <= scores[i + 1]) for i, s in enumerate(scores)], bool)
    candidates = np.flatnonzero(valley & (depth > 0))
    ranked = list(candidates[np.argsort(-depth[candidates], kind="stable")])
    if n_segments is None:
        if len(candidates) == 0:
            return []
        if cutoff == "hearst":
            bar = depth[candidates].mean() - depth[candidates].std() / 2
        else:
            bar = threshold * float(np.std(scores))  # in units of this curve's spread
        ranked = [g for g in ranked if depth[g] >= bar]
        wanted = len(ranked)
    else:
        wanted = max(n_segments - 1, 0)
        rest = np.setdiff1d(np.arange(n - 1), candidates)
        ranked += list(rest[np.lexsort((scores[rest], -depth[rest]))])  # then deepest, then lowest
    chosen: list[int] = []
    for g in ranked:
        if len(chosen) >= wanted:
            break
        ends = sorted([-1, n - 1, *chosen])  # segment ends so far, with the text's edges
        at = int(np.searchsorted(ends, g))
        if g - ends[at - 1] >= least and ends[at] - g >= least:
            chosen.append(int(g))
    return sorted(chosen)


class Segmenter:
    """Segments texts with a loaded model.

    ``cache``: a dict this segmenter may fill and reuse across calls (sentence text -> vectors); only
    for one segmenter, and only used when each sentence is its own window.
    """

    def __init__(self, loaded: LoadedModel, cfg: SegmentConfig | None = None, splitter=None):
        self.loaded = loaded
        self.cfg = cfg or SegmentConfig()
        self.heads = resolve_heads(self.cfg, loaded.n_layers, loaded.n_heads)
        self._splitter = splitter

    @property
    def splitter(self):
        if self._splitter is None:
            from attnsim.prepare.windows import SentenceSplitter

            self._splitter = SentenceSplitter()
        return self._splitter

    def scores(self, texts: list[list[str]], cache: dict | None = None) -> list[np.ndarray]:
        """Cohesion curve of each text given as sentences, (n_sentences - 1,) each."""
        return [curve for curve, _ in self.profiles(texts, cache)]

    def profiles(self, texts: list[list[str]], cache: dict | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """(cohesion curve, (sentence, head, dim) vectors) of each text given as sentences."""
        c = self.cfg
        vecs = sentence_vectors(
            self.loaded,
            texts,
            self.heads,
            kind=c.similarity,
            window=c.window,
            max_tokens=c.max_tokens,
            batch_tokens=c.batch_tokens,
            cache=cache,
        )
        return [(gap_scores(v, max(c.block, int(round(c.block_fraction * len(v))))), v) for v in vecs]

    def boundaries(self, texts: list[list[str]], n_segments: list[int] | None = None, cache: dict | None = None) -> list[list[int]]:
        """For each text given as sentences, the gaps g after which a segment ends."""
        counts = n_segments or [None] * len(texts)
        return [self.choose(curve, k, vectors) for (curve, vectors), k in zip(self.profiles(texts, cache), counts)]

    def choose(self, curve: np.ndarray, n_segments: int | None = None, vectors: np.ndarray | None = None) -> list[int]:
        """The boundaries with this segmenter's cutoff settings; the ``penalty`` cutoff needs the sentence vectors."""
        c = self.cfg
        if n_segments is None and c.cutoff == "penalty":
            if vectors is None:
                raise ValueError("the penalty cutoff needs the sentence vectors: see Segmenter.profiles")
            return penalised_boundaries(vectors, c.penalty, least_segment(len(vectors), c.min_segment, c.fraction))
        cutoff = "depth" if c.cutoff == "penalty" else c.cutoff  # a given count ignores the cutoff
        return choose_boundaries(curve, n_segments, c.min_segment, cutoff=cutoff, threshold=c.threshold, fraction=c.fraction)

    def segment_texts(self, texts: list[str], n_segments: int | list[int | None] | None = None) -> list[list[Segment]]:
        """Split each text into sentences, then into segments with character offsets into that text.

        ``n_segments``: one count for every text, or one per text (None: the data-driven cutoff).
        """
        spans = [self.splitter.spans(text) for text in texts]
        sentences = [[text[a:b] for a, b in sp] for text, sp in zip(texts, spans)]
        counts = n_segments if isinstance(n_segments, list) else [n_segments] * len(texts)
        cuts = self.boundaries(sentences, counts)
        return [_pieces(text, sp, c) for text, sp, c in zip(texts, spans, cuts)]

    def segment_text(self, text: str, n_segments: int | None = None) -> list[Segment]:
        return self.segment_texts([text], n_segments)[0]


def _pieces(text: str, spans: list[tuple[int, int]], cuts: list[int]) -> list[Segment]:
    out: list[Segment] = []
    first = 0
    for last in [*cuts, len(spans) - 1] if spans else []:
        start, end = spans[first][0], spans[last][1]
        out.append(Segment(len(out), start, end, first, last, text[start:end]))
        first = last + 1
    return out
