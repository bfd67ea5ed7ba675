"""Evaluate segmentation on real structured documents: their sections are the truth.

A document is a list of section texts (`attnsim.segment.devset.StructuredDoc`). The sections are
joined with single spaces and split into sentences exactly as `attnsim segment` would split the
text, so a sentence may run across a section end when a section does not end in punctuation. A
true boundary goes after the last sentence that starts before each section's first character.

The methods and metrics are those of the Choi-style evaluation (`attnsim.segment.evaluate`): Pk and
WindowDiff at the sentence level with k = half the mean true segment length, averaged over documents.

Example::

    samples = structured_samples(structured_documents("dev"), SentenceSplitter())
    rows = evaluate_structured(segmenter, samples, name="dev")
"""

from __future__ import annotations

import numpy as np

from attnsim.errors import UserError
from attnsim.segment.evaluate import METHODS, EvalRow, Sample, make_texttiling, pk_windowdiff, random_boundaries, texttiling_boundaries


def structured_sample(sections: list[str], splitter, name: str = "") -> Sample:
    """The joined text's sentences and the gaps after which a true section ends."""
    text = " ".join(sections)
    spans = splitter.spans(text)
    starts = np.asarray([a for a, _ in spans], np.int64)
    section_starts = np.cumsum([len(s) + 1 for s in sections])[:-1]  # +1: the joining space
    gaps = np.searchsorted(starts, section_starts, side="left") - 1  # last sentence starting before
    boundaries = sorted({int(g) for g in gaps if 0 <= g < len(spans) - 1})
    return Sample([" ".join(text[a:b].split()) for a, b in spans], boundaries, name=name)


def structured_samples(docs, splitter, *, limit: int | None = None) -> list[Sample]:
    """One sample per document with at least two sentences; ``limit`` keeps the first documents."""
    out = []
    for doc in docs:
        sample = structured_sample(doc.sections, splitter, doc.name)
        if len(sample.sentences) >= 2:
            out.append(sample)
        if limit and len(out) >= limit:
            break
    if not out:
        raise UserError("no document has two sentences or more; give documents with longer sections")
    return out


def predictions(segmenter, samples: list[Sample], profiles, seed: int) -> dict[str, list[list[int]]]:
    """Each method's predicted gaps for each sample (methods in METHODS order); profiles: `Segmenter.profiles`."""
    rng = np.random.default_rng([seed, 99])
    tiler = make_texttiling()
    return {
        METHODS[0]: [segmenter.choose(c, None, v) for c, v in profiles],
        METHODS[1]: [segmenter.choose(c, len(s.boundaries) + 1) for (c, _), s in zip(profiles, samples)],
        METHODS[2]: [texttiling_boundaries(s.sentences, tiler) for s in samples],
        METHODS[3]: [random_boundaries(len(s.sentences), len(s.boundaries), rng) for s in samples],
    }


def evaluate_structured(segmenter, samples: list[Sample], *, name: str, seed: int = 0) -> list[EvalRow]:
    """One row per method: mean Pk, WindowDiff and predicted boundaries over the documents."""
    profiles = segmenter.profiles([s.sentences for s in samples])
    rows = []
    for method, predicted in predictions(segmenter, samples, profiles, seed).items():
        scores = [pk_windowdiff(len(s.sentences), s.boundaries, p) for s, p in zip(samples, predicted)]
        pk_mean, wd_mean = np.mean(scores, 0)
        count = float(np.mean([len(p) for p in predicted]))
        rows.append(EvalRow(method, name, float(pk_mean), float(wd_mean), count, len(samples)))
    return rows
