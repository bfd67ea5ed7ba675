"""Dirty input: every per-document problem is counted and skipped or repaired, never fatal; a
problem with the whole run (a missing text column) is one UserError naming the file and the fix.

No model is loaded: packing uses minilm's tokenizer, and `prepare` gets a hand-made model
description (the store's token arrays do not depend on the weights).
"""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import zarr

from attnsim.config import RunConfig
from attnsim.errors import UserError
from attnsim.model.loading import load_tokenizer
from attnsim.prepare.sources import Problems, read_documents
from attnsim.prepare.stage import pack_partition, prepare, token_classes
from attnsim.prepare.windows import MAX_SPLIT_BLOCK, WindowPacker


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("minilm")


def read(spec, **kw):
    problems = Problems()
    docs = list(read_documents(str(spec), problems=problems, **kw))
    return docs, problems


def fake_model_info(tokenizer) -> dict:
    """What `prepare` records about a model, without loading one (token arrays need only the tokenizer)."""
    return {
        "name": "minilm",
        "source": "minilm",
        "model_type": "bert",
        "layers": 2,
        "heads": 4,
        "head_size": 8,
        "weights_sha256": "unit-test",
        "max_tokens": 512,
        "token_classes": token_classes(tokenizer),
    }


def test_empty_files_and_empty_documents_are_counted_not_fatal(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "blank.txt").write_text("  \n\t \r\n")
    (tmp_path / "empty.jsonl").write_bytes(b"")
    (tmp_path / "mixed.jsonl").write_text(json.dumps({"text": ""}) + "\n\n" + json.dumps({"text": "A real one."}) + "\n")
    (tmp_path / "good.txt").write_text("Another real document.")
    docs, problems = read(tmp_path)
    assert sorted(d.text for d in docs) == ["A real one.", "Another real document."]
    assert problems.counts == {"empty": 3, "empty_file": 1}
    assert any("empty.jsonl" in w for w in problems.examples["empty_file"])


def test_invalid_utf8_is_kept_with_replacement_binary_files_are_skipped(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("Caf\xe9 au lait. Tr\xe8s bien.".encode("latin-1"))
    (tmp_path / "image.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8)
    # A JSON escape of a lone surrogate is valid JSON but not encodable text: the tokenizer would crash.
    (tmp_path / "surrogate.jsonl").write_text('{"text": "broken \\ud800 pair here"}\n')
    docs, problems = read(tmp_path)
    assert problems.counts == {"binary": 1, "invalid_utf8": 2}
    texts = {d.name.split("/")[-1]: d.text for d in docs}
    assert texts["latin1.txt"] == "Caf\ufffd au lait. Tr\ufffds bien."
    assert texts["surrogate.jsonl:1"] == "broken \ufffd pair here"
    for text in texts.values():
        text.encode("utf-8")  # every kept document is valid text


def test_binary_and_invalid_lines_in_a_one_per_line_file(tmp_path):
    (tmp_path / "lines.txt").write_bytes(b"first line\nbad \xff\xfe bytes\nnul \x00 inside\n\nlast line\n")
    docs, problems = read(tmp_path, one_per_line=True)
    assert [d.text for d in docs] == ["first line", "bad \ufffd\ufffd bytes", "last line"]
    assert [d.doc_id for d in docs] == [0, 1, 4]  # ids count skipped documents: results map back to lines
    assert problems.counts == {"invalid_utf8": 1, "binary": 1, "empty": 1}


def test_jsonl_lines_that_are_not_json_or_have_no_text(tmp_path):
    lines = [
        json.dumps({"text": "Good one."}),
        "{not json at all",
        "[1, 2, 3]",  # JSON, but not an object
        json.dumps({"body": "wrong column"}),
        json.dumps({"text": 42}),
        b"\xff\xfe garbage".decode("latin-1"),
        json.dumps({"text": "Good two."}),
    ]
    (tmp_path / "c.jsonl").write_text("\n".join(lines) + "\n")
    docs, problems = read(tmp_path)
    assert [d.text for d in docs] == ["Good one.", "Good two."]
    assert problems.counts == {"bad_json": 2, "no_text": 3}
    assert problems.examples["bad_json"][0].endswith("c.jsonl:2")


def test_parquet_without_the_text_column_stops_the_run_with_one_clear_line(tmp_path):
    pl.DataFrame({"body": ["a", "b"]}).write_parquet(tmp_path / "data.parquet")
    with pytest.raises(UserError) as err:
        read(tmp_path / "data.parquet")
    message = str(err.value)
    assert "\n" not in message
    assert "data.parquet" in message and "'text'" in message and "body" in message and "--text-column" in message


def test_parquet_nulls_non_strings_and_damaged_files_are_counted(tmp_path):
    pl.DataFrame({"text": ["Kept text.", None, "  "]}).write_parquet(tmp_path / "a.parquet")
    pl.DataFrame({"text": [1, 2]}).write_parquet(tmp_path / "b.parquet")  # a number column named text
    (tmp_path / "c.parquet").write_bytes(b"PAR1 this is not parquet PAR1")
    pl.DataFrame({"text": pl.Series([], dtype=pl.String)}).write_parquet(tmp_path / "d.parquet")
    docs, problems = read(tmp_path)
    assert [d.text for d in docs] == ["Kept text."]
    assert problems.counts == {"no_text": 3, "empty": 1, "unreadable_file": 1, "empty_file": 1}


def test_ten_megabyte_document_without_a_sentence_boundary(tokenizer, tmp_path):
    words = "the quick brown fox jumps over a lazy dog and keeps running "  # no sentence end anywhere
    reps = 10_000_000 // len(words) + 1
    (tmp_path / "huge.txt").write_text(words * reps)
    docs, problems = read(tmp_path)
    assert len(docs) == 1 and len(docs[0].text) >= 10_000_000 and not problems.counts
    packer = WindowPacker(tokenizer, max_tokens=256)
    rows = packer.pack(0, docs[0].text)
    # Whitespace-separated words tokenise independently: the document's tokens are one period's,
    # repeated (this spares a second 10 MB tokenisation).
    period, _ = packer.tokenize(words)
    content = np.concatenate([ids[1:-1] for ids in rows.input_ids])  # without [CLS]/[SEP]
    np.testing.assert_array_equal(content, np.tile(period, reps))  # no token lost or duplicated
    assert max(len(ids) for ids in rows.input_ids) == 256
    # The splitter cuts paragraph-less text into blocks of at most MAX_SPLIT_BLOCK characters, each
    # a "sentence": windows are full except the last piece of each.
    sentences = {int(s) for sid in rows.sentence_id for s in np.unique(sid[sid >= 0])}
    assert len(sentences) >= 10_000_000 // MAX_SPLIT_BLOCK
    assert sum(len(ids) < 256 for ids in rows.input_ids) <= len(sentences)
    spans = np.concatenate([span[1:-1] for span in rows.char_span])
    assert (np.diff(spans[:, 0]) > 0).all()  # character spans map every token back, in order


def test_whitespace_and_special_character_only_documents(tokenizer, tmp_path):
    docs = [
        (0, "spaces", " \t\u00a0\u2003 \n "),  # Unicode spaces: the reader's strip() already drops it
        (1, "punct", "!!! ??? ... ;;; --- ***"),
        (2, "symbols", '@#$%^&*()_+={}[]|\\:"<>~`'),
        (3, "invisible", "\u200b\u200b\ufeff\u0001\u0002"),  # tokenises to nothing
        (4, "emoji", "\U0001f600\U0001f680\U0001f4a9"),
    ]
    for doc_id, name, text in docs:
        (tmp_path / f"{doc_id}_{name}.txt").write_text(text)
    read_docs, problems = read(tmp_path)
    assert problems.counts == {"empty": 1}
    rows, pack_problems = pack_partition((("minilm", False, 16, "none"), [(d.doc_id, d.name, d.text) for d in read_docs]))
    assert pack_problems.counts == {"no_tokens": 1}
    assert "invisible" in pack_problems.examples["no_tokens"][0]
    assert sorted(set(rows.doc_id)) == [1, 2, 4]  # the others became windows
    assert all(len(ids) <= 16 for ids in rows.input_ids)


def test_many_one_token_documents_go_through_prepare(tokenizer, tmp_path):
    """Millions in production; 20,000 here, through the same reader, packer and per-unit writes."""
    n = 20_000
    vocab = ["a", "the", "dog", "house", "water", "red", "run", "seven"]
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "tokens.txt").write_text("\n".join(vocab[i % len(vocab)] for i in range(n)) + "\n")
    cfg = RunConfig(corpus=str(tmp_path / "c"), one_per_line=True, out=str(tmp_path / "run"), max_tokens=8, windows_per_shard=4096, docs_per_partition=3000)
    result = prepare(cfg, fake_model_info(tokenizer))
    assert (result.n_documents, result.n_windows, result.n_tokens, result.problems) == (n, n, 3 * n, {})
    root = zarr.open_group(cfg.store_url, mode="r")
    np.testing.assert_array_equal(root["doc_id"][:], np.arange(n))
    assert (root["length"][:] == 3).all()
    ids = root["input_ids"][:]
    assert (ids[:, 0] == tokenizer.cls_token_id).all() and (ids[:, 2] == tokenizer.sep_token_id).all()
    assert (ids[:, 3:] == -1).all()
    assert [tokenizer.convert_ids_to_tokens(int(i)) for i in ids[:8, 1]] == vocab


def test_dirty_corpus_problems_are_stored_in_the_store_attributes(tokenizer, tmp_path):
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "good.txt").write_text("A fine document. It has two sentences.")
    (corpus / "empty.txt").write_text("")
    (corpus / "bin.txt").write_bytes(b"\x00\x01\x02binary")
    (corpus / "bad.jsonl").write_text('{"text": "Fine too."}\nnot json\n')
    (corpus / "invisible.txt").write_text("\u200b\u200b")
    cfg = RunConfig(corpus=str(corpus), out=str(tmp_path / "run"), max_tokens=16, windows_per_shard=2)
    result = prepare(cfg, fake_model_info(tokenizer))
    stored = zarr.open_group(cfg.store_url, mode="r").attrs["corpus"]["problems"]
    assert result.problems == stored
    assert {kind: v["count"] for kind, v in stored.items()} == {"binary": 1, "bad_json": 1, "empty": 1, "no_tokens": 1}
    assert stored["bad_json"]["examples"] == [f"{corpus / 'bad.jsonl'}:2"]
    assert result.n_windows >= 2  # the good documents made it
