"""Split documents into sentences and pack whole sentences into model windows.

Pure functions over text and a fast tokenizer: no Ray, no store. The document is tokenised once
(so the windows' tokens, in order, are exactly the document's tokenisation), then each token gets
the sentence its first character falls in, and whole sentences are packed greedily into windows
``[CLS] s1 s2 ... [SEP]`` of at most ``max_tokens``. A sentence longer than a window is cut into
pieces that keep its sentence id. No token is dropped or duplicated.

Example::

    packer = WindowPacker(tokenizer, max_tokens=256)
    rows = packer.pack(doc_id=0, text="One sentence. Another one.")
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

# pysbd's cost grows quickly with block length; paragraphs longer than this are cut before
# splitting, at the last sentence-like boundary (see _LIKELY_END) in their second half.
MAX_SPLIT_BLOCK = 10_000
# pysbd can run away on an unbalanced quote or apostrophe and return thousands of characters as one
# "sentence"; a sentence longer than this is re-split at every sentence-like boundary inside it.
MAX_SENTENCE_CHARS = 500
_PARAGRAPH = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"[.!?;\u2026\u3002\uff01\uff1f]")
# A likely sentence end: . ! ? or … (then closing quotes/brackets), whitespace, then an opening
# quote/bracket or not, and a capital letter or digit; but not after a single letter ("J. Smith")
# or a common abbreviation ("e.g. Foo", "Mr. Smith"), which `_likely_ends` checks.
_LIKELY_END = re.compile(r"[.!?\u2026][\"'\u201d\u2019)\]]*(?=\s+[\"'\u201c\u2018(\[]*[A-Z0-9])")
_WORD_BEFORE = re.compile(r"(\w+(?:\.\w+)*)$")
_ABBREVIATIONS = {"mr", "ms", "mrs", "dr", "st", "vs", "etc", "e.g", "i.e", "no", "fig", "cf", "approx", "ca"}


class SentenceSplitter:
    """Character spans of sentences, by pysbd (rule-based, offline, keeps the original text)."""

    def __init__(self, language: str = "en"):
        import pysbd

        self._segmenter = pysbd.Segmenter(language=language, clean=False, char_span=False)

    def spans(self, text: str) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        for start, end in _blocks(text):
            block = text[start:end]
            if not _SENTENCE_END.search(block):  # nothing can end a sentence: one sentence
                out.append((start, end))
                continue
            pos = 0
            for sentence in self.sentences(block):
                piece = sentence.strip()
                found = block.find(piece, pos) if piece else -1
                if found < 0:
                    continue
                out += _resplit(text, start + found, start + found + len(piece))
                pos = found + len(piece)
        return out

    def sentences(self, block: str) -> list[str]:
        """pysbd's sentences of a block, as they stand before its `segment` looks each one up in
        the text: that look-up is a regex search from the text's start per sentence (quadratic in
        the block; a quarter of prepare's time on lee), and `spans` does it with one forward `find`
        each instead. A sentence the splitter altered is then not found and is dropped, as
        `segment` drops it (its text stays with the sentence before): the same spans as through
        `segment` on 821 documents (benchmarks/RESULTS.md)."""
        return self._segmenter.processor(block).process()


def _likely_ends(text: str, start: int, end: int) -> list[int]:
    """Offsets just after each sentence-like end inside text[start:end] (not at its very end)."""
    out = []
    for m in _LIKELY_END.finditer(text, start, end):
        word = _WORD_BEFORE.search(text, max(start, m.start() - 12), m.start())
        if m.end() < end and not (word and (len(word[1]) == 1 or word[1].lower() in _ABBREVIATIONS)):
            out.append(m.end())
    return out


def _resplit(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """A span as one sentence, or, when longer than MAX_SENTENCE_CHARS, cut at its likely ends."""
    if end - start <= MAX_SENTENCE_CHARS:
        return [(start, end)]
    out = []
    for cut in _likely_ends(text, start, end):
        out.append((start, cut))
        start = cut + len(text[cut:end]) - len(text[cut:end].lstrip())  # the next sentence's first character
    out.append((start, end))
    return out


def _blocks(text: str) -> list[tuple[int, int]]:
    """Paragraphs of at most MAX_SPLIT_BLOCK characters, as (start, end) spans without whitespace ends.

    A longer paragraph is cut after the last likely sentence end in its second half; only a stretch
    of MAX_SPLIT_BLOCK // 2 characters with no such end (a list or code, not prose) is cut at a space.
    """
    spans = []
    start = 0
    for m in _PARAGRAPH.finditer(text):
        spans.append((start, m.start()))
        start = m.end()
    spans.append((start, len(text)))
    out = []
    for a, b in spans:
        while b - a > MAX_SPLIT_BLOCK:
            ends = _likely_ends(text, a + MAX_SPLIT_BLOCK // 2, a + MAX_SPLIT_BLOCK)
            cut = ends[-1] if ends else text.rfind(" ", a + MAX_SPLIT_BLOCK // 2, a + MAX_SPLIT_BLOCK)
            cut = cut if cut > a else a + MAX_SPLIT_BLOCK
            out.append((a, cut))
            a = cut
        out.append((a, b))
    return [(a + len(text[a:b]) - len(text[a:b].lstrip()), b) for a, b in out if text[a:b].strip()]


@dataclass
class WindowRows:
    """Packed windows of some documents, unpadded: one list entry per window."""

    input_ids: list[np.ndarray] = field(default_factory=list)  # (n,) int32 incl. specials
    sentence_id: list[np.ndarray] = field(default_factory=list)  # (n,) int32, -1 = special
    char_span: list[np.ndarray] = field(default_factory=list)  # (n, 2) int64, -1 = special
    doc_id: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.doc_id)

    def extend(self, other: "WindowRows") -> None:
        self.input_ids += other.input_ids
        self.sentence_id += other.sentence_id
        self.char_span += other.char_span
        self.doc_id += other.doc_id

    def to_arrays(self, max_tokens: int) -> dict[str, np.ndarray]:
        """Pad to (W, max_tokens) with -1: the store's token arrays."""
        w = len(self)
        ids = np.full((w, max_tokens), -1, np.int32)
        sid = np.full((w, max_tokens), -1, np.int32)
        span = np.full((w, max_tokens, 2), -1, np.int64)
        length = np.zeros(w, np.int32)
        for r in range(w):
            n = len(self.input_ids[r])
            ids[r, :n], sid[r, :n], span[r, :n], length[r] = self.input_ids[r], self.sentence_id[r], self.char_span[r], n
        return {
            "input_ids": ids,
            "sentence_id": sid,
            "char_span": span,
            "doc_id": np.asarray(self.doc_id, np.int64),
            "length": length,
        }


class WindowPacker:
    def __init__(self, tokenizer, max_tokens: int = 256, sentence_separator: str = "none", splitter=None):
        if tokenizer.cls_token_id is None or tokenizer.sep_token_id is None:
            raise ValueError("the tokenizer has no [CLS]/[SEP] tokens; attnsim needs a BERT-family tokenizer")
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.separator = sentence_separator == "sep"
        self.splitter = splitter or SentenceSplitter()
        self.cls, self.sep = tokenizer.cls_token_id, tokenizer.sep_token_id

    def tokenize(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """The document's tokenisation: ids (n,) and character offsets (n, 2)."""
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        ids = np.asarray(enc["input_ids"], np.int32)
        offsets = np.asarray(enc["offset_mapping"], np.int64).reshape(-1, 2)
        return ids, offsets

    def pack(self, doc_id: int, text: str) -> WindowRows:
        ids, offsets = self.tokenize(text)
        rows = WindowRows()
        if len(ids) == 0:
            return rows
        spans = self.splitter.spans(text) or [(0, len(text))]
        starts = np.asarray([a for a, _ in spans], np.int64)
        # A token belongs to the sentence its first character falls in (tokens before the first
        # sentence, e.g. leading symbols the splitter skipped, join sentence 0).
        sentence = np.clip(np.searchsorted(starts, offsets[:, 0], side="right") - 1, 0, None).astype(np.int32)
        bounds = np.flatnonzero(np.diff(sentence)) + 1
        pieces = np.split(np.arange(len(ids)), bounds)  # token positions of each sentence

        capacity = self.max_tokens - 2  # room between [CLS] and [SEP]
        current: list[np.ndarray] = []
        used = 0

        def flush():
            nonlocal current, used
            if current:
                self._emit(rows, doc_id, current, ids, offsets, sentence)
            current, used = [], 0

        for positions in pieces:
            cost = len(positions) + (1 if self.separator and current else 0)
            if used + cost <= capacity:
                current.append(positions)
                used += cost
                continue
            flush()
            while len(positions) > capacity:  # a sentence longer than a window: cut it
                current = [positions[:capacity]]
                flush()
                positions = positions[capacity:]
            current, used = [positions], len(positions)
        flush()
        return rows

    def _emit(self, rows, doc_id, groups, ids, offsets, sentence) -> None:
        parts_ids, parts_sid, parts_span = [[self.cls]], [[-1]], [np.full((1, 2), -1, np.int64)]
        for n, positions in enumerate(groups):
            if n and self.separator:
                parts_ids.append([self.sep])
                parts_sid.append([-1])
                parts_span.append(np.full((1, 2), -1, np.int64))
            parts_ids.append(ids[positions])
            parts_sid.append(sentence[positions])
            parts_span.append(offsets[positions])
        parts_ids.append([self.sep])
        parts_sid.append([-1])
        parts_span.append(np.full((1, 2), -1, np.int64))
        rows.input_ids.append(np.concatenate(parts_ids).astype(np.int32))
        rows.sentence_id.append(np.concatenate(parts_sid).astype(np.int32))
        rows.char_span.append(np.concatenate(parts_span))
        rows.doc_id.append(doc_id)
        assert len(rows.input_ids[-1]) <= self.max_tokens, "window longer than max_tokens"
