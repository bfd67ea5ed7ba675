"""Evaluate text segmentation on concatenated-document test sets (Choi 2000's recipe).

A sample is ``segments`` (default 10) pieces, each the first n sentences of a different random
document of the corpus, n drawn uniformly from the subset's range (3–5, 6–8, 9–11, 3–11). Sentences
come from attnsim's sentence splitter; a document with fewer than n sentences is never drawn for a
piece of n. Each subset has its own random stream seeded by (seed, subset index), so the first m
samples are the same whatever the sample count.

Segmenters are compared at the sentence level with NLTK's Pk and WindowDiff: a segmentation of N
sentences is the string whose character i is "1" when a segment ends after sentence i (never for the
last sentence), and k is half the mean true segment length, round(N / (2 · true segments)), at least 1.

Example::

    samples = build_samples(documents, (3, 5), n_samples=50, seed=0, subset=0)
    pk_score, wd_score = pk_windowdiff(len(sample.sentences), sample.boundaries, predicted)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from attnsim.errors import UserError

SUBSETS = {"3-5": (3, 5), "6-8": (6, 8), "9-11": (9, 11), "3-11": (3, 11)}  # Choi's four ranges


@dataclass
class Sample:
    sentences: list[str]
    boundaries: list[int]  # gap g: a true segment ends after sentence g
    documents: list[int] = field(default_factory=list)  # source document (index) of each segment
    name: str = ""  # the source document of a structured sample


def build_samples(documents: list[list[str]], n_range: tuple[int, int], n_samples: int, seed: int, subset: int = 0, segments: int = 10) -> list[Sample]:
    """Choi-style samples: each of ``segments`` pieces is the first n sentences of a different document."""
    lo, hi = n_range
    if not 1 <= lo <= hi:
        raise UserError(f"sentence range {n_range} is empty; give 1 <= low <= high")
    if sum(len(d) >= lo for d in documents) < segments:
        raise UserError(
            f"the corpus has {sum(len(d) >= lo for d in documents)} documents with at least {lo} sentences; "
            f"a sample needs {segments}: use a larger corpus or fewer segments"
        )
    rng = np.random.default_rng([seed, subset])
    out = []
    for _ in range(n_samples):
        used: list[int] = []
        sentences: list[str] = []
        ends: list[int] = []
        for _ in range(segments):
            n = int(rng.integers(lo, hi + 1))
            candidates = [d for d, sents in enumerate(documents) if len(sents) >= n and d not in used]
            if not candidates:  # too few long documents for this n: fall back to the shortest allowed
                n = lo
                candidates = [d for d, sents in enumerate(documents) if len(sents) >= n and d not in used]
            d = int(candidates[int(rng.integers(len(candidates)))])
            used.append(d)
            sentences += documents[d][:n]
            ends.append(len(sentences) - 1)
        out.append(Sample(sentences, ends[:-1], used))
    return out


def as_string(n: int, boundaries) -> str:
    """The NLTK form of a segmentation of n sentences: "1" at sentence i when a segment ends after it."""
    marks = ["0"] * n
    for g in boundaries:
        if not 0 <= g < n - 1:
            raise ValueError(f"boundary after sentence {g} is outside 0..{n - 2}")
        marks[g] = "1"
    return "".join(marks)


def window_size(n: int, true_boundaries) -> int:
    """k = half the mean true segment length (at least 1)."""
    return max(1, round(n / (2 * (len(true_boundaries) + 1))))


def pk_windowdiff(n: int, truth, predicted) -> tuple[float, float]:
    """NLTK's Pk and WindowDiff of a predicted segmentation of n sentences against the truth."""
    from nltk.metrics.segmentation import pk, windowdiff

    ref, hyp = as_string(n, truth), as_string(n, predicted)
    k = window_size(n, truth)
    return pk(ref, hyp, k), windowdiff(ref, hyp, k)


def texttiling_boundaries(sentences: list[str], tiler) -> list[int]:
    """NLTK TextTiling over the sentences written one per paragraph; returns sentence gaps.

    TextTiling only places boundaries at paragraph breaks, so each sentence (whitespace collapsed)
    becomes its own paragraph, joined by blank lines. Its segments start at a blank line; the number
    of blank lines before a segment's end is the gap it ends at. A text too short for its
    windows (NLTK raises ValueError) is one segment.
    """
    text = "\n\n".join(" ".join(s.split()) for s in sentences)
    try:
        pieces = tiler.tokenize(text)
    except ValueError:
        return []
    assert "".join(pieces) == text, "TextTiling changed the text"
    out, pos = [], 0
    for piece in pieces[:-1]:
        pos += len(piece)
        out.append(text.count("\n\n", 0, pos))
    return [g for g in out if 0 <= g < len(sentences) - 1]


def make_texttiling():
    """NLTK's TextTilingTokenizer with its defaults and scikit-learn's English stop words.

    NLTK's own stop-word list is a data download; scikit-learn's list ships in its wheel.
    """
    from nltk.tokenize.texttiling import TextTilingTokenizer
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return TextTilingTokenizer(stopwords=sorted(ENGLISH_STOP_WORDS))


def random_boundaries(n: int, count: int, rng: np.random.Generator) -> list[int]:
    """``count`` distinct gaps of n sentences, uniformly at random."""
    return sorted(int(g) for g in rng.choice(n - 1, size=min(count, n - 1), replace=False))


METHODS = ("attnsim", "attnsim, given the count", "TextTiling (NLTK)", "random, given the count")  # count: true segments


@dataclass
class EvalRow:
    method: str
    subset: str
    pk: float  # mean over samples
    windowdiff: float
    boundaries: float  # mean predicted boundaries per sample (the truth has segments - 1)
    samples: int


def corpus_sentences(documents, splitter) -> list[list[str]]:
    """Each document's sentences (whitespace collapsed, so a sentence never holds a paragraph break)."""
    out = []
    for doc in documents:
        out.append([" ".join(doc.text[a:b].split()) for a, b in splitter.spans(doc.text)])
    return out


def evaluate(segmenter, documents: list[list[str]], *, n_samples: int = 100, seed: int = 0, subsets=None, progress=None) -> list[EvalRow]:
    """Pk and WindowDiff of attnsim, TextTiling and a random baseline on Choi-style samples.

    ``documents`` are sentence lists (see `corpus_sentences`); ``segmenter`` is an
    `attnsim.segment.segmenter.Segmenter`. Returns one row per (method, subset), methods in METHODS order.
    """
    subsets = subsets or list(SUBSETS)
    tiler = make_texttiling()
    cache: dict = {}  # the same sentence recurs across samples; its vectors do not change (default mode)
    rows: list[EvalRow] = []
    for index, name in enumerate(SUBSETS):
        if name not in subsets:
            continue
        samples = build_samples(documents, SUBSETS[name], n_samples, seed, subset=index)
        texts = [s.sentences for s in samples]
        truth_counts = [len(s.boundaries) + 1 for s in samples]
        profiles = segmenter.profiles(texts, cache)
        rng = np.random.default_rng([seed, index, 1])
        predicted = {
            METHODS[0]: [segmenter.choose(c, None, v) for c, v in profiles],
            METHODS[1]: [segmenter.choose(c, k) for (c, _), k in zip(profiles, truth_counts)],
            METHODS[2]: [texttiling_boundaries(t, tiler) for t in texts],
            METHODS[3]: [random_boundaries(len(s.sentences), len(s.boundaries), rng) for s in samples],
        }
        for method in METHODS:
            scores = [pk_windowdiff(len(s.sentences), s.boundaries, p) for s, p in zip(samples, predicted[method])]
            pk_mean, wd_mean = np.mean(scores, 0)
            count = float(np.mean([len(p) for p in predicted[method]]))
            rows.append(EvalRow(method, name, float(pk_mean), float(wd_mean), count, len(samples)))
        if progress:
            progress(name)
    return rows
