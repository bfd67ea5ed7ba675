"""attnsim's own shard encoder (`shards.py`) against zarr: the same bytes for every array it takes,
on a full shard and on the edge shard where the store ends, with windows of every padded length,
in today's store format and in format 1 (a store being resumed), and zarr reads them back exactly."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec

from attnsim.store import io
from attnsim.store.codecs import SortedDeltaCodec, TokenPrefixCodec
from attnsim.store.io import create_store, write_unit
from attnsim.store.meta import Layout
from attnsim.store.shards import encode_shard, shard_plan

LAYOUT = Layout(n_windows=10, max_tokens=6, n_layers=2, n_heads=3, head_size=4, k=3, n_categories=8, windows_per_shard=4, tiers=("default", "vectors", "dense"))


def unit_arrays(unit: int) -> dict[str, np.ndarray]:
    start, stop = LAYOUT.unit_windows(unit)
    w, rng = stop - start, np.random.default_rng(unit)
    l, h, t, d, k = LAYOUT.n_layers, LAYOUT.n_heads, LAYOUT.max_tokens, LAYOUT.head_size, LAYOUT.k
    index = rng.integers(-1, t, (w, l, h, t, k)).astype(np.int16)
    arrays = {
        "topk_index": index,
        "topk_value": np.where(index >= 0, rng.standard_normal(index.shape), np.nan).astype(np.float16),
        "attention_mass": rng.random((w, l, h, 8)).astype(np.float32),
        "head_vectors": rng.standard_normal((w, l, h, t, d)).astype(np.float16),
        "similarity": rng.standard_normal((w, l, h, t, t)).astype(np.float16),
    }
    for window, length in enumerate(rng.permutation(t + 1)[:w]):  # padding tokens after `length`, 0 to t of them
        for name in ("topk_index", "topk_value", "head_vectors"):
            arrays[name][window, ..., length:, :] = -1 if name == "topk_index" else np.nan
    return arrays


def shard_objects(url: str) -> dict[str, bytes]:
    """Every chunk or shard object of a store (under <array>/c/), by key."""
    return {str(p.relative_to(url)): p.read_bytes() for p in sorted(Path(url).rglob("*")) if p.is_file() and "/c/" in str(p)}


def format_1_store(url: str) -> None:
    """A store as attnsim wrote it before store format 2: plain bytes, `topk_value` filtered by sorted_delta."""
    with mock.patch.dict(io.SERIALIZERS, clear=True):
        root = create_store(url, LAYOUT, {})
    spec = LAYOUT.specs()["topk_value"]
    root.create_array(
        "topk_value", shape=spec["shape"], dtype=spec["dtype"], chunks=spec["chunk"], shards=spec["shard"], fill_value=spec["fill"],
        dimension_names=spec["dims"], filters=(SortedDeltaCodec(),), overwrite=True,
        compressors=BloscCodec(cname="zstd", clevel=1, shuffle="shuffle", typesize=2, blocksize=1 << 18),
    )  # fmt: skip


@pytest.mark.parametrize("store_format", [2, 1])
def test_shards_are_byte_identical_to_zarrs_and_read_back(tmp_path, store_format):
    ours, theirs = str(tmp_path / "ours.zarr"), str(tmp_path / "zarr.zarr")
    for url in (ours, theirs):
        create_store(url, LAYOUT, {}) if store_format == 2 else format_1_store(url)
    root_ours, root_zarr = zarr.open_group(ours, mode="r+"), zarr.open_group(theirs, mode="r+")
    taken = {name for name in unit_arrays(0) if shard_plan(root_ours[name]) is not None}
    assert taken == {"topk_index", "topk_value", "attention_mass", "head_vectors"}  # dense goes through zarr
    plan = shard_plan(root_ours["topk_value"])  # encoded here too
    if store_format == 2:
        assert plan.token_prefix == TokenPrefixCodec(sorted_delta=True) and not plan.filters
        assert shard_plan(root_ours["topk_index"]).token_prefix == TokenPrefixCodec()
    else:
        assert plan.token_prefix is None and [type(c) for c in plan.filters] == [SortedDeltaCodec]
    for unit in range(LAYOUT.n_units):  # units 0, 1 full; unit 2 holds windows 8-9 of a 4-window shard
        arrays = unit_arrays(unit)
        write_unit(root_ours, LAYOUT, unit, arrays, replace=False)
        start, stop = LAYOUT.unit_windows(unit)
        for name, data in arrays.items():
            root_zarr[name].with_config({"write_empty_chunks": True})[start:stop] = data
    written = shard_objects(ours)
    assert len(written) == 5 * LAYOUT.n_units
    assert written == shard_objects(theirs)
    for unit in range(LAYOUT.n_units):
        start, stop = LAYOUT.unit_windows(unit)
        for name, data in unit_arrays(unit).items():
            np.testing.assert_array_equal(root_ours[name][start:stop], data)
    # the edge shard's windows past the store's end read as the fill value
    assert zarr.open_group(ours, mode="r")["topk_index"].shape[0] == 10


def test_an_array_of_another_layout_is_left_to_zarr(tmp_path):
    root = zarr.open_group(str(tmp_path / "other.zarr"), mode="w", zarr_format=3)
    unsharded = root.create_array("a", shape=(8, 3), chunks=(4, 3), dtype="int16")
    two_axes = root.create_array("b", shape=(8, 2, 3), chunks=(1, 1, 3), shards=(4, 2, 3), dtype="int16")
    plain = root.create_array("c", shape=(8, 3), chunks=(1, 3), shards=(4, 3), dtype="int16", compressors=None)
    assert shard_plan(unsharded) is None and shard_plan(two_axes) is None and shard_plan(plain) is None


def test_encode_shard_refuses_a_unit_of_the_wrong_shape(tmp_path):
    root = create_store(str(tmp_path / "s.zarr"), LAYOUT, {})
    plan = shard_plan(root["topk_index"])
    with pytest.raises(AssertionError):
        encode_shard(plan, np.zeros((5, 2, 3, 6, 3), np.int16))  # more windows than a shard holds
