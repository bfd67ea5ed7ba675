"""The report, the dataset API, the dataset card and `attnsim inspect` on small in-process runs of a
tiny random BERT: one run through `run_all` (default tier only: the report recomputes S with the
model) and one with the `vectors` and `dense` tiers."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import zarr
from rich.console import Console
from typer.testing import CliRunner

from attnsim.cli import app
from attnsim.config import RunConfig
from attnsim.errors import UserError
from attnsim.pipeline import run_all, stage_extract, stage_prepare, stage_reduce
from attnsim.store.dataset import OutOfRange, open_store

REPO = Path(__file__).resolve().parents[2]
FIGURES = ("distance_decay.png", "layer_statistics.png", "head_map.png", "attention_mass.png", "similarity_examples.png")


@pytest.fixture(scope="module")
def runs(tiny_bert, corpus_dir, tmp_path_factory):
    base = dict(model=tiny_bert, corpus=corpus_dir, max_tokens=32, windows_per_shard=4, batch_size=3, bootstrap=20)
    plain = RunConfig(out=str(tmp_path_factory.mktemp("plain")), **base)
    started = time.perf_counter()
    result = run_all(plain, use_ray=False)  # prepare, extract, reduce, report
    result["wall"] = time.perf_counter() - started
    dense = RunConfig(out=str(tmp_path_factory.mktemp("dense")), tiers=["default", "vectors", "dense"], **base)
    stage_prepare(dense, use_ray=False)
    stage_extract(dense, use_ray=False)
    stage_reduce(dense)
    return {"plain": plain, "dense": dense, "result": result}


def check_png(data: bytes, min_size=(500, 300)) -> None:
    from PIL import Image

    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 15_000
    Image.open(io.BytesIO(data)).verify()
    image = Image.open(io.BytesIO(data)).convert("L")
    assert image.size[0] >= min_size[0] and image.size[1] >= min_size[1], image.size
    assert np.asarray(image, float).std() > 10, "an almost uniform image"


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.imgs, self.rows, self._row = [], [], [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.links += [attrs[k] for k in ("src", "href") if k in attrs]
        if tag == "img":
            self.imgs.append(attrs["src"])
        if tag == "tr":
            self._row = []

    def handle_endtag(self, tag):
        if tag == "tr":
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._row is not None and data.strip():
            self._row.append(data.strip())


# ------------------------------------------------------------------------------------- report
def test_run_all_ends_with_the_report_and_prints_its_path(runs):
    from attnsim.report.tables import print_summary

    report = Path(runs["result"]["report"])
    assert report == Path(runs["plain"].out) / "report"
    console = Console(record=True, width=300)
    print_summary(console, runs["plain"], runs["result"])
    assert str(report) in console.export_text()


def test_run_all_times_each_stage_and_prints_the_times(runs):
    from attnsim.report.tables import print_summary

    seconds = runs["result"]["seconds"]
    assert list(seconds) == ["start", "prepare", "extract", "reduce", "report"]  # in the order they ran
    assert all(s > 0 for s in seconds.values()) and sum(seconds.values()) <= runs["result"]["wall"]
    console = Console(record=True, width=300)
    print_summary(console, runs["plain"], runs["result"])
    line = [row for row in console.export_text().splitlines() if row.startswith("time: ")]
    assert line == [
        f"time: start {seconds['start']:.1f} s · prepare {seconds['prepare']:.1f} s · extract {seconds['extract']:.1f} s · "
        f"reduce {seconds['reduce']:.1f} s · report {seconds['report']:.1f} s · total {sum(seconds.values()):.1f} s"
    ]


def test_report_files_are_valid_non_trivial_png_and_html(runs):
    report = Path(runs["plain"].out) / "report"
    pngs = {name: (report / name).read_bytes() for name in FIGURES}
    for data in pngs.values():
        check_png(data)
    page = Page()
    html = (report / "report.html").read_text()
    page.feed(html)
    page.close()
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert not [link for link in page.links if not link.startswith("data:")], "the HTML must be self-contained"
    embedded = [base64.b64decode(src.split(",", 1)[1]) for src in page.imgs]
    assert sorted(embedded) == sorted(pngs.values())
    md = (report / "report.md").read_text()
    for name in FIGURES:
        assert f"]({name})" in md


def test_claims_table_is_computed_from_the_statistics(runs):
    from attnsim.report.claims import evaluate

    cfg = runs["plain"]
    stats = Path(cfg.stats_url)
    import json

    claims = evaluate(
        pl.read_parquet(stats / "layer_summary.parquet"),
        pl.read_parquet(stats / "head_stats.parquet"),
        json.loads((stats / "summary.json").read_text()),
        cfg.labels,
        cfg.sentence_separator,
    )
    page = Page()
    page.feed((Path(cfg.out) / "report" / "report.html").read_text())
    table = [r for r in page.rows if r and r[-1] in ("holds", "does not hold", "inconclusive")]
    assert [(r[0], r[1], r[2], r[-1]) for r in table] == [(c.finding, c.statistic, c.value_text(), c.verdict) for c in claims]
    assert len(claims) >= 7 and "Verdict rule" in (Path(cfg.out) / "report" / "report.md").read_text()


def test_example_matrices_recomputed_by_the_model_match_the_dense_tier(runs):
    from attnsim.report.matrices import recompute_dense

    plain, dense = open_store(runs["plain"].store_url), open_store(runs["dense"].store_url)
    assert plain.tiers == ("default",)
    w = 5
    again = recompute_dense(plain, runs["plain"], w)  # (L, H, T, T)
    stored = dense.root["similarity"][w].astype(np.float32)[:, :, : again.shape[-1], : again.shape[-1]]
    np.testing.assert_allclose(again, stored, rtol=2e-3, atol=2e-3)
    assert "recomputed by running the model" in (Path(runs["plain"].out) / "report" / "report.md").read_text()


def test_report_cli_and_its_user_errors(runs, tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["report", runs["dense"].out, "--window", "2", "--heads", "0:1,1:3"])
    assert r.exit_code == 0, r.output
    md = (Path(runs["dense"].out) / "report" / "report.md").read_text()
    assert "on window 2" in md and "read from the store's dense tier" in md
    assert "layer 0, head 1: " in md and "layer 1, head 3: " in md
    r = runner.invoke(app, ["report", runs["dense"].out, "--heads", "0-1"])
    assert r.exit_code == 2 and "LAYER:HEAD" in r.output
    r = runner.invoke(app, ["report", runs["dense"].out, "--heads", "0:9"])
    assert r.exit_code == 2 and "head 9 is outside the store" in r.output
    r = runner.invoke(app, ["report", str(tmp_path)])
    assert r.exit_code == 2 and "no statistics" in r.output


# ------------------------------------------------------------------------------------- dataset API
def strip(url: str, names) -> str:
    """A copy of a store without some arrays (re-consolidated), like a store made with fewer tiers."""
    copy = Path(url).parent / f"without-{'-'.join(names)}.zarr"
    if not copy.exists():
        shutil.copytree(url, copy)
        for name in names:
            shutil.rmtree(copy / name)
        zarr.consolidate_metadata(str(copy), zarr_format=3)
    return str(copy)


def test_similarity_from_dense_vectors_and_topk_agree(runs):
    url = runs["dense"].store_url
    w, l, h = 3, 1, 2
    dense = open_store(url).similarity(w, l, h)
    vectors = open_store(strip(url, ["similarity"])).similarity(w, l, h)
    topk = open_store(strip(url, ["similarity", "head_vectors"])).similarity(w, l, h)
    assert (dense.source, vectors.source, topk.source) == ("dense", "vectors", "topk") and topk.sparse
    n = int(zarr.open_group(url, mode="r")["length"][w])
    assert dense.values.shape == (n, n) and len(dense.tokens) == n
    np.testing.assert_allclose(vectors.values, dense.values, rtol=1e-2, atol=1e-3)  # float16 vectors
    known = np.isfinite(topk.values)
    assert (known.sum(1) == min(8, n - 1)).all() and not known.diagonal().any()
    np.testing.assert_allclose(topk.values[known], dense.values[known], rtol=2e-3, atol=2e-3)
    row = dense.values[4].copy()
    row[4] = -np.inf  # the top k of a row are its k largest S[i, j], j != i (ties may swap: compare values)
    np.testing.assert_allclose(np.sort(topk.values[4][known[4]])[::-1], np.sort(row)[::-1][: min(8, n - 1)], rtol=2e-3, atol=2e-3)


def test_tokens_text_and_neighbors(runs, corpus_dir):
    store = open_store(runs["dense"].store_url)
    root = store.root
    w = 0
    ids = root["input_ids"][w, : store.length(w)]
    assert store.tokens(w) == store.tokenizer.convert_ids_to_tokens(ids.tolist()) and store.tokens(w)[0] == "[CLS]"
    corpus = " ".join(p.read_text().lower() for p in Path(corpus_dir).glob("*.txt"))
    words = re.findall(r"[a-z]+", store.text(w))
    assert len(words) > 3 and all(word in corpus for word in words)
    near = store.neighbors(w, 1, 2, token=4)
    index, value = root["topk_index"][w, 1, 2, 4], root["topk_value"][w, 1, 2, 4].astype(np.float32)
    assert [n.index for n in near] == index[index >= 0].tolist() and 4 not in [n.index for n in near]
    assert [n.value for n in near] == pytest.approx(value[index >= 0].tolist())
    assert [n.token for n in near] == [store.tokens(w)[n.index] for n in near]
    assert len(store.neighbors(w, 1, 2, token=4, k=3)) == 3
    for bad in (dict(window=10_000, layer=0, head=0), dict(window=0, layer=2, head=0), dict(window=0, layer=0, head=4)):
        with pytest.raises(OutOfRange, match="outside the store"):
            store.similarity(**bad)
    with pytest.raises(IndexError, match="outside window"):
        store.neighbors(w, 0, 0, token=store.length(w))


def test_reads_only_the_chunks_of_the_window_asked_for(runs, tmp_path):
    url = runs["dense"].store_url
    copy = tmp_path / "store.zarr"
    shutil.copytree(url, copy)
    corrupted = 0
    for chunk in copy.glob("*/c/*"):  # chunk keys start with the window-axis shard index = unit
        if chunk.name != "0":
            for f in [chunk] if chunk.is_file() else [p for p in chunk.rglob("*") if p.is_file()]:
                f.write_bytes(b"not a zarr shard" * 10)
                corrupted += 1
    assert corrupted > 20
    store, good = open_store(str(copy)), open_store(url)
    np.testing.assert_array_equal(store.similarity(1, 1, 2).values, good.similarity(1, 1, 2).values)
    assert store.text(1) == good.text(1) and store.neighbors(1, 0, 3, 2) == good.neighbors(1, 0, 3, 2)
    np.testing.assert_array_equal(store.dataset.topk_index.isel(window=1).values, good.dataset.topk_index.isel(window=1).values)
    with pytest.raises((ValueError, RuntimeError)):  # a checksum or codec error: window 5 is in unit 1, now garbage
        store.similarity(5, 1, 2)


def test_opens_an_fsspec_url(runs):
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.put(runs["dense"].store_url, "/attnsim-test/store.zarr", recursive=True)
    store = open_store("memory://attnsim-test/store.zarr")
    np.testing.assert_array_equal(store.similarity(0, 0, 1).values, open_store(runs["dense"].store_url).similarity(0, 0, 1).values)
    assert store.dataset.sizes["window"] == store.n_windows
    with pytest.raises(UserError, match="no attnsim store"):
        open_store("memory://attnsim-test/nothing.zarr")


def test_import_attnsim_stays_light():
    code = "import sys, attnsim; print(sorted(m for m in ('zarr', 'xarray', 'torch', 'numpy') if m in sys.modules)); print(callable(attnsim.open_store))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["[]", "True"]


def test_readme_dataset_api_example_runs(runs, tmp_path, monkeypatch, capsys):
    section = (REPO / "README.md").read_text().split("## Dataset API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    (tmp_path / "runs" / "default").mkdir(parents=True)
    (tmp_path / "runs" / "default" / "store.zarr").symlink_to(runs["dense"].store_url)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "SimilarityStore(" in out and "dense (" in out and "->" in out


# ------------------------------------------------------------------------------------- card, inspect
def test_dataset_card_is_in_the_store_and_its_code_runs(runs, capsys):
    import xarray as xr

    url = runs["plain"].store_url
    card = (Path(url) / "README.md").read_text()
    assert xr.open_zarr(url).attrs["dataset_card"] == card == open_store(url).card
    root = zarr.open_group(url, mode="r")
    for name, array in root.arrays():
        assert f"| `{name}` | {', '.join(array.metadata.dimension_names)} |" in card and str(array.dtype) in card
    assert card.count("the user's to state") == 2  # a tiny test model and a folder corpus: no licence known
    exec(compile(re.search(r"```python\n(.*?)```", card, re.S).group(1), "card", "exec"), {})


def test_inspect_prints_neighbours_and_writes_the_heatmap(runs, tmp_path):
    png = tmp_path / "s.png"
    r = CliRunner().invoke(
        app, ["inspect", runs["plain"].store_url, "--window", "2", "--layer", "1", "--head", "3", "--top", "3", "--png", str(png)], env={"COLUMNS": "200"}
    )
    assert r.exit_code == 0, r.output
    store = open_store(runs["plain"].store_url)
    first = store.neighbors(2, 1, 3, token=1, k=3)
    assert " ".join(f"{n.index} {n.token}" for n in first[:1]) in r.output and "top-k only" in r.output
    check_png(png.read_bytes(), min_size=(400, 400))
    r = CliRunner().invoke(app, ["inspect", runs["plain"].store_url, "--window", "2", "--layer", "9", "--head", "0"])
    assert r.exit_code == 2 and "layer 9 is outside the store" in r.output
