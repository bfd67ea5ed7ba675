"""A unit's marker checksum: CRC-32C now, CRC-32 and SHA-256 (markers written before markers named their
algorithm) earlier; verify reads all three and names an algorithm it does not know. Synthetic store, no model."""

from __future__ import annotations

import hashlib
import zlib

import numpy as np
import pytest
from test_store_writes import LAYOUT, unit_arrays

from attnsim.store.io import CHECKSUM_ALGORITHM, UnitArrays, create_store, open_store, unit_checksum, unit_environments, write_marker, write_unit
from attnsim.store.verify import _check_unit, environment_lines


def serialised(arrays: dict[str, np.ndarray]) -> bytes:
    """What the checksum covers, written out independently: per array in name order, its name,
    dtype and shape, then its C-order bytes."""
    out = b""
    for name in sorted(arrays):
        a = arrays[name]
        out += name.encode() + f"{a.dtype}{a.shape}".encode() + a.tobytes(order="C")
    return out


def crc32c_bitwise(data: bytes) -> int:
    """CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), one bit at a time: slow, independent."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_crc32c_reference_matches_the_published_check_value():
    assert crc32c_bitwise(b"123456789") == 0xE3069283  # the CRC catalogue's check value for CRC-32C


def test_checksums_equal_an_independent_crc32c_crc32_and_sha256():
    arrays = unit_arrays(0)
    arrays["strided"] = np.arange(24, dtype=np.int64).reshape(4, 6)[:, ::2]  # not contiguous
    arrays["empty"] = np.zeros((0, 3), np.int16)
    data = serialised(arrays)
    assert CHECKSUM_ALGORITHM == "crc32c"
    assert unit_checksum(arrays) == f"{crc32c_bitwise(data):08x}"
    assert unit_checksum(arrays, "crc32") == f"{zlib.crc32(data):08x}"
    assert unit_checksum(arrays, "sha256") == hashlib.sha256(data).hexdigest()
    flipped = {**arrays, "topk_value": arrays["topk_value"].copy()}
    flipped["topk_value"].view(np.uint16)[0, 0, 0, 0, 0] ^= 1  # one bit
    assert unit_checksum(flipped) != unit_checksum(arrays)
    with pytest.raises(ValueError, match="unknown checksum algorithm"):
        unit_checksum(arrays, "md5")


@pytest.mark.parametrize(
    "marker_checksum, expected",
    [
        (lambda a: {"checksum": unit_checksum(a), "checksum_algorithm": "crc32c"}, None),
        (lambda a: {"checksum": unit_checksum(a, "crc32"), "checksum_algorithm": "crc32"}, None),  # the previous round's markers
        (lambda a: {"checksum": unit_checksum(a, "crc32"), "checksum_algorithm": "crc32c"}, "checksum differs from the marker"),
        (lambda a: {"checksum": unit_checksum(a, "sha256")}, None),  # an older marker: no algorithm named
        (lambda a: {"checksum": unit_checksum(a)}, "checksum differs from the marker"),  # crc32c read as sha256
        (lambda a: {"checksum": "0", "checksum_algorithm": "xxh3"}, "marker names checksum algorithm 'xxh3'"),
    ],
)
def test_verify_reads_the_algorithm_its_marker_names(tmp_path, marker_checksum, expected):
    url = str(tmp_path / "store.zarr")
    create_store(url, LAYOUT, {})
    arrays = unit_arrays(0)
    root = open_store(url, "r+")
    write_unit(root, LAYOUT, 0, arrays, replace=False)
    write_marker(url, 0, {"windows": [0, 4], "tokens": 0, "arrays": sorted(arrays), **marker_checksum(arrays)})
    reason, _ = _check_unit(url, UnitArrays(root, LAYOUT), 0, sorted(arrays))
    assert reason == expected if expected is None else reason.startswith(expected)


def test_units_computed_under_different_environments_are_reported(tmp_path):
    url = str(tmp_path / "store.zarr")
    cpu2 = {"device": "cpu", "dtype": "float32", "threads": 2, "torch": "2.13.0", "transformers": "5.24.0"}
    cpu1 = {**cpu2, "threads": 1}
    for unit, env in ((0, cpu2), (1, cpu2), (2, cpu1), (3, None)):
        write_marker(url, unit, {"windows": [unit, unit + 1]} | ({"environment": env} if env else {}))
    counts = unit_environments(url, [0, 1, 2, 3])
    assert counts == {
        "cpu float32, 2 threads, torch 2.13.0, transformers 5.24.0": 2,
        "cpu float32, 1 thread, torch 2.13.0, transformers 5.24.0": 1,
        "not recorded (written before attnsim recorded it)": 1,
    }
    lines = environment_lines(counts)
    assert lines[0].startswith("units were computed under 3 environments")
    assert lines[1] == "  2 units: cpu float32, 2 threads, torch 2.13.0, transformers 5.24.0"
    assert environment_lines(unit_environments(url, [0, 1])) == []  # one environment: nothing to say
