"""Segmentation with a model: plumbing on the tiny random BERT, the boundary itself on minilm, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from attnsim.cli import app
from attnsim.model.kernels import split_heads
from attnsim.model.loading import load_model
from attnsim.model.taps import head_taps
from attnsim.segment.evaluate import METHODS, SUBSETS, evaluate
from attnsim.segment.features import plan_windows, sentence_vectors
from attnsim.segment.segmenter import SegmentConfig, Segmenter

VOLCANO = (
    "The volcano erupted shortly after dawn on Tuesday. Ash clouds rose more than ten kilometres into the sky. "
    "Lava flowed down the northern slope toward two villages. Geologists had recorded hundreds of small tremors "
    "during the previous week. Authorities evacuated about four thousand residents from the area. "
    "Flights across the region were cancelled because of the ash."
)
FOOTBALL = (
    "The home team won the cup final by three goals to one. Their striker scored twice in the first half. "
    "The visitors pulled a goal back from a penalty after the break. A late header sealed the victory in "
    "stoppage time. The coach praised his players for their discipline and effort. "
    "Thousands of fans celebrated in the city centre until midnight."
)


@pytest.fixture(scope="module")
def tiny(tiny_bert):
    return load_model(tiny_bert)


def _reference(loaded, window: list[str], heads, kind: str) -> np.ndarray:
    """Per-sentence sums of head outputs, the slow way: one unpadded window, token by token."""
    tok = loaded.tokenizer
    ids = [tok(s, add_special_tokens=False)["input_ids"] for s in window]
    row = [tok.cls_token_id, *(i for sentence_ids in ids for i in sentence_ids), tok.sep_token_id]
    z = {}
    with torch.inference_mode(), head_taps(loaded, lambda taps: z.__setitem__(taps.layer, taps.z)):
        loaded.model(input_ids=torch.tensor([row]))
    out = np.zeros((len(window), len(heads), loaded.head_size))
    pos = 1
    for s, sentence_ids in enumerate(ids):
        for _ in sentence_ids:
            for p, (layer, head) in enumerate(heads):
                v = split_heads(z[layer], loaded.n_heads)[0, head, pos].double()
                out[s, p] += (v / v.norm() if kind == "cosine" else v).numpy()
            pos += 1
    return out


@pytest.mark.parametrize("kind", ["cosine", "dot"])
def test_sentence_vectors_match_one_window_per_sentence(tiny, kind):
    sentences = ["A short one.", "This sentence is a good deal longer than the first one was.", "Mid length here, ok?"]
    heads = [(1, 3), (0, 0), (1, 0)]
    got = sentence_vectors(tiny, [sentences, sentences[::-1]], heads, kind=kind, batch_tokens=40)  # padded batches
    for s, text in enumerate(sentences):
        np.testing.assert_allclose(got[0][s], _reference(tiny, [text], heads, kind)[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got[1], got[0][::-1], rtol=1e-5, atol=1e-6)  # independent of the text


def test_windowed_vectors_come_from_the_most_central_window(tiny):
    sentences = [f"Sentence number {i} talks about topic {i % 3} at some length." for i in range(9)]
    heads = [(1, 1), (1, 2)]
    lengths = [len(tiny.tokenizer(s, add_special_tokens=False)["input_ids"]) for s in sentences]
    plan = plan_windows(lengths, 64 - 2)
    assert plan[0][0] == 0 and plan[-1][1] == 9 and all(b > a for a, b in plan)
    assert all(a2 < b1 for (_, b1), (a2, _) in zip(plan, plan[1:])), "consecutive windows must overlap"
    got = sentence_vectors(tiny, [sentences], heads, kind="cosine", window=64)[0]
    for s in range(9):
        # the window giving sentence s the most tokens on its shorter side
        def context(w, s=s):
            a, b = w
            before = sum(lengths[a:s])
            return min(before, sum(lengths[a:b]) - before - lengths[s]) if a <= s < b else -1

        a, b = max(plan, key=context)
        want = _reference(tiny, sentences[a:b], heads, "cosine")[s - a]
        np.testing.assert_allclose(got[s], want, rtol=1e-4, atol=1e-5)


def test_minilm_finds_the_boundary_between_unrelated_halves():
    seg = Segmenter(load_model("minilm"))
    text = VOLCANO + " " + FOOTBALL
    cut = len(VOLCANO)
    two = seg.segment_text(text, n_segments=2)
    assert [(p.start, p.end) for p in two] == [(0, cut), (cut + 1, len(text))]
    assert two[0].last_sentence == 5
    free = seg.segment_text(text)  # data-driven cutoff
    assert 5 in [p.last_sentence for p in free[:-1]]
    scores = seg.scores([[text[a:b] for a, b in seg.splitter.spans(text)]])[0]
    assert int(np.argmin(scores)) == 5, "the gap between the documents should be the least cohesive"


def test_cli_writes_segments_with_character_offsets(tiny_bert, tmp_path):
    text = VOLCANO + "\n\n" + FOOTBALL
    path = tmp_path / "two.txt"
    path.write_text(text)
    out = tmp_path / "segments.jsonl"
    r = CliRunner().invoke(app, ["segment", str(path), "--model", tiny_bert, "--jsonl", str(out), "--segments", "3"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["index"] for row in rows] == [0, 1, 2]
    assert all(text[row["start"] : row["end"]] == row["text"] for row in rows)
    assert rows[0]["first_sentence"] == 0 and rows[-1]["last_sentence"] == 11
    assert all(a["last_sentence"] + 1 == b["first_sentence"] for a, b in zip(rows, rows[1:]))
    assert "--- segment 2" in r.output


def test_eval_table_on_a_small_corpus(tiny, tiny_bert, tmp_path):
    docs = [[f"Document {d} sentence {i} mentions {'apples' if d % 2 else 'rockets'} again." for i in range(12)] for d in range(12)]
    rows = evaluate(Segmenter(tiny, SegmentConfig(block=2)), docs, n_samples=2, seed=0)
    assert [(r.method, r.subset) for r in rows] == [(m, s) for s in SUBSETS for m in METHODS]
    by = {(r.method, r.subset): r for r in rows}
    for s in SUBSETS:
        assert by[(METHODS[1], s)].boundaries == 9.0  # given the count, 10 segments fit (min_segment 2)
        assert by[(METHODS[3], s)].boundaries == 9.0
        assert all(0.0 <= by[(m, s)].pk <= 1.0 and 0.0 <= by[(m, s)].windowdiff <= 1.0 for m in METHODS)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for d, sentences in enumerate(docs):
        (corpus / f"doc{d:02d}.txt").write_text(" ".join(sentences))
    r = CliRunner().invoke(app, ["segment", "--eval", "--corpus", str(corpus), "--model", tiny_bert, "--samples", "1", "--json", str(tmp_path / "t.json")])
    assert r.exit_code == 0, r.output
    assert "TextTiling" in r.output and "9-11" in r.output
    assert len(json.loads((tmp_path / "t.json").read_text())["rows"]) == len(METHODS) * len(SUBSETS)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["segment"], "give one text file"),
        (["segment", "no/such/file.txt"], "not found"),
        (["segment", "x.txt", "--heads", "7:0"], "does not exist"),
        (["segment", "x.txt", "--heads", "five"], "LAYER:HEAD"),
    ],
)
def test_user_errors_are_one_line(tiny_bert, tmp_path, monkeypatch, args, fragment):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.txt").write_text("One sentence. Two sentences.")
    r = CliRunner().invoke(app, [*args, "--model", tiny_bert])
    assert r.exit_code == 2, r.output
    assert fragment in r.output
