"""The pipeline on a tiny random BERT through Ray: results checked against an independent computation,
bytes identical whatever the number of workers, and a store that xarray and dask open without attnsim."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import array_digest

from attnsim.config import RunConfig
from attnsim.pipeline import stage_extract, stage_prepare, stage_reduce
from attnsim.store.meta import MASS_CATEGORIES


def config(tiny_bert, corpus_dir, out, **kw):
    base = dict(model=tiny_bert, corpus=corpus_dir, out=str(out), max_tokens=32, windows_per_shard=4, batch_size=3, bootstrap=20)
    return RunConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def runs(tiny_bert, corpus_dir, tmp_path_factory, ray_session):
    """The same run with 1 and 2 Ray workers, and once in process; with units written one after the
    other (one worker) and beside the next unit's compute (two workers with 2 writers each; local, 1);
    prepared in one partition, or (two) in partitions of 4 documents fanned out as Ray tasks."""
    out = {}
    for name, workers, writers, partition, use_ray in (("one", 1, 0, 2000, True), ("two", 2, 2, 4, True), ("local", None, 1, 2000, False)):
        cfg = config(
            tiny_bert,
            corpus_dir,
            tmp_path_factory.mktemp(name),
            workers=workers,
            unit_writers=writers,
            docs_per_partition=partition,
            tiers=["default", "vectors", "dense"],
        )
        stage_prepare(cfg, use_ray=use_ray)
        result = stage_extract(cfg, use_ray=use_ray)
        assert result["remaining"] == 0
        out[name] = cfg
    return out


def test_bytes_identical_with_one_and_two_workers_and_overlapped_writes(runs):
    one, two, local = (array_digest(runs[n].store_url) for n in ("one", "two", "local"))
    assert len(one) > 10
    assert one == two
    assert one == local


def reference(tiny_bert, ids, valid):
    """Head outputs and attention probabilities from each layer's own weights (eager, float32)."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(tiny_bert, attn_implementation="eager").eval()
    with torch.inference_mode():
        hidden = model(input_ids=ids, attention_mask=valid.long(), output_hidden_states=True).hidden_states
        out = []
        for l, layer in enumerate(model.encoder.layer):
            att = layer.attention.self
            b, t, hd = hidden[l].shape
            split = lambda x: x.view(b, t, 4, hd // 4).transpose(1, 2)  # noqa: E731
            scores = split(att.query(hidden[l])) @ split(att.key(hidden[l])).transpose(-1, -2) / (hd // 4) ** 0.5
            p = torch.softmax(scores.masked_fill(~valid[:, None, None, :], float("-inf")), -1)  # (B, H, T, J)
            out.append((p, p @ split(att.value(hidden[l]))))  # z: (B, H, T, d)
    return out


def test_store_matches_independent_computation(runs, tiny_bert):
    import zarr

    root = zarr.open_group(runs["one"].store_url, mode="r")
    n = 5
    length = root["length"][:n]
    t = int(length.max())
    raw = root["input_ids"][:n, :t].astype(np.int64)
    valid = torch.from_numpy(raw >= 0)
    ids = torch.from_numpy(np.where(raw >= 0, raw, 0))
    sent = root["sentence_id"][:n, :t]
    topk_index, topk_value = root["topk_index"][:n], root["topk_value"][:n].astype(np.float32)
    dense, vectors, mass = root["similarity"][:n].astype(np.float32), root["head_vectors"][:n], root["attention_mass"][:n]
    classes = dict(root.attrs)["tokenizer"]["token_classes"]
    k = topk_index.shape[-1]
    for l, (p, z) in enumerate(reference(tiny_bert, ids, valid)):
        s = (z @ z.transpose(-1, -2)).numpy()  # (B, H, T, T), the paper's scalar products
        for w in range(n):
            m = int(length[w])
            np.testing.assert_allclose(vectors[w, l, :, :m], z[w, :, :m].numpy(), rtol=2e-3, atol=2e-3)  # float16 tier
            np.testing.assert_allclose(dense[w, l, :, :m, :m], s[w, :, :m, :m], rtol=2e-3, atol=2e-3)
            assert np.isnan(dense[w, l, :, m:]).all() and np.isnan(vectors[w, l, :, m:]).all()
            for h in range(4):
                for i in range(m):
                    row = s[w, h, i, :m].copy()
                    row[i] = -np.inf
                    best = np.sort(row)[::-1][: min(k, m - 1)]
                    got_idx = topk_index[w, l, h, i]
                    got = got_idx[got_idx >= 0]
                    assert i not in got and (got < m).all(), "padding or the token itself as a neighbour"
                    np.testing.assert_allclose(s[w, h, i, got], best, rtol=1e-4, atol=1e-5)  # same values: ties may swap
                    np.testing.assert_allclose(topk_value[w, l, h, i, : len(got)], best, rtol=2e-3, atol=2e-3)
                assert (topk_index[w, l, :, m:] == -1).all()
            # attention mass on [CLS] and on the same sentence, from the reference probabilities
            pw = p[w, :, :m, :m].numpy()
            ids_w = raw[w, :m]
            real = sent[w, :m] >= 0  # queries are real tokens only: [CLS]/[SEP] are keys (issue 11)
            cls_mass = pw[:, real][:, :, ids_w == classes["cls"]].sum(-1).mean(-1)
            np.testing.assert_allclose(mass[w, l, :, MASS_CATEGORIES.index("cls")], cls_mass, rtol=1e-4, atol=1e-5)
            same = (sent[w, :m, None] == sent[w, None, :m]) & (sent[w, :m, None] >= 0)
            same_mass = (pw * same)[:, real].sum(-1).mean(-1)
            np.testing.assert_allclose(mass[w, l, :, MASS_CATEGORIES.index("same_sentence")], same_mass, rtol=1e-4, atol=1e-5)


def test_store_opens_with_xarray_and_dask_without_attnsim(runs):
    import dask.array as da
    import xarray as xr

    url = runs["one"].store_url
    ds = xr.open_zarr(url)
    assert ds["topk_index"].dims == ("window", "layer", "head", "token", "k")
    assert ds["similarity"].dims == ("window", "layer", "head", "token", "other")
    assert ds["head_vectors"].dims == ("window", "layer", "head", "token", "dim")
    assert ds["attention_mass"].dims == ("window", "layer", "head", "category")
    assert ds["char_span"].dims == ("window", "token", "edge")
    assert ds.attrs["format_version"] == 2
    arr = da.from_zarr(url, component="topk_value")
    assert arr.shape == ds["topk_value"].shape
    assert int(ds["length"].sum()) == ds.attrs["corpus"]["tokens"]


def test_reduce_runs_on_the_pipeline_store(runs):
    summary = stage_reduce(runs["one"])
    assert len(summary["layers"]) == 2
    import zarr

    assert summary["windows"] == zarr.open_group(runs["one"].store_url, mode="r")["length"].shape[0]
