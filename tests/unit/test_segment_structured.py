"""Structured documents without a model: heading parsing, truth boundaries, the built-in sets, user corpora."""

from __future__ import annotations

import json

import pytest

from attnsim.errors import UserError
from attnsim.prepare.windows import SentenceSplitter
from attnsim.segment import devset
from attnsim.segment.corpus import read_counted, read_structured, write_jsonl
from attnsim.segment.devset import StructuredDoc, document_from, sections_of, split_of, structured_documents
from attnsim.segment.structured import structured_sample, structured_samples

PROSE = "This paragraph is long enough to count as prose in a section. " * 4  # 252 characters

MARKDOWN = f"""<p align="center"><img src="logo.svg"></p>

# Title

{PROSE}

## Install

```bash
pip install thing
```

## Usage

{PROSE}
    indented_code = 1
* A **bold** [link](https://x.y) item.

### Details

{PROSE}

| table | row |

## Changelog

{PROSE}
"""

REST = f"""Title
=====

{PROSE}

Usage
-----

{PROSE}

Example::

    code()

Sub part
~~~~~~~~

{PROSE}

.. image:: https://badge

Other
-----

{PROSE}
"""


def test_markdown_sections_levels_and_cleaning():
    got = sections_of(MARKDOWN, markdown=True)
    assert [(level, heading) for level, heading, _ in got] == [(0, ""), (1, "Title"), (2, "Install"), (2, "Usage"), (3, "Details"), (2, "Changelog")]
    usage = got[3][2]
    assert usage == " ".join(PROSE.split()) + " A bold link item."  # code, markup and markers gone
    assert got[0][2] == "" and got[2][2] == ""  # HTML-only preamble; a fenced block only


def test_rest_levels_follow_first_use_of_each_underline():
    got = sections_of(REST, markdown=False)
    assert [(level, heading) for level, heading, _ in got] == [(0, ""), (1, "Title"), (2, "Usage"), (3, "Sub part"), (2, "Other")]
    assert got[2][2].endswith("prose in a section. Example:")  # the literal block is dropped, its lead kept


def test_document_keeps_prose_sections_and_stops_at_the_changelog():
    fine = document_from("x", MARKDOWN, markdown=True)
    # Title, Usage, Details (Install is empty, Changelog ends the document)
    assert fine is not None and len(fine.sections) == 3
    coarse = document_from("x", MARKDOWN, markdown=True, coarse=True)
    # level 1 gives one section (Title holds everything), level 2 gives Usage+Details joined... too
    # few with Install dropped, so the finest level that reaches 3 sections is used: level 3.
    assert coarse is not None and coarse.sections == fine.sections
    assert document_from("y", f"# A\n\n{PROSE}\n\n# B\n\n{PROSE}\n", markdown=True) is None  # 2 sections


def test_coarse_joins_subsections_into_their_parent():
    text = "".join(f"# Part {p}\n\n{PROSE}\n\n## Sub {p}\n\n{PROSE}\n\n" for p in range(3))
    coarse = document_from("z", text, markdown=True, coarse=True)
    one = " ".join(PROSE.split())
    assert coarse is not None and coarse.sections == [f"{one} {one}"] * 3
    assert len(document_from("z", text, markdown=True).sections) == 6


def test_split_is_a_stable_hash_of_the_name():
    import hashlib

    for name in ("pkg:typer", "wiki:Achilles", "pydoc:try"):
        assert split_of(name) == ("dev", "test")[hashlib.sha1(name.encode()).digest()[0] % 2]


def test_truth_boundaries_follow_section_starts():
    sections = ["One here. Two here.", "Three here.", "Four here. Five here. Six here."]
    sample = structured_sample(sections, SentenceSplitter(), "d")
    assert sample.sentences == ["One here.", "Two here.", "Three here.", "Four here.", "Five here.", "Six here."]
    assert sample.boundaries == [1, 2]
    # A section without final punctuation runs into the next sentence: the merged sentence starts in
    # the earlier section, so the boundary goes after it.
    merged = structured_sample(["Alpha one. Beta two", "gamma three. Delta four."], SentenceSplitter())
    assert merged.sentences == ["Alpha one.", "Beta two gamma three.", "Delta four."] and merged.boundaries == [1]


def test_builtin_sets_exist_offline_and_do_not_overlap():
    dev, test = structured_documents("packages:dev"), structured_documents("packages:test")
    assert dev and test and not {d.name for d in dev} & {d.name for d in test}
    for doc in dev + test:
        assert len(doc.sections) >= devset.MIN_SECTIONS
        assert all(len(s) >= devset.MIN_SECTION_CHARS and s == " ".join(s.split()) for s in doc.sections)
    with pytest.raises(UserError, match="wiki:dev"):
        structured_documents("wiki:train")


def test_wiki_documents_have_level_two_sections():
    docs = devset.wiki_documents()
    assert len(docs) >= 60  # gensim's shortened dump holds about 100 articles
    achilles = next(d for d in docs if d.name == "wiki:Achilles")
    assert len(achilles.sections) >= 5 and "==" not in achilles.text and "[[" not in achilles.text
    assert all(len(structured_sample(d.sections[:2], SentenceSplitter()).boundaries) == 1 for d in docs[:5])


def test_user_corpora_round_trip_and_errors(tmp_path):
    docs = [StructuredDoc("a", ["First part. Still first.", "Second part."]), StructuredDoc("b", ["Only one."])]
    path = tmp_path / "docs.jsonl"
    write_jsonl(docs, str(path))
    assert read_structured(str(path), "sections") == docs
    samples = structured_samples(read_structured(str(path), "sections"), SentenceSplitter())
    assert [s.name for s in samples] == ["a"] and samples[0].boundaries == [1]  # "b" has one sentence
    counted = tmp_path / "counted.jsonl"
    counted.write_text("\n".join(json.dumps(r) for r in [{"text": "A. B.", "n": 2}, {"text": "C.", "n": ["x", "y", "z"]}]))
    assert read_counted(str(counted), "text", "n") == [("1", "A. B.", 2), ("2", "C.", 3)]
    with pytest.raises(UserError, match="not a segment count"):
        counted.write_text(json.dumps({"text": "A.", "n": 0}))
        read_counted(str(counted), "text", "n")
    with pytest.raises(UserError, match="no 'sections' field"):
        read_structured(str(counted), "sections")
    with pytest.raises(UserError, match="not an existing"):
        read_structured(str(tmp_path / "missing.jsonl"), "sections")
