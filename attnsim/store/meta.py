"""The store's schema: which arrays it holds, their shapes, and the mass categories.

Everything a reader needs to interpret a store without the code that wrote it lives here, next to
the typed description of the root attributes (`StoreMeta`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Order of the attention-mass categories along the `category` axis; also written to the attributes.
MASS_CATEGORIES = ("cls", "sep", "punct", "self", "prev", "next", "same_sentence", "entropy")

TOKEN_ARRAYS = ("input_ids", "sentence_id", "char_span", "doc_id", "length")
TIER_ARRAYS = {
    "default": ("topk_index", "topk_value", "attention_mass"),
    "vectors": ("head_vectors",),
    "dense": ("similarity",),
}


@dataclass(frozen=True)
class Layout:
    """Sizes that fix every array's shape."""

    n_windows: int
    max_tokens: int
    n_layers: int
    n_heads: int
    head_size: int
    k: int
    n_categories: int
    windows_per_shard: int
    tiers: tuple[str, ...]

    @property
    def n_units(self) -> int:
        return math.ceil(self.n_windows / self.windows_per_shard)

    def unit_windows(self, unit: int) -> tuple[int, int]:
        start = unit * self.windows_per_shard
        return start, min(start + self.windows_per_shard, self.n_windows)

    def specs(self) -> dict[str, dict]:
        """name -> shape, dtype, dims, inner chunk, fill for each array of the store."""
        w, t, l, h, d, k = self.n_windows, self.max_tokens, self.n_layers, self.n_heads, self.head_size, self.k
        s = {
            "input_ids": ((w, t), "int32", ("window", "token"), -1),
            "sentence_id": ((w, t), "int32", ("window", "token"), -1),
            "char_span": ((w, t, 2), "int64", ("window", "token", "edge"), -1),
            "doc_id": ((w,), "int64", ("window",), -1),
            "length": ((w,), "int32", ("window",), 0),
        }
        per_head = ("window", "layer", "head")
        if "default" in self.tiers:
            s["topk_index"] = ((w, l, h, t, k), "int16", per_head + ("token", "k"), -1)
            s["topk_value"] = ((w, l, h, t, k), "float16", per_head + ("token", "k"), float("nan"))
            s["attention_mass"] = ((w, l, h, self.n_categories), "float32", per_head + ("category",), float("nan"))
        if "vectors" in self.tiers:
            s["head_vectors"] = ((w, l, h, t, d), "float16", per_head + ("token", "dim"), float("nan"))
        if "dense" in self.tiers:
            s["similarity"] = ((w, l, h, t, t), "float16", per_head + ("token", "other"), float("nan"))
        out = {}
        for name, (shape, dtype, dims, fill) in s.items():
            shard = (self.windows_per_shard,) + shape[1:]
            # Big per-head arrays: one inner chunk per window (per window and layer for `dense`) so
            # a reader can fetch one window lazily; small arrays: the shard is the chunk.
            if name == "similarity":
                chunk = (1, 1) + shape[2:]
            elif len(shape) >= 4:
                chunk = (1,) + shape[1:]
            else:
                chunk = shard
            out[name] = {"shape": shape, "dtype": dtype, "dims": dims, "fill": fill, "chunk": chunk, "shard": shard}
        return out


def layout_from_attrs(attrs: dict) -> Layout:
    return Layout(**attrs["layout"] | {"tiers": tuple(attrs["layout"]["tiers"])})
