"""attnsim's zarr codecs (store/codecs.py): lossless on any bits and any padding, the hand-counted
encoding of a descending row and of a padded chunk, a damaged chunk refused, and a store read back
the same by zarr, xarray and a process that never imports attnsim (the `zarr.codecs` entry points)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from attnsim.store.codecs import SORTED_DELTA, TOKEN_PREFIX, SortedDeltaCodec, TokenPrefixCodec
from attnsim.store.io import create_store, write_unit
from attnsim.store.meta import Layout

LAYOUT = Layout(n_windows=5, max_tokens=6, n_layers=2, n_heads=3, head_size=4, k=3, n_categories=8, windows_per_shard=2, tiers=("default",))


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_every_bit_pattern_decodes_to_itself(dtype):
    width = np.dtype(dtype).itemsize
    rng = np.random.default_rng(width)
    bits = rng.integers(np.iinfo(f"i{width}").min, np.iinfo(f"i{width}").max, (4, 3, 7, 5), dtype=f"i{width}", endpoint=True)
    bits[0, 0, 0] = np.iinfo(f"i{width}").min  # the extremes, where the wrapping arithmetic turns
    bits[0, 0, 1] = np.iinfo(f"i{width}").max
    values = bits.view(dtype)  # NaN payloads, infinities, -0.0, unsorted rows: all of them
    encoded = SortedDeltaCodec.encode_array(values)
    assert encoded.shape == values.shape and encoded.dtype == values.dtype
    np.testing.assert_array_equal(SortedDeltaCodec.decode_array(encoded).view(f"i{width}"), bits)


def test_a_descending_row_becomes_its_first_value_and_small_steps_slot_major():
    # float16 bits: 2.0 = 0x4000, 1.5 = 0x3E00, 1.0 = 0x3C00; -1.0 = 0xBC00 orders as -0x3C01 (flipped magnitude)
    values = np.array([[2.0, 1.5, 1.0], [1.0, -1.0, np.nan]], np.float16)  # (T=2, k=3)
    nan_bits = int(values.view(np.int16)[1, 2])  # 0x7E00: orders as itself
    # as ordered ints: [[0x4000, 0x3E00, 0x3C00], [0x3C00, -0x3C01, nan_bits]]; each step below the one before
    delta = [[0x4000, 0x0200, 0x0200], [0x3C00, 0x3C00 + 0x3C01, (-0x3C01 - nan_bits) & 0xFFFF]]
    assert SortedDeltaCodec.encode_array(values).view(np.uint16).reshape(3, 2).tolist() == [
        [d & 0xFFFF for d in column] for column in zip(*delta)
    ]  # slot-major: the first slot of both tokens, then the second, then the third


def test_a_store_reads_back_the_same_through_zarr_xarray_and_a_fresh_process(tmp_path):
    xr = pytest.importorskip("xarray")
    url = str(tmp_path / "s.zarr")
    root = create_store(url, LAYOUT, {})
    meta = json.loads(Path(url, "topk_value", "zarr.json").read_text())
    assert meta["codecs"][0]["configuration"]["codecs"][0] == {"name": TOKEN_PREFIX, "configuration": {"sorted_delta": True}}
    rng = np.random.default_rng(0)
    shape = (LAYOUT.n_windows, LAYOUT.n_layers, LAYOUT.n_heads, LAYOUT.max_tokens, LAYOUT.k)
    values = -np.sort(-rng.standard_normal(shape), axis=-1).astype(np.float16)
    values[-1, ..., -2:, :] = np.nan  # padding tokens
    for unit in range(LAYOUT.n_units):
        start, stop = LAYOUT.unit_windows(unit)
        write_unit(root, LAYOUT, unit, {"topk_value": values[start:stop]}, replace=False)
    np.testing.assert_array_equal(zarr.open_group(url, mode="r")["topk_value"][:], values)
    np.testing.assert_array_equal(xr.open_zarr(url, consolidated=False)["topk_value"].values, values)
    code = f"import zarr, numpy as np, sys; a = zarr.open_array({url + '/topk_value'!r})[:]; np.save(sys.argv[1], a)"
    assert "attnsim" not in code
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "fresh.npy")], check=True)
    np.testing.assert_array_equal(np.load(tmp_path / "fresh.npy"), values)


def test_a_codec_of_another_configuration_is_refused():
    with pytest.raises(ValueError, match=SORTED_DELTA):
        SortedDeltaCodec.from_dict({"name": SORTED_DELTA, "configuration": {"axis": 2}})
    for config in ({"axis": 2}, {"sorted_delta": "yes"}):
        with pytest.raises(ValueError, match=TOKEN_PREFIX):
            TokenPrefixCodec.from_dict({"name": TOKEN_PREFIX, "configuration": config})
    assert TokenPrefixCodec.from_dict(TokenPrefixCodec(sorted_delta=True).to_dict()) == TokenPrefixCodec(sorted_delta=True)


CODINGS = [("float16", np.nan, True), ("float32", np.nan, True), ("int16", -1, False), ("float16", np.nan, False)]


@pytest.mark.parametrize(("dtype", "fill", "sorted_delta"), CODINGS)
def test_token_prefix_round_trips_any_bits_with_any_tail(dtype, fill, sorted_delta):
    codec, width = TokenPrefixCodec(sorted_delta=sorted_delta), np.dtype(dtype).itemsize
    rng = np.random.default_rng(width)
    fill_bits = np.array(fill, dtype).view(f"i{width}")
    for kept in range(8):  # 0 (an all-padding chunk) to 7 (no padding) of 7 tokens
        bits = rng.integers(np.iinfo(f"i{width}").min, np.iinfo(f"i{width}").max, (1, 2, 3, 7, 4), dtype=f"i{width}", endpoint=True)
        bits[..., kept:, :] = fill_bits
        if 0 < kept < 7:
            bits[..., kept - 1, :] = fill_bits  # a kept token that is the fill value in all but one place
            bits[0, 1, 2, kept - 1, 3] = fill_bits + 1
        encoded = codec.encode_array(bits.view(dtype), fill)
        assert encoded.dtype == np.uint8 and encoded.size == 4 + 2 * 3 * kept * 4 * width  # the header, then only the kept tokens
        assert int(encoded[:4].view("<u4")[0]) == kept
        decoded = codec.decode_array(encoded, bits.shape, np.dtype(dtype), fill)
        np.testing.assert_array_equal(decoded.view(f"i{width}"), bits)


def test_token_prefix_by_hand_and_a_damaged_chunk_is_refused():
    values = np.array([[[2.0, 1.0], [1.5, 0.5], [np.nan, np.nan]]], np.float16)  # (1, T=3, k=2): one padding token
    encoded = TokenPrefixCodec(sorted_delta=True).encode_array(values, np.nan)
    # t = 2, then slot-major ordered ints: slot 0 of both tokens (2.0, 1.5), then each token's step down
    assert encoded[:4].view("<u4").tolist() == [2]
    assert encoded[4:].view("<u2").tolist() == [0x4000, 0x3E00, 0x4000 - 0x3C00, 0x3E00 - 0x3800]
    with pytest.raises(ValueError, match="damaged chunk"):
        TokenPrefixCodec(sorted_delta=True).decode_array(encoded[:-2], values.shape, values.dtype, np.nan)
    with pytest.raises(ValueError, match="damaged chunk"):
        TokenPrefixCodec().decode_array(np.zeros(2, np.uint8), values.shape, values.dtype, np.nan)
