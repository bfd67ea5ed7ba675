"""The Zarr v3 store (format v2, docs/design.md): create, write a unit, mark it, open, read.

Arrays are created once at their final shape by the driver; a work unit (``windows_per_shard``
consecutive windows) writes whole shards of every array, then its marker
``_markers/shard-NNNNNN.json``. The driver alone writes metadata. Works on a local path or any
fsspec URL (``s3://``, ``gs://``, ``memory://``); unit and marker writes ride out transient
storage errors (`retry.py`).

Example::

    root = open_store("runs/default/store.zarr")
    done = completed_units("runs/default/store.zarr")
    units = UnitArrays(root, read_meta(root).layout)   # a reader or writer of many units keeps one
    tokens = units.read(0, ("input_ids", "length"))
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import zlib
from concurrent.futures import Executor

import fsspec
import google_crc32c
import numpy as np
import zarr
from fsspec.implementations.local import LocalFileSystem
from zarr.codecs import BloscCodec, BloscShuffle

from attnsim import FORMAT_VERSION
from attnsim.errors import UserError
from attnsim.store.codecs import TokenPrefixCodec
from attnsim.store.meta import Layout, StoreMeta
from attnsim.store.retry import with_retries
from attnsim.store.shards import ShardPlan, delete_shard, drop_partial_writes, encode_shard, put_shard, shard_plan

MARKER_DIR = "_markers"


# zstd level 1 with byte shuffle. Measured on minilm/lee units (single thread, MB/s of raw data and
# compression ratio): top-k arrays 337 MB/s at 2.86x, vs 64 MB/s at 2.69x for the level 5 with
# bitshuffle used before; head vectors 335 at 1.49x (was 57 at 1.55x); dense S 255 at 2.08x (51 at
# 2.05x). Compression is the writer's main cost, and on a GPU the job's bottleneck.
COMPRESSION_LEVEL = 1
# The per-token arrays are serialized without their padding tokens (store/codecs.py,
# `attnsim.token_prefix`: blosc then compresses 1.2-2.5x faster), `topk_value`'s descending rows as
# ordered-int differences, slot-major, compressed in blocks of 256 KiB: 589 bytes per token on
# minilm/lee against 610 with blosc's automatic block size and 790 as plain floats. `topk_index`
# is smallest with the automatic size (441; 452-471 with blocks of 64-256 KiB).
SERIALIZERS = {
    "topk_index": TokenPrefixCodec(),
    "topk_value": TokenPrefixCodec(sorted_delta=True),
    "head_vectors": TokenPrefixCodec(),
}
BLOCK_BYTES = {"topk_value": 1 << 18}


# ------------------------------------------------------------------------------------- opening
def _fs(url: str):
    fs, path = fsspec.core.url_to_fs(url)
    return fs, path.rstrip("/")


def store_exists(url: str) -> bool:
    fs, path = _fs(url)
    fs.invalidate_cache(path)  # object-store listings are cached per process; other writers exist
    return fs.exists(f"{path}/zarr.json")


def open_store(url: str, mode: str = "r") -> zarr.Group:
    if mode == "r" and not store_exists(url):
        raise UserError(f"no attnsim store at {url!r}; run `attnsim prepare` (or `attnsim run`) first")
    return zarr.open_group(url, mode=mode, zarr_format=3)


def read_meta(root: zarr.Group) -> StoreMeta:
    """The store's root attributes, typed and checked (`StoreMeta`)."""
    return StoreMeta.from_attrs(dict(root.attrs))


def create_store(url: str, layout: Layout, attrs: dict) -> zarr.Group:
    """Create the group and every array at its final shape (driver only)."""
    root = zarr.open_group(url, mode="w", zarr_format=3)
    for name, spec in layout.specs().items():
        itemsize = np.dtype(spec["dtype"]).itemsize
        root.create_array(
            name,
            shape=spec["shape"],
            dtype=spec["dtype"],
            chunks=spec["chunk"],
            shards=spec["shard"] if spec["chunk"] != spec["shard"] else None,
            fill_value=spec["fill"],
            dimension_names=spec["dims"],
            serializer=SERIALIZERS.get(name, "auto"),
            compressors=BloscCodec(cname="zstd", clevel=COMPRESSION_LEVEL, shuffle=BloscShuffle.shuffle, typesize=itemsize, blocksize=BLOCK_BYTES.get(name, 0)),
        )
    root.attrs.update(
        {
            "format_version": FORMAT_VERSION,
            "layout": {**layout.__dict__, "tiers": list(layout.tiers)},
            "windows_per_shard": layout.windows_per_shard,
            "n_units": layout.n_units,
            **attrs,
        }
    )
    return root


def update_attrs(url: str, **attrs) -> None:
    """Driver-only metadata update, then re-consolidate so xarray sees it."""
    root = zarr.open_group(url, mode="r+", zarr_format=3)
    root.attrs.update(attrs)
    consolidate(url)


def consolidate(url: str) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # consolidated metadata is not yet part of the v3 spec
        zarr.consolidate_metadata(url, zarr_format=3)


# ------------------------------------------------------------------------------------- units
# A marker's checksum guards against accidental damage (a flipped byte, a half-written or stale
# shard), not against tampering, so a CRC is enough. CRC-32C (Castagnoli, with the CPU's crc32
# instruction through google_crc32c, which zarr itself requires) takes 1.8 ms over a 19 MB
# default-tier unit here, against 4.9 ms for zlib's CRC-32 and 48 ms for SHA-256; on a GPU worker the
# host's time per unit is the ceiling. Markers name their algorithm; verify still reads the earlier
# ones (CRC-32, and SHA-256 for a marker that names none).
CHECKSUM_ALGORITHM = "crc32c"
LEGACY_CHECKSUM_ALGORITHM = "sha256"
CHECKSUM_ALGORITHMS = ("crc32c", "crc32", "sha256")


def unit_checksum(arrays: dict[str, np.ndarray], algorithm: str = CHECKSUM_ALGORITHM) -> str:
    """A checksum over a unit's arrays in name order (each name, dtype and shape, then its bytes):
    what its marker promises is in the store. `algorithm` is one of CHECKSUM_ALGORITHMS."""
    if algorithm not in CHECKSUM_ALGORITHMS:
        raise ValueError(f"unknown checksum algorithm {algorithm!r}")
    sha, crc = hashlib.sha256(), 0
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        for part in (name.encode(), str(a.dtype).encode() + str(a.shape).encode(), a.reshape(-1).view(np.uint8)):
            if algorithm == "sha256":
                sha.update(part)
            elif algorithm == "crc32c":
                crc = google_crc32c.extend(crc, part)
            else:
                crc = zlib.crc32(part, crc)
    return sha.hexdigest() if algorithm == "sha256" else f"{crc:08x}"


class UnitArrays:
    """Reads and writes whole units of one open store, each array's handle looked up once (and its
    shard plan once it is first written): `root[name]` reads and parses the array's metadata (about
    0.7 ms an array, some 5 % of a default-tier unit's host time when looked up for every unit;
    benchmarks/RESULTS.md)."""

    def __init__(self, root: zarr.Group, layout: Layout):
        self.root, self.layout = root, layout
        self._arrays: dict[str, zarr.Array] = {}
        self._plans: dict[str, ShardPlan | None] = {}  # None: written through zarr

    def array(self, name: str) -> zarr.Array:
        if name not in self._arrays:  # threads may race here: both look up the same handle
            self._arrays[name] = self.root[name]
        return self._arrays[name]

    def _plan(self, name: str) -> ShardPlan | None:
        if name not in self._plans:
            self._plans[name] = shard_plan(self.array(name))
        return self._plans[name]

    def read(self, unit: int, names) -> dict[str, np.ndarray]:
        start, stop = self.layout.unit_windows(unit)
        return {name: self.array(name)[start:stop] for name in names}

    def write(self, unit: int, arrays: dict[str, np.ndarray], replace: bool = True, encoder: Executor | None = None) -> None:
        """Write whole shards of the given arrays for one unit; no other writer touches them.

        Shards of attnsim's usual layout are encoded here and stored as one object each (`shards.py`:
        the chunks compressed in parallel, the same bytes zarr writes); any other array goes through
        zarr. `encoder`: threads that compress the chunks (default: this thread). With `replace` (a
        unit being redone after a crash or a failed verify) what a killed write left is cleared first;
        on the zarr path the unit's old shard objects are deleted too: zarr reads an existing edge
        shard to merge into it, so a truncated or corrupt one would fail the rewrite, and a stale one
        could survive in part. A fresh store (prepare) passes replace=False to skip that.
        """
        start, stop = self.layout.unit_windows(unit)
        for name, data in arrays.items():
            assert data.shape[0] == stop - start, f"{name}: {data.shape[0]} windows for unit {unit} of {stop - start}"
            array, plan = self.array(name), self._plan(name)
            if plan is not None:
                payload = encode_shard(plan, data, encoder)
                if replace:
                    drop_partial_writes(array, unit)
                with_retries(functools.partial(put_shard, array, unit, payload), f"unit {unit:06d} {name}")
                continue
            # Every chunk is written as it is: zarr's default compares each chunk with the fill value first
            # to skip empty ones, 12 % of a GPU worker's time (profile in benchmarks/RESULTS.md), and a
            # unit's chunks are never empty but for the padding windows of the last unit.
            array = array.with_config({"write_empty_chunks": True})
            if replace:
                with_retries(functools.partial(delete_shard, array, unit), f"unit {unit:06d} {name} (old shard)")
            with_retries(functools.partial(array.__setitem__, slice(start, stop), data), f"unit {unit:06d} {name}")


def write_unit(root: zarr.Group, layout: Layout, unit: int, arrays: dict[str, np.ndarray], replace: bool = True, encoder: Executor | None = None) -> None:
    """`UnitArrays.write` for one unit (a reader or writer of many units keeps a UnitArrays)."""
    UnitArrays(root, layout).write(unit, arrays, replace, encoder)


def read_unit(root: zarr.Group, layout: Layout, unit: int, names) -> dict[str, np.ndarray]:
    """`UnitArrays.read` for one unit."""
    return UnitArrays(root, layout).read(unit, names)


def marker_key(unit: int) -> str:
    return f"{MARKER_DIR}/shard-{unit:06d}.json"


def write_marker(url: str, unit: int, info: dict) -> None:
    fs, path = _fs(url)
    data = json.dumps({"unit": unit, **info}, sort_keys=True).encode()
    target = f"{path}/{marker_key(unit)}"

    def put() -> None:
        if isinstance(fs, LocalFileSystem):
            # Write then rename: a marker is either whole or absent, even if the process is killed.
            fs.makedirs(f"{path}/{MARKER_DIR}", exist_ok=True)
            fs.pipe_file(target + ".tmp", data)
            os.replace(target + ".tmp", target)
        else:
            fs.pipe_file(target, data)  # object stores publish a PUT atomically

    with_retries(put, f"marker of unit {unit:06d}")


def describe_environment(env: dict | None) -> str:
    """One line for a marker's environment, e.g. "cpu float32, 2 threads, torch 2.13.0, transformers 5.24.0"."""
    if not env:
        return "not recorded (written before attnsim recorded it)"
    threads = f"{env['threads']} thread{'s' if env['threads'] != 1 else ''}"
    return f"{env['device']} {env['dtype']}, {threads}, torch {env['torch']}, transformers {env['transformers']}"


def read_marker(url: str, unit: int) -> dict | None:
    fs, path = _fs(url)
    try:
        return json.loads(fs.cat_file(f"{path}/{marker_key(unit)}"))
    except FileNotFoundError:
        return None


def unit_environments(url: str, units) -> dict[str, int]:
    """How the given marked units were computed: each described environment -> its unit count."""
    counts: dict[str, int] = {}
    for unit in sorted(units):
        marker = read_marker(url, unit) or {}
        key = describe_environment(marker.get("environment"))
        counts[key] = counts.get(key, 0) + 1
    return counts


def completed_units(url: str) -> set[int]:
    """Units with a marker, listed once (a rerun skips them)."""
    fs, path = _fs(url)
    fs.invalidate_cache(f"{path}/{MARKER_DIR}")  # markers are written by other processes (actors)
    try:
        names = fs.ls(f"{path}/{MARKER_DIR}", detail=False)
    except FileNotFoundError:
        return set()
    out = set()
    for name in names:
        base = name.rsplit("/", 1)[-1]
        if base.startswith("shard-") and base.endswith(".json"):
            out.add(int(base[6:-5]))
    return out


def remove_marker(url: str, unit: int) -> None:
    fs, path = _fs(url)
    try:
        fs.rm_file(f"{path}/{marker_key(unit)}")
    except FileNotFoundError:
        pass
