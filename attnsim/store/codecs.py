"""Zarr v3 codecs of attnsim's own, registered under the names they carry in a store's metadata.

`attnsim.sorted_delta` (array -> array, lossless) stores `topk_value`, whose last axis (k) holds
each token's neighbour similarities in descending order. Each float's bits are mapped to an
integer of the same width that orders as the float does (sign-magnitude to two's complement),
each value after the first of a row is replaced by its distance below the one before it (small
and non-negative on a descending row), and the result is laid out slot-major, (..., k, T) in C
order, so that a run of one slot over the tokens of a head is contiguous for the compressor.
Every step is a bijection on bit patterns with wrapping integer arithmetic, so any input
(NaN payloads, rows not sorted) decodes to the same bits. The encoded array keeps the chunk's
shape and dtype (its elements are the permuted integers viewed as floats), so the codecs after it
(bytes, blosc) see an ordinary array.

Measured on minilm/lee (3 units, 96 windows, blosc zstd level 1 with byte shuffle after it):
`topk_value` 790 -> 593 bytes per token. The neighbour offsets j - i that issue 12 suggested for
`topk_index` compressed worse than the absolute indices there (442 -> 596 bytes per token, 604
zigzagged; shorter only for 6 of 72 heads): most heads' neighbours are a few fixed positions
([CLS], [SEP], punctuation), which repeat as absolute indices. So `topk_index` has no filter.

Readers need this module imported (any `attnsim.store` reader imports it) or attnsim installed,
whose `zarr.codecs` entry point lets plain zarr and xarray find the codec.

Example::

    SortedDeltaCodec().encode_array(values)  # what is compressed
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from zarr.abc.codec import ArrayArrayCodec
from zarr.core.array_spec import ArraySpec
from zarr.core.buffer import NDBuffer
from zarr.registry import register_codec

SORTED_DELTA = "attnsim.sorted_delta"


def _ordered_ints(bits: np.ndarray) -> np.ndarray:
    """Float bits (as signed ints) <-> ints that order as the floats do; its own inverse.
    A negative float's magnitude bits are flipped, so a larger magnitude gives a smaller int.
    One temporary, updated in place (this runs on every chunk the encoder threads compress)."""
    width = bits.dtype.itemsize * 8
    out = bits >> (width - 1)  # -1 where negative, else 0
    out &= np.array(2 ** (width - 1) - 1, bits.dtype)
    out ^= bits
    return out


@dataclass(frozen=True)
class SortedDeltaCodec(ArrayArrayCodec):
    """Descending float rows along the last axis -> ordered-int differences, slot-major. Lossless."""

    is_fixed_size = True

    @classmethod
    def from_dict(cls, data: dict) -> SortedDeltaCodec:
        if data.get("name") != SORTED_DELTA or data.get("configuration"):
            raise ValueError(f"not a {SORTED_DELTA} codec without configuration: {data!r}")
        return cls()

    def to_dict(self) -> dict:
        return {"name": SORTED_DELTA}

    def validate(self, *, shape, dtype, chunk_grid) -> None:
        if np.dtype(dtype.to_native_dtype()).kind != "f" or len(shape) < 2:
            raise ValueError(f"{SORTED_DELTA} takes floating-point arrays of two or more axes, not {dtype} of shape {shape}")

    def resolve_metadata(self, chunk_spec: ArraySpec) -> ArraySpec:
        return chunk_spec  # same shape and dtype: only the contents are permuted

    def compute_encoded_size(self, input_byte_length: int, _chunk_spec: ArraySpec) -> int:
        return input_byte_length

    @staticmethod
    def encode_array(values: np.ndarray) -> np.ndarray:
        """(..., T, k) floats -> the encoded array, same shape and dtype."""
        bits = np.ascontiguousarray(np.swapaxes(values.view(f"i{values.dtype.itemsize}"), -1, -2))  # (..., k, T)
        ordered = _ordered_ints(bits)  # (..., k, T): transposed first, so the passes below are contiguous
        delta = np.empty_like(ordered)
        delta[..., 0, :] = ordered[..., 0, :]
        np.subtract(ordered[..., :-1, :], ordered[..., 1:, :], out=delta[..., 1:, :])  # wraps: a bijection
        return delta.reshape(values.shape).view(values.dtype)

    @staticmethod
    def decode_array(encoded: np.ndarray) -> np.ndarray:
        """The inverse of `encode_array`."""
        *lead, t, k = encoded.shape
        delta = np.swapaxes(np.ascontiguousarray(encoded).view(f"i{encoded.dtype.itemsize}").reshape(*lead, k, t), -1, -2)
        ordered = np.empty(encoded.shape, delta.dtype)  # (..., T, k)
        ordered[..., 0] = delta[..., 0]
        np.cumsum(delta[..., 1:], axis=-1, dtype=delta.dtype, out=ordered[..., 1:])
        np.subtract(ordered[..., :1], ordered[..., 1:], out=ordered[..., 1:])  # first - running sum, wrapping
        return _ordered_ints(ordered).view(encoded.dtype)

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> NDBuffer:
        return chunk_spec.prototype.nd_buffer.from_numpy_array(self.encode_array(chunk_array.as_numpy_array()))

    def _decode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> NDBuffer:
        return chunk_spec.prototype.nd_buffer.from_numpy_array(self.decode_array(chunk_array.as_numpy_array()))

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> NDBuffer:
        return self._encode_sync(chunk_array, chunk_spec)

    async def _decode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> NDBuffer:
        return self._decode_sync(chunk_array, chunk_spec)


register_codec(SORTED_DELTA, SortedDeltaCodec)
