"""Sentence splitting and window packing: no token lost or duplicated, every window fits."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import DOCS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attnsim.model.loading import load_tokenizer
from attnsim.prepare import windows
from attnsim.prepare.windows import SentenceSplitter, WindowPacker


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("minilm")


def content_tokens(rows, packer):
    """The windows' tokens in order without the specials the packer added."""
    ids, sids = [], []
    for w_ids, w_sid in zip(rows.input_ids, rows.sentence_id):
        keep = w_sid >= 0
        ids.extend(w_ids[keep].tolist())
        sids.extend(w_sid[keep].tolist())
    return ids, sids


def check_packing(packer, text, doc_id=7):
    rows = packer.pack(doc_id, text)
    expected, _ = packer.tokenize(text)
    ids, sids = content_tokens(rows, packer)
    assert ids == expected.tolist(), "windows' tokens must equal the document's tokenisation"
    assert sids == sorted(sids), "sentence ids increase through the document"
    for w_ids, w_sid, span in zip(rows.input_ids, rows.sentence_id, rows.char_span):
        assert len(w_ids) <= packer.max_tokens
        assert w_ids[0] == packer.cls and w_ids[-1] == packer.sep
        assert w_sid[0] == -1 and w_sid[-1] == -1
        real = w_sid >= 0
        assert (span[real, 0] < span[real, 1]).all() or not real.any()
    assert set(rows.doc_id) <= {doc_id}
    return rows


@pytest.mark.parametrize("max_tokens", [8, 16, 64, 256])
@pytest.mark.parametrize("separator", ["none", "sep"])
def test_every_token_lands_in_one_window(tokenizer, max_tokens, separator):
    packer = WindowPacker(tokenizer, max_tokens=max_tokens, sentence_separator=separator)
    for text in DOCS:
        check_packing(packer, text)


def test_whole_sentences_are_packed_greedily(tokenizer):
    packer = WindowPacker(tokenizer, max_tokens=20)
    text = "One two three. Four five six. Seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen."
    rows = check_packing(packer, text)
    # sentences of 4, 4 and 11 tokens (with the full stop): the first two share a window (8 + 2
    # specials); the third would make 19 + 2 > 20, so it gets its own (11 + 2 = 13).
    assert [len(r) for r in rows.input_ids] == [10, 13]
    assert rows.sentence_id[0].tolist() == [-1, 0, 0, 0, 0, 1, 1, 1, 1, -1]


def test_separator_tokens_between_sentences(tokenizer):
    packer = WindowPacker(tokenizer, max_tokens=64, sentence_separator="sep")
    rows = check_packing(packer, "One two. Three four. Five.")
    ids = rows.input_ids[0]
    assert (ids == tokenizer.sep_token_id).sum() == 3  # two between sentences, one at the end


def test_long_sentence_is_cut_and_keeps_its_id(tokenizer):
    packer = WindowPacker(tokenizer, max_tokens=10)
    text = " ".join(f"word{i}" for i in range(30)) + "."
    rows = check_packing(packer, text)
    assert len(rows) > 3
    assert all(set(s[s >= 0].tolist()) == {0} for s in rows.sentence_id)


def test_char_spans_map_back_to_text(tokenizer):
    packer = WindowPacker(tokenizer, max_tokens=32)
    text = DOCS[1]
    rows = packer.pack(0, text)
    for ids, span in zip(rows.input_ids, rows.char_span):
        for tok, (a, b) in zip(tokenizer.convert_ids_to_tokens(ids.tolist()), span):
            if a >= 0:
                assert text[a:b].lower() == tok.removeprefix("##").lower()


def test_splitter_spans_cover_sentences():
    text = "Dr. Smith arrived at 4:00 p.m. today. He said hello!  Then he left?"
    spans = SentenceSplitter().spans(text)
    assert [text[a:b] for a, b in spans] == ["Dr. Smith arrived at 4:00 p.m. today.", "He said hello!", "Then he left?"]


def test_huge_document_without_boundaries_is_split_in_blocks(tokenizer):
    packer = WindowPacker(tokenizer, max_tokens=256)
    text = "lorem ipsum " * 20_000  # 240k characters, no sentence end, no paragraph
    rows = packer.pack(0, text)
    assert sum(len(s[s >= 0]) for s in rows.sentence_id) == len(packer.tokenize(text)[0])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=st.text(alphabet=st.sampled_from(list("abc XYZ.!?,\n\u00e9\u2603\t0123")), min_size=0, max_size=400),
    max_tokens=st.integers(min_value=3, max_value=40),
    separator=st.sampled_from(["none", "sep"]),
)
def test_property_no_token_lost_or_duplicated(tokenizer, text, max_tokens, separator):
    packer = WindowPacker(tokenizer, max_tokens=max_tokens, sentence_separator=separator)
    rows = check_packing(packer, text)
    if rows.input_ids:
        positions = np.concatenate([s[:, 0][s[:, 0] >= 0] for s in rows.char_span])
        assert len(positions) == len(np.unique(positions)), "a token appears twice"


def _sentences(n: int, offset: int = 0) -> list[str]:
    """n distinct ordinary sentences (about 60 characters each), so every sentence end is known."""
    towns = ["Ames", "Bath", "Cork", "Derby", "Ely", "Fife", "Galway"]
    return [f"Sentence number {offset + i} talks about the weather in {towns[i % 7]}." for i in range(n)]


def test_long_paragraph_is_never_cut_mid_sentence():
    # 400 sentences joined by single spaces (about 24k characters, no paragraph break): the blocks
    # handed to pysbd must start at sentence starts, so every expected sentence comes back whole.
    sentences = _sentences(400)
    text = " ".join(sentences)
    assert len(text) > 2 * windows.MAX_SPLIT_BLOCK
    spans = SentenceSplitter().spans(text)
    assert [text[a:b] for a, b in spans] == sentences
    for a, b in windows._blocks(text):
        assert a == 0 or text[a - 2 : a] == ". ", f"block starts mid-sentence at {a}"
        assert b - a <= windows.MAX_SPLIT_BLOCK


def test_runaway_sentence_is_resplit_at_sentence_ends(monkeypatch):
    # pysbd sometimes returns thousands of characters as one "sentence" after an unbalanced quote
    # (seen on CPython's help topics); simulate that by a pysbd that never splits.
    sentences = _sentences(30)
    sentences[3] = 'He wrote "hello and never closed the quote.'
    text = " ".join(sentences)
    splitter = SentenceSplitter()
    monkeypatch.setattr(splitter, "sentences", lambda block: [block])
    spans = splitter.spans(text)
    assert [text[a:b] for a, b in spans] == sentences
    short = " ".join(sentences[:5])  # under MAX_SENTENCE_CHARS: kept as pysbd returned it
    assert len(short) <= windows.MAX_SENTENCE_CHARS and splitter.spans(short) == [(0, len(short))]


def test_resplit_keeps_abbreviations_and_initials():
    text = ("x" * 480) + " see e.g. Foo and J. Smith, then the end. Next sentence starts here."
    cuts = windows._likely_ends(text, 0, len(text))
    assert [text[:c][-4:] for c in cuts] == ["end."]
    short = "A short one. Another."
    assert windows._resplit(short, 0, len(short)) == [(0, len(short))]  # under the limit: untouched


def _spans_through_segment(text: str) -> list[tuple[int, int]]:
    """The spans as `SentenceSplitter.spans` made them through pysbd's `segment` (which looks each
    sentence up in the block itself): the independent reference for its faster look-up."""
    import pysbd

    segmenter, out = pysbd.Segmenter(language="en", clean=False, char_span=False), []
    for start, end in windows._blocks(text):
        block, pos = text[start:end], 0
        if not windows._SENTENCE_END.search(block):
            out.append((start, end))
            continue
        for segment in segmenter.segment(block):
            piece = segment.strip()
            found = block.find(piece, pos) if piece else -1
            if found < 0:
                continue
            out += windows._resplit(text, start + found, start + found + len(piece))
            pos = found + len(piece)
    return out


def test_sentence_spans_equal_those_found_through_pysbds_segment():
    from pathlib import Path

    import gensim

    lee = (Path(gensim.__file__).parent / "test/test_data/lee_background.cor").read_text(errors="replace").splitlines()
    texts = [t for t in lee[:60] if t.strip()] + DOCS
    texts.append(
        'Mr. Smith met Dr. J. Doe at 5 p.m. today... "Really?" he asked. (Yes.) It\'s fine!\n\n'
        "He said: 'no.' Then he left. e.g. this one. 3.5 percent rose. U.S. officials said so. The end"
    )
    texts.append("Again. Again. Again. Again. Again.")  # repeated sentences: each found after the one before
    splitter = SentenceSplitter()
    for text in texts:
        assert splitter.spans(text) == _spans_through_segment(text)
