"""Segmentation features added for real documents: pooled long sentences, per-document counts, structured eval."""

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
from attnsim.segment.devset import StructuredDoc
from attnsim.segment.evaluate import METHODS
from attnsim.segment.features import sentence_vectors
from attnsim.segment.segmenter import SegmentConfig, Segmenter
from attnsim.segment.structured import evaluate_structured, structured_samples


@pytest.fixture(scope="module")
def tiny(tiny_bert):
    return load_model(tiny_bert)


def _piece_sums(loaded, ids: list[int], heads, kind: str) -> np.ndarray:
    """Sum of u_i over one window [CLS] ids [SEP], token by token (the slow way)."""
    tok = loaded.tokenizer
    z = {}
    with torch.inference_mode(), head_taps(loaded, lambda taps: z.__setitem__(taps.layer, taps.z)):
        loaded.model(input_ids=torch.tensor([[tok.cls_token_id, *ids, tok.sep_token_id]]))
    out = np.zeros((len(heads), loaded.head_size))
    for pos in range(1, len(ids) + 1):
        for p, (layer, head) in enumerate(heads):
            v = split_heads(z[layer], loaded.n_heads)[0, head, pos].double()
            out[p] += (v / v.norm() if kind == "cosine" else v).numpy()
    return out


@pytest.mark.parametrize("kind", ["cosine", "dot"])
def test_long_sentence_is_encoded_in_pieces_and_pooled(tiny, kind):
    long = " ".join(f"word{i}" for i in range(30)) + "."
    ids = tiny.tokenizer(long, add_special_tokens=False)["input_ids"]
    cap = 16 - 2  # max_tokens 16: pieces of 14 tokens
    assert len(ids) > 2 * cap
    heads = [(0, 1), (1, 2)]
    got = sentence_vectors(tiny, [[long, "Short."]], heads, kind=kind, max_tokens=16)[0]
    want = sum(_piece_sums(tiny, ids[i : i + cap], heads, kind) for i in range(0, len(ids), cap))
    np.testing.assert_allclose(got[0], want, rtol=1e-4, atol=1e-5)
    first_only = _piece_sums(tiny, ids[:cap], heads, kind)
    assert not np.allclose(got[0], first_only, atol=1e-3), "only the first piece was counted"
    # window mode: the pieces are packed like sentences and pooled back to one row per sentence
    windowed = sentence_vectors(tiny, [[long, "Short."]], heads, kind=kind, window=64)[0]
    assert windowed.shape == (2, len(heads), tiny.head_size) and np.all(np.isfinite(windowed))


def test_per_document_counts_in_one_call(tiny_bert, tmp_path):
    sentences = [f"Sentence {i} is about item {i}." for i in range(12)]
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("\n".join(json.dumps({"text": " ".join(sentences), "n": k}) for k in (2, 3, 5)))
    out = tmp_path / "seg.jsonl"
    r = CliRunner().invoke(app, ["segment", "--corpus", str(corpus), "--segments-column", "n", "--model", tiny_bert, "--jsonl", str(out)])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [sum(row["doc_id"] == d for row in rows) for d in range(3)] == [2, 3, 5]
    r = CliRunner().invoke(app, ["segment", "x.txt", "--segments-column", "n", "--model", tiny_bert])
    assert r.exit_code == 2 and "--segments-column" in r.output


def test_structured_eval_on_a_user_corpus(tiny, tiny_bert, tmp_path):
    topics = ["apples", "rockets", "rivers", "violins"]
    docs = [StructuredDoc(f"d{d}", [" ".join(f"Part {t} sentence {i} mentions {t} again." for i in range(5)) for t in topics[d % 2 :]]) for d in range(4)]
    samples = structured_samples(docs, Segmenter(tiny).splitter)
    assert all(s.boundaries == [4, 9, 14][: len(s.boundaries)] and len(s.boundaries) in (2, 3) for s in samples)
    rows = evaluate_structured(Segmenter(tiny, SegmentConfig(block=2)), samples, name="mine")
    assert [r.method for r in rows] == list(METHODS)
    given = rows[1]
    assert given.boundaries == np.mean([len(s.boundaries) for s in samples])
    assert all(0 <= r.pk <= 1 and 0 <= r.windowdiff <= 1 for r in rows)
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(json.dumps({"name": d.name, "parts": d.sections}) for d in docs))
    r = CliRunner().invoke(
        app, ["segment", "--eval", "--corpus", str(path), "--segments-column", "parts", "--model", tiny_bert, "--json", str(tmp_path / "t.json")]
    )
    assert r.exit_code == 0, r.output
    saved = json.loads((tmp_path / "t.json").read_text())
    assert len(saved["documents"]) == 4 and [row["method"] for row in saved["rows"]] == list(METHODS)
    assert saved["truth_boundaries"] == 2.5
    r = CliRunner().invoke(app, ["segment", "--eval", "--segments-column", "parts", "--model", tiny_bert])
    assert r.exit_code == 2 and "needs --corpus" in r.output


def test_penalty_cutoff_from_the_command_line(tiny_bert, tmp_path):
    topics = ["apples", "rockets", "rivers"]
    path = tmp_path / "docs.jsonl"
    parts = [" ".join(f"Part {t} sentence {i} mentions {t} again." for i in range(5)) for t in topics]
    path.write_text(json.dumps({"name": "d0", "parts": parts}) + "\n")
    args = ["segment", "--eval", "--corpus", str(path), "--segments-column", "parts", "--model", tiny_bert]
    r = CliRunner().invoke(app, [*args, "--cutoff", "penalty:0.5"])
    assert r.exit_code == 0, r.output
    assert "penalty 0.5 · ln(sentences)" in " ".join(r.output.split())
    r = CliRunner().invoke(app, [*args, "--cutoff", "penalty:x"])
    assert r.exit_code != 0 and "penalty:WEIGHT" in r.output
