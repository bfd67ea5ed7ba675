"""Stage `reduce`: Dask over the store's shard-aligned chunks -> Parquet tables of statistics.

Each block (one unit's windows) becomes a fixed-size `Partial` (pairs.py, Polars inside); partials
are summed in a fixed binary tree, so memory does not grow with the number of windows and the
result does not depend on the scheduler (`dask_scheduler`: threads, synchronous, processes, or a
dask.distributed address, whose workers then do the work: on a cluster, the reduce runs there).

Example::

    summary = reduce_store(RunConfig(out="runs/default"))
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import polars as pl

from attnsim.config import RunConfig
from attnsim.errors import UserError
from attnsim.model.similarity import similarity_matrix
from attnsim.reduce.pairs import block_partial, threshold_pairs, topk_pairs
from attnsim.reduce.statistics import decay_table, head_table, layer_table
from attnsim.store.io import completed_units, open_store
from attnsim.store.meta import layout_from_attrs

TOKEN_INPUTS = ("input_ids", "sentence_id", "length")


def _blocks(root, layout, name):
    """One delayed numpy block per unit (chunks aligned to the shards along `window`)."""
    arr = root[name]
    chunks = (layout.windows_per_shard,) + arr.shape[1:]
    return da.from_zarr(arr, chunks=chunks).to_delayed().ravel().tolist()


def _tree_sum(items):
    items = list(items)
    while len(items) > 1:
        items = [dask.delayed(lambda a, b: a + b)(items[i], items[i + 1]) if i + 1 < len(items) else items[i] for i in range(0, len(items), 2)]
    return items[0]


def _dense_s(similarity_block, vectors_block, w: int, kind: str) -> np.ndarray:
    """S of one window of a block, (L, H, T, T) float32: from the dense tier or the vectors."""
    if similarity_block is not None:
        return similarity_block[w].astype(np.float32)
    return similarity_matrix(vectors_block[w].astype(np.float32), kind)  # (L, H, T, T), NaN on padding


def _block(ids, sid, length, topk, mass, dense, vectors, *, threshold, classes, shape, n_boot, seed, start, kind, k):
    if threshold is None:
        pairs = topk_pairs(topk, sid)
    else:
        found = [threshold_pairs(_dense_s(dense, vectors, w, kind), threshold, sid[w], w) for w in range(len(ids))]
        pairs = tuple(np.concatenate([f[n] for f in found]) for n in range(5))
    # The random head draws k neighbours per token in top-k mode, uniform pairs in quantile mode.
    return block_partial(ids, sid, length, pairs, mass, classes, shape, n_boot, seed, start, k=None if threshold is not None else k, vectors=vectors)


def _head_quantile(root, layout, cfg, kind: str, scheduler) -> np.ndarray:
    """Per-head corpus quantile q of S over high-pair candidates, from a fixed-bin histogram."""
    dense_name = "similarity" if "similarity" in root else "head_vectors"
    sources = [_blocks(root, layout, n) for n in (dense_name, "sentence_id")]

    def bounds(block, sid):
        out = np.zeros((layout.n_layers, layout.n_heads))
        for w in range(len(sid)):
            s = _dense_s(block if dense_name == "similarity" else None, block, w, kind)
            out = np.maximum(out, np.nanmax(np.abs(np.where(np.isfinite(s), s, 0)), axis=(-1, -2)))
        return out

    limit = dask.compute(*[dask.delayed(bounds)(b, s) for b, s in zip(*sources)], scheduler=scheduler)
    limit = np.maximum(np.max(limit, axis=0), 1e-6)  # (L, H)
    bins = 16384  # resolution 2 * max|S| / bins, refined by interpolation inside the bin

    def hist(block, sid):
        out = np.zeros((layout.n_layers, layout.n_heads, bins), np.int64)
        for w in range(len(sid)):
            s = _dense_s(block if dense_name == "similarity" else None, block, w, kind)
            real_i = (sid[w] >= 0)[None, None, :, None] & ~np.eye(s.shape[-1], dtype=bool)[None, None]
            keep = real_i & np.isfinite(s)  # candidates: i real, j valid (S is NaN on padding), j != i
            s = np.where(keep, s, 0.0)
            scaled = np.clip(((s / limit[:, :, None, None] + 1) / 2 * bins).astype(np.int64), 0, bins - 1)
            for l in range(layout.n_layers):
                for h in range(layout.n_heads):
                    out[l, h] += np.bincount(scaled[l, h][keep[l, h]], minlength=bins)
        return out

    parts = [dask.delayed(hist)(b, s) for b, s in zip(*sources)]
    total = dask.compute(_tree_sum(parts), scheduler=scheduler)[0]
    cum = np.cumsum(total, axis=-1)  # (L, H, bins)
    target = cfg.quantile * cum[..., -1:]  # rank of the quantile among the candidates
    b = np.argmax(cum >= target, axis=-1)[..., None]  # the bin holding it
    below = np.take_along_axis(cum, b, -1) - np.take_along_axis(total, b, -1)
    inside = np.take_along_axis(total, b, -1)
    frac = np.clip((target - below) / np.maximum(inside, 1), 0.0, 1.0)  # linear inside the bin
    return (((b + frac)[..., 0] / bins) * 2 - 1) * limit


def compute_partial(cfg: RunConfig, url: str, scheduler=None):
    """The merged counts over the whole store, and the store's attributes."""
    root = open_store(url)
    attrs = dict(root.attrs)
    layout = layout_from_attrs(attrs)
    missing = sorted(set(range(layout.n_units)) - completed_units(url))
    if missing:
        raise UserError(
            f"store {url!r} is incomplete: {len(missing)} of {layout.n_units} units not extracted (first: {missing[0]:06d}); run `attnsim extract` on it first"
        )
    with dask_scheduler(scheduler or cfg.dask_scheduler) as get:
        return _compute_partial(cfg, root, attrs, layout, get)


def _compute_partial(cfg: RunConfig, root, attrs: dict, layout, scheduler):
    threshold = None
    if cfg.high_mode == "quantile":
        if not ({"vectors", "dense"} & set(attrs["tiers"])):
            raise UserError("high_mode=quantile needs a store with the `vectors` or `dense` tier; extract with --tiers vectors")
        threshold = _head_quantile(root, layout, cfg, attrs["similarity_kind"], scheduler)
    inputs = [_blocks(root, layout, n) for n in TOKEN_INPUTS]
    none = [None] * layout.n_units
    topk = _blocks(root, layout, "topk_index") if threshold is None else none
    mass = _blocks(root, layout, "attention_mass") if "attention_mass" in root else none
    dense = _blocks(root, layout, "similarity") if threshold is not None and "similarity" in root else none
    # The vectors tier, where present, also gives the anchors' norms (norms.py), in either mode.
    vectors = _blocks(root, layout, "head_vectors") if "head_vectors" in root else none
    kw = dict(
        threshold=threshold,
        classes=attrs["tokenizer"]["token_classes"],
        shape=(layout.n_layers, layout.n_heads),
        n_boot=cfg.bootstrap,
        seed=cfg.seed,
        kind=attrs["similarity_kind"],
        k=int(attrs["k"]),
    )
    parts = [dask.delayed(_block)(*args, start=unit * layout.windows_per_shard, **kw) for unit, args in enumerate(zip(*inputs, topk, mass, dense, vectors))]
    (total,) = dask.compute(_tree_sum(parts), scheduler=scheduler)
    return total.sorted(), attrs, threshold


LOCAL_SCHEDULERS = ("threads", "synchronous", "processes")


def check_scheduler(spec: str) -> str:
    """The kind of a `dask_scheduler` value, `local` or `distributed`; a UserError names a bad one."""
    if spec in LOCAL_SCHEDULERS:
        return "local"
    if "://" in spec or (":" in spec and spec.rsplit(":", 1)[1].isdigit()):
        return "distributed"
    if spec == "ray":
        # Checked with ray 2.60 / dask 2026.8 / zarr 3.1: ray.util.dask rebuilds every dataclass in a
        # task's arguments by calling its constructor with all fields, which zarr 3's codecs refuse
        # (BloscCodec._tunable_attrs is init=False), so a graph over Zarr arrays fails on Ray.
        raise UserError(
            "dask_scheduler 'ray' (Dask on Ray) cannot run this reduce: ray.util.dask cannot rebuild zarr 3 "
            "arrays; run a dask.distributed scheduler on the cluster and pass its address (see cluster/README.md)"
        )
    raise UserError(f"dask_scheduler {spec!r} is not a scheduler: use threads, synchronous, processes, or a dask.distributed address such as tcp://host:8786")


def _local_get(name: str):
    import dask.local
    import dask.multiprocessing
    import dask.threaded

    return {"threads": dask.threaded.get, "synchronous": dask.local.get_sync, "processes": dask.multiprocessing.get}[name]


@contextlib.contextmanager
def dask_scheduler(spec):
    """The `scheduler=` of dask.compute for a `dask_scheduler` value; closes any client it opened.

    Example::

        with dask_scheduler("tcp://10.0.0.5:8786") as get:
            dask.compute(graph, scheduler=get)  # runs on that cluster's workers
    """
    if not isinstance(spec, str):  # a get function or Client from a caller: theirs to close
        yield spec
        return
    if check_scheduler(spec) == "local":
        from threadpoolctl import threadpool_limits

        # The scheduler's get function, not its name: given a name, dask imports dask.distributed
        # (when installed) to look for a default client, 0.3 s of a 2.9 s reduce of lee.
        # BLAS on one thread: the blocks' small products (distance sums, expected counts) woke
        # OpenBLAS's own threads on top of dask's, which then spun on the same cores (lee: CPU 4.1
        # -> 3.3 s, wall 2.3 -> 2.0 s, same tables; RESULTS.md). dask.distributed's workers do the same.
        with threadpool_limits(limits=1, user_api="blas"):
            yield _local_get(spec)
    else:
        from dask.distributed import Client

        address = spec if "://" in spec else f"tcp://{spec}"
        try:
            client = Client(address, set_as_default=False)
        except (OSError, TimeoutError) as e:
            raise UserError(f"cannot reach the dask scheduler {spec!r} ({e}); check dask_scheduler and that the scheduler runs") from None
        try:
            yield client.get
        finally:
            client.close()


def reduce_store(cfg: RunConfig, url: str | None = None, stats_url: str | None = None, scheduler=None) -> dict:
    """Compute every statistic of docs/design.md and write the Parquet tables and summary.json."""
    began = time.perf_counter()
    url = url or cfg.store_url
    stats_url = stats_url or cfg.stats_url
    total, attrs, threshold = compute_partial(cfg, url, scheduler)
    token_text = _token_text(attrs)
    heads, anchors = head_table(total, token_text, cfg.labels)
    layers, corr = layer_table(total, heads)
    decay = decay_table(total)
    top_anchors = (
        anchors.group_by(["layer", "head"], maintain_order=True)
        .head(cfg.top_anchors)
        .with_columns(token_text=pl.col("token").map_elements(token_text, return_dtype=pl.String))
    )
    summary = {
        "store": url,
        "model": attrs["model"],
        "corpus": attrs["corpus"],
        "windows": int(total.n_windows),
        "high_mode": cfg.high_mode,
        "k": attrs["k"],
        "quantile": cfg.quantile if cfg.high_mode == "quantile" else None,
        "similarity_kind": attrs["similarity_kind"],
        "bootstrap": cfg.bootstrap,
        "layer_distance_correlation": corr,
        "labels": heads["label"].value_counts().sort("label").to_dicts(),
        "layers": layers.to_dicts(),
        "reduce_seconds": round(time.perf_counter() - began, 3),
    }
    if threshold is not None:
        summary["quantile_thresholds"] = threshold.tolist()
    _write_tables(
        stats_url,
        {"head_stats": heads, "distance_decay": decay, "anchors": top_anchors, "layer_summary": layers},
        summary,
    )
    return summary


def _token_text(attrs):
    """id -> token string. A local tokenizer.json is read with `tokenizers` alone (importing
    transformers' AutoTokenizer costs over a second, a good part of a small corpus's reduce)."""
    source = Path(attrs["tokenizer"]["source"])
    if (source / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        fast = Tokenizer.from_file(str(source / "tokenizer.json"))
        return lambda idx: fast.id_to_token(int(idx))
    from attnsim.model.loading import load_tokenizer

    tok = load_tokenizer(str(source))
    return lambda idx: tok.convert_ids_to_tokens(int(idx))


def _write_tables(stats_url: str, tables: dict, summary: dict) -> None:
    import fsspec

    fs, root = fsspec.core.url_to_fs(stats_url)
    fs.makedirs(root, exist_ok=True)
    for name, frame in tables.items():
        with fs.open(f"{root}/{name}.parquet", "wb") as f:
            frame.write_parquet(f)
    with fs.open(f"{root}/summary.json", "w") as f:
        json.dump(summary, f, indent=2, default=_json_default, allow_nan=True)


def _json_default(x):
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    raise TypeError(type(x))
