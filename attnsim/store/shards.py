"""Whole shards of a unit encoded by attnsim, byte for byte as zarr would write them.

Why not `array[start:stop] = data`: zarr encodes a shard's inner chunks as one asyncio task each,
and its per-chunk Python work holds the GIL; on a GPU worker that write path was 70 % of the host
time and four writer threads gained only 15 % (benchmarks/RESULTS.md). Here the inner chunks are
compressed on a thread pool (numcodecs' Blosc releases the GIL off the main thread), the shard is
assembled as zarr's sharding codec does (chunks in order, then the index of offsets and lengths
with its CRC-32C) and stored as one object (`put_shard`: in a local store written from this thread
as zarr's LocalStore writes a file, elsewhere through zarr's store).

Only the layout attnsim creates is encoded here: a shard per unit whose inner chunks are single
windows (every array but `dense` similarity, which is chunked per window and layer), codecs
[attnsim's own array filters (codecs.py)] -> bytes -> blosc inside, bytes -> crc32c for an index
at the end. Anything else returns None from `shard_plan` and is written by zarr.
tests/unit/test_shards.py compares the bytes with zarr's own.
"""

from __future__ import annotations

import functools
import os
import sys
import uuid
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import google_crc32c
import numcodecs
import numpy as np
import zarr
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, ShardingCodec
from zarr.codecs.sharding import ShardingCodecIndexLocation

from attnsim.store.codecs import SortedDeltaCodec, TokenPrefixCodec

_EMPTY = np.iinfo(np.uint64).max  # the index entry of a chunk not written (zarr's MAX_UINT_64)
_SHUFFLE = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}
_FILTERS = (SortedDeltaCodec,)  # array -> array codecs with a numpy `encode_array`, applied per chunk
_SERIALIZERS = (BytesCodec, TokenPrefixCodec)


@dataclass(frozen=True)
class ShardPlan:
    windows_per_shard: int
    chunk_shape: tuple[int, ...]  # (1, rest of the array's shape)
    dtype: np.dtype
    blosc: numcodecs.Blosc
    filters: tuple = ()  # attnsim's array -> array codecs, in order
    token_prefix: TokenPrefixCodec | None = None  # the serializer when not plain little-endian bytes
    fill: object = None  # the array's fill value (token_prefix leaves its padding out)


def shard_plan(array: zarr.Array) -> ShardPlan | None:
    """How to encode `array`'s shards here, or None when its layout is not one this module writes."""
    meta = array.metadata
    if sys.byteorder != "little" or len(meta.codecs) != 1 or not isinstance(meta.codecs[0], ShardingCodec):
        return None
    sharding = meta.codecs[0]
    n_filters = next((i for i, c in enumerate(sharding.codecs) if not isinstance(c, _FILTERS)), 0)
    filters, inner, index = sharding.codecs[:n_filters], sharding.codecs[n_filters:], sharding.index_codecs
    shard_shape = tuple(meta.chunk_grid.chunk_shape)
    if (
        sharding.index_location != ShardingCodecIndexLocation.end
        or tuple(sharding.chunk_shape) != (1,) + tuple(array.shape[1:])
        or shard_shape[1:] != tuple(array.shape[1:])
        or len(inner) != 2
        or not isinstance(inner[0], _SERIALIZERS)
        or not isinstance(inner[1], BloscCodec)
        or [type(c) for c in index] != [BytesCodec, Crc32cCodec]
        or any(isinstance(c, BytesCodec) and c.endian is not None and c.endian.value != "little" for c in (inner[0], index[0]))
    ):
        return None
    b = inner[1]
    blosc = numcodecs.Blosc(cname=b.cname.value, clevel=b.clevel, shuffle=_SHUFFLE[b.shuffle.value], blocksize=b.blocksize, typesize=b.typesize)
    token_prefix = inner[0] if isinstance(inner[0], TokenPrefixCodec) else None
    fill = np.array(array.fill_value, array.dtype)
    return ShardPlan(shard_shape[0], tuple(sharding.chunk_shape), np.dtype(array.dtype), blosc, tuple(filters), token_prefix, fill)


def encode_shard(plan: ShardPlan, data: np.ndarray, pool: Executor | None = None) -> bytes:
    """The shard object for `data`, the unit's windows (at most windows_per_shard; an edge shard's
    missing windows are left out of it, as zarr leaves them). Chunks are compressed on `pool`
    when given, else in this thread."""
    data = np.ascontiguousarray(data, dtype=plan.dtype)
    n = data.shape[0]
    assert 1 <= n <= plan.windows_per_shard and data.shape[1:] == plan.chunk_shape[1:], (data.shape, plan)
    chunks = list((pool.map if pool else map)(functools.partial(_encode_chunk, plan), (data[i : i + 1] for i in range(n))))
    index = np.full((plan.windows_per_shard,) + (1,) * (len(plan.chunk_shape) - 1) + (2,), _EMPTY, np.uint64)
    lengths = np.array([len(c) for c in chunks], np.uint64)
    index.reshape(-1, 2)[:n, 0] = np.cumsum(lengths) - lengths  # offsets
    index.reshape(-1, 2)[:n, 1] = lengths
    index_bytes = index.tobytes()
    crc = np.uint32(google_crc32c.value(index_bytes)).tobytes()
    return b"".join([*chunks, index_bytes, crc])


def _encode_chunk(plan: ShardPlan, chunk: np.ndarray) -> bytes:
    """One inner chunk (1, ...) through the filters and the serializer, then blosc (on an encoder
    thread: numpy and blosc release the GIL)."""
    for codec in plan.filters:
        chunk = codec.encode_array(chunk)
    if plan.token_prefix is not None:
        chunk = plan.token_prefix.encode_array(chunk, plan.fill)
    return plan.blosc.encode(chunk)


# ------------------------------------------------------------------ one shard object in the store
def shard_key(array: zarr.Array, unit: int) -> str:
    """The store key of the one object that holds `unit`'s windows of `array`, e.g. topk_value/c/42/0/0/0/0."""
    return f"{array.store_path.path}/{array.metadata.encode_chunk_key((unit,) + (0,) * (array.ndim - 1))}"


def put_shard(array: zarr.Array, unit: int, payload: bytes) -> None:
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync
    from zarr.storage import LocalStore

    store = array.store_path.store
    if isinstance(store, LocalStore):
        # What LocalStore.set does (a `<key>.<uuid>.partial` file renamed into place, so a reader
        # sees the old object or the new one), in this thread: through zarr's event loop and its
        # file thread a shard cost about 11 % of the host pipeline's CPU time (benchmarks/RESULTS.md).
        target = store.root / shard_key(array, unit)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = _partial(target, uuid.uuid4().hex)
        try:
            partial.write_bytes(payload)
            os.replace(partial, target)
        except BaseException:
            partial.unlink(missing_ok=True)  # a write that failed leaves nothing behind
            raise
        return
    sync(store.set(shard_key(array, unit), default_buffer_prototype().buffer.from_bytes(payload)))


def delete_shard(array: zarr.Array, unit: int) -> None:
    """Delete the one object that holds `unit`'s windows of `array` (a shard, or a plain chunk)."""
    from zarr.core.sync import sync

    sync(array.store_path.store.delete(shard_key(array, unit)))  # a missing object is not an error
    drop_partial_writes(array, unit)


def drop_partial_writes(array: zarr.Array, unit: int) -> None:
    """A local store writes files via `<key>.<uuid>.partial`: remove those a killed write left."""
    from zarr.storage import LocalStore

    store = array.store_path.store
    if isinstance(store, LocalStore):
        target = store.root / shard_key(array, unit)
        for partial in target.parent.glob(_partial(target, "*").name):
            partial.unlink(missing_ok=True)


def _partial(target: Path, tag: str) -> Path:
    """A local store's file in the making, `<key>.<tag>.partial` (zarr's LocalStore names it so, tag a uuid)."""
    return target.with_name(f"{target.name}.{tag}.partial")


def encoder_pool(device_type: str, torch_threads: int | None) -> ThreadPoolExecutor:
    """Threads that compress a worker's chunks. Blosc runs without the GIL off the main thread, so
    they use the host's cores while torch (or the GPU) computes the next unit. A CPU worker gets as
    many as its torch threads (the cores it was given; on a CPU its units are computed and written
    in turn), a GPU worker the host's cores, at most 16."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n = torch_threads if device_type == "cpu" and torch_threads else min(cores, 16)
    return ThreadPoolExecutor(max(1, n), thread_name_prefix="attnsim-encode")
