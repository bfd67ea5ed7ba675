"""Pieces of the report without a model: the Markdown/HTML renderer, the decay binning, the choice of
example heads and of the tokens shown, and the dataset card's licences."""

from __future__ import annotations

import base64
import io
from html.parser import HTMLParser

import numpy as np
import polars as pl
import pytest

from attnsim.report.figures import _binned
from attnsim.report.matrices import _prefix, choose_heads
from attnsim.report.render import Doc
from attnsim.store.card import card_text, corpus_licence, model_licence


def tiny_png() -> bytes:
    from matplotlib.figure import Figure

    buf = io.BytesIO()
    Figure(figsize=(1, 1)).savefig(buf, format="png")
    return buf.getvalue()


class Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.cells, self.srcs = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.srcs += [v for k, v in attrs if k in ("src", "href")]

    def handle_data(self, data):
        self.cells.append(data)


def test_markdown_and_html_escape_cells_and_embed_figures():
    png = tiny_png()
    doc = Doc("t")
    doc.table(["token", "verdict"], [["a|b", "holds"], ["<script>", "does not hold"]], classes={1: lambda v: v.replace(" ", "-")})
    doc.figure("f.png", png, "Figure 1. A caption with `code`.")
    md = doc.markdown()
    assert "| a\\|b | holds |" in md  # a pipe inside a token does not split the row
    assert "![Figure 1](f.png)" in md
    page = doc.html()
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert '<td class="does-not-hold">' in page and "<code>code</code>" in page
    parser = Collect()
    parser.feed(page)
    (src,) = parser.srcs
    assert src.startswith("data:image/png;base64,")
    assert base64.b64decode(src.split(",", 1)[1]) == png


def test_decay_bins_pool_counts_before_dividing():
    decay = pl.DataFrame(
        {
            "layer": [0] * 4,
            "head": [0] * 4,
            "distance": [1, 2, 3, 4],
            "n_high": [10, 0, 3, 1],
            "n_all": [100, 50, 10, 40],
            "p_chance": [0.05, 0.04, 0.04, 0.02],
        }
    )
    b = _binned(decay, n_bins=2)  # edges 1, 2, 5: bins {1}, {2, 3, 4}
    assert b["n_high"].to_list() == [10, 4]
    assert b["p"].to_list() == pytest.approx([0.1, 4 / 100])
    assert b["r"].to_list() == pytest.approx([10 / 5, 4 / (0.04 * 50 + 0.04 * 10 + 0.02 * 40)])  # observed / expected counts
    assert b["d"].to_list() == pytest.approx([1.0, (2 * 50 + 3 * 10 + 4 * 40) / 100])


def test_example_heads_are_the_clearest_of_each_label_then_early_and_late():
    heads = pl.DataFrame(
        {
            "layer": [0, 0, 1, 1, 2, 2],
            "head": [0, 1, 0, 1, 0, 1],
            "label": ["broad", "anchor", "anchor", "sentence", "broad", "broad"],
            "top_anchor_share": [0.1, 0.3, 0.6, 0.1, 0.1, 0.1],
            "same_sentence_enrichment": [1.0, 1.0, 1.0, 3.0, 1.2, 1.4],
            "mean_distance": [50.0, 40.0, 30.0, 10.0, 20.0, 30.0],
            "separator_share": [0.0] * 6,
            "repetition_enrichment": [1.0] * 6,
            "local_share": [0.1] * 6,
        }
    )
    # anchor: L1H0 (share 0.6), sentence: L1H1, early: L0H0 (longest), late: L2H1 (most same-sentence)
    assert choose_heads(heads) == [(0, 0), (1, 0), (1, 1), (2, 1)]
    assert choose_heads(heads, n=2) == [(1, 0), (1, 1)]


def test_tokens_shown_end_at_a_sentence_boundary():
    sid = np.array([-1, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, -1])
    assert _prefix(sid, 20) == 12  # short window: all of it
    assert _prefix(sid, 8) == 7  # cut before sentence 2 starts
    assert _prefix(np.array([-1] + [0] * 30), 10) == 10  # no boundary late enough: plain cut


def test_card_states_licences_it_knows_and_leaves_the_rest_to_the_user(tmp_path):
    assert "Apache-2.0" in model_licence({"name": "minilm"})
    assert "LGPL-2.1" in corpus_licence({"spec": "lee"})
    assert "user's to state" in model_licence({"name": "./mine", "source": str(tmp_path)})
    assert "user's to state" in corpus_licence({"spec": "texts/*.txt"})
    (tmp_path / "README.md").write_text("---\nlanguage: en\nlicense: mit\n---\n# my model\n")
    assert model_licence({"name": "./mine", "source": str(tmp_path)}).startswith("mit")


def test_card_lists_every_array_with_dims_and_dtype():
    attrs = {
        "model": {"name": "minilm", "model_type": "bert", "layers": 6, "heads": 12, "head_size": 32, "weights_sha256": "ab"},
        "corpus": {"spec": "lee", "documents": 300, "windows": 428, "tokens": 74036, "fingerprint": "cd"},
        "windows": {"max_tokens": 256, "sentence_separator": "none", "splitter": "pysbd"},
        "similarity_kind": "dot",
        "k": 8,
        "tiers": ["default"],
        "windows_per_shard": 32,
        "format_version": 1,
        "mass_categories": ["cls", "sep"],
        "config": {"max_tokens": 256, "k": 8},
    }
    arrays = {"topk_index": (("window", "layer", "head", "token", "k"), (428, 6, 12, 256, 8), "int16"), "length": (("window",), (428,), "int32")}
    text = card_text(attrs, arrays, "s3://bucket/store.zarr")
    assert "| `topk_index` | window, layer, head, token, k | 428 x 6 x 12 x 256 x 8 | int16 |" in text
    assert "| `length` | window | 428 | int32 |" in text
    assert "STORE = 's3://bucket/store.zarr'" in text and "Apache-2.0" in text and "LGPL-2.1" in text
