"""Unit writes that survive what a crash or a flaky object store leaves behind: transient errors
are retried (and only those), and a unit redone over a damaged or half-written shard is rewritten
whole. Synthetic stores, no model."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest

from attnsim.store import io as store
from attnsim.store import retry
from attnsim.store.io import create_store, read_unit, write_marker, write_unit
from attnsim.store.meta import Layout
from attnsim.store.retry import is_transient, with_retries

LAYOUT = Layout(n_windows=10, max_tokens=6, n_layers=2, n_heads=2, head_size=4, k=3, n_categories=8, windows_per_shard=4, tiers=("default",))


def unit_arrays(unit: int, seed: int = 0) -> dict[str, np.ndarray]:
    start, stop = LAYOUT.unit_windows(unit)
    w, rng = stop - start, np.random.default_rng(seed + unit)
    return {
        "topk_index": rng.integers(-1, 6, (w, 2, 2, 6, 3)).astype(np.int16),
        "topk_value": rng.standard_normal((w, 2, 2, 6, 3)).astype(np.float16),
        "attention_mass": rng.random((w, 2, 2, 8)).astype(np.float32),
    }


@pytest.fixture
def url(tmp_path) -> str:
    url = str(tmp_path / "store.zarr")
    create_store(url, LAYOUT, {})
    return url


@pytest.fixture
def no_sleep(monkeypatch):
    slept = []
    monkeypatch.setattr(retry.time, "sleep", slept.append)
    return slept


def shard_file(url: str, name: str, unit: int) -> Path:
    ndim = {"topk_index": 5, "topk_value": 5, "attention_mass": 4}[name]
    return Path(url, name, "c", str(unit), *["0"] * (ndim - 1))


def test_transient_errors_are_told_apart_from_bugs_and_missing_paths():
    from botocore.exceptions import ClientError, EndpointConnectionError

    def client_error(code):
        return ClientError({"Error": {"Code": code, "Message": code}}, "PutObject")

    assert is_transient(OSError(errno.EREMOTEIO, "InternalError"))  # what s3fs makes of a 500
    assert is_transient(ConnectionResetError())
    assert is_transient(TimeoutError())
    assert is_transient(EndpointConnectionError(endpoint_url="http://127.0.0.1:1"))
    assert is_transient(client_error("SlowDown")) and is_transient(client_error("503"))
    wrapped = RuntimeError("zarr wrapped it")
    wrapped.__cause__ = ConnectionAbortedError()
    assert is_transient(wrapped)
    for error in (FileNotFoundError(), PermissionError(), client_error("AccessDenied"), ValueError(), KeyError("x"), AssertionError()):
        assert not is_transient(error), error


def test_with_retries_tries_again_after_transient_errors_only(no_sleep):
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError("peer went away")
        return "written"

    assert with_retries(flaky, "x", delays=(0.1, 0.2, 0.4)) == "written"
    assert len(calls) == 3 and no_sleep == [0.1, 0.2]

    def bug():
        calls.append(1)
        raise ValueError("a bug is not retried")

    calls.clear()
    with pytest.raises(ValueError):
        with_retries(bug, "x", delays=(0.1, 0.2))
    assert len(calls) == 1

    def down():
        calls.append(1)
        raise OSError(errno.EIO, "still down")

    calls.clear()
    with pytest.raises(OSError, match="still down"):
        with_retries(down, "x", delays=(0.1, 0.2))
    assert len(calls) == 3  # the first try and one per delay, then the error goes up


def test_write_unit_and_marker_ride_out_a_transient_store_error(url, monkeypatch, no_sleep):
    import zarr
    from fsspec.implementations.local import LocalFileSystem

    failures = {"shard": 1, "marker": 1}
    real_write, real_pipe = Path.write_bytes, LocalFileSystem.pipe_file

    def flaky_write(self, data):  # shards.put_shard writes a local store's shard file itself
        if "/c/" in str(self) and failures["shard"]:
            failures["shard"] -= 1
            real_write(self, data[: len(data) // 2])  # half of it reached the disk
            raise OSError(errno.EIO, f"injected failure writing {self}")
        return real_write(self, data)

    def flaky_pipe(self, path, *args, **kwargs):
        if "_markers" in path and failures["marker"]:
            failures["marker"] -= 1
            raise ConnectionResetError("injected failure writing a marker")
        return real_pipe(self, path, *args, **kwargs)

    monkeypatch.setattr(Path, "write_bytes", flaky_write)
    monkeypatch.setattr(LocalFileSystem, "pipe_file", flaky_pipe)
    root = zarr.open_group(url, mode="r+")
    arrays = unit_arrays(1)
    write_unit(root, LAYOUT, 1, arrays)
    write_marker(url, 1, {"checksum": "c"})
    assert failures == {"shard": 0, "marker": 0} and len(no_sleep) == 2  # both failed once, then succeeded
    back = read_unit(zarr.open_group(url, mode="r"), LAYOUT, 1, arrays)
    for name in arrays:
        np.testing.assert_array_equal(back[name], arrays[name])
    assert store.read_marker(url, 1)["checksum"] == "c"
    assert not list(Path(url).rglob("*.partial"))  # the failed write left nothing behind


@pytest.mark.parametrize("unit", [1, 2])  # a full shard, and the last one (the store ends inside it)
@pytest.mark.parametrize("damage", ["truncate", "flip_index"])
@pytest.mark.parametrize("encoder", ["attnsim", "zarr"])  # shards.py, or zarr's own write (other layouts)
def test_a_redone_unit_replaces_a_damaged_shard_whole(url, unit, damage, encoder, monkeypatch):
    import zarr

    if encoder == "zarr":
        monkeypatch.setattr(store, "shard_plan", lambda array: None)
    root = zarr.open_group(url, mode="r+")
    write_unit(root, LAYOUT, unit, unit_arrays(unit, seed=1))
    good = {name: shard_file(url, name, unit).read_bytes() for name in unit_arrays(unit)}
    path = shard_file(url, "topk_value", unit)
    raw = bytearray(path.read_bytes())
    if damage == "truncate":  # a write cut off by a crash
        raw = raw[: len(raw) // 2]
    else:  # bit rot in the shard index (its last bytes)
        raw[-12:-4] = bytes(b ^ 0xFF for b in raw[-12:-4])
    path.write_bytes(bytes(raw))
    (path.parent / f"{path.name}.0123abcd.partial").write_bytes(b"left by a killed write")

    if encoder == "zarr":
        # zarr merges into an existing shard, so it reads the damaged one and fails: the reason
        # write_unit deletes a unit's old shards before redoing it on that path.
        with pytest.raises(Exception):
            write_unit(root, LAYOUT, unit, unit_arrays(unit, seed=1), replace=False)
    write_unit(root, LAYOUT, unit, unit_arrays(unit, seed=1))
    assert {name: shard_file(url, name, unit).read_bytes() for name in good} == good
    assert not list(path.parent.glob("*.partial"))


def test_unit_arrays_looks_each_array_up_once_and_writes_what_write_unit_writes(url, tmp_path):
    class CountingRoot:  # a zarr group that counts the metadata look-ups (`root[name]`)
        def __init__(self, root):
            self.root, self.lookups = root, 0

        def __getitem__(self, name):
            self.lookups += 1
            return self.root[name]

    other = str(tmp_path / "other.zarr")
    create_store(other, LAYOUT, {})
    counting = CountingRoot(store.open_store(url, "r+"))
    units = store.UnitArrays(counting, LAYOUT)
    for unit in range(LAYOUT.n_units):
        units.write(unit, unit_arrays(unit))
        write_unit(store.open_store(other, "r+"), LAYOUT, unit, unit_arrays(unit))
    assert counting.lookups == 3  # one per array, not one per array and unit
    for unit in range(LAYOUT.n_units):
        got = units.read(unit, sorted(unit_arrays(unit)))
        want = read_unit(store.open_store(other), LAYOUT, unit, sorted(unit_arrays(unit)))
        assert all(np.array_equal(got[name], want[name], equal_nan=True) for name in want)
    files = sorted(p.relative_to(url).as_posix() for p in Path(url).rglob("*") if p.is_file() and "c/" in p.as_posix())
    assert files and all((Path(url) / f).read_bytes() == (Path(other) / f).read_bytes() for f in files)
