"""The store's schema: which arrays it holds, their shapes, and the mass categories.

Everything a reader needs to interpret a store without the code that wrote it lives here, next to
the typed description of the root attributes (`StoreMeta`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, model_validator

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


# Everything that must match for a run to write into an existing store: the one list. `prepare`
# records these (`settings` attribute) and refuses a store made with others; the CLI's `prepare`
# takes each config field among them as a flag. weights_sha256 and corpus (its fingerprint) are
# derived from the model and the corpus rather than set.
STORE_SETTINGS = ("model", "weights_sha256", "max_tokens", "sentence_separator", "k", "similarity_kind", "tiers", "windows_per_shard", "corpus")
# ... of which these are recorded as computed from the model and the corpus (the weights' hash, the
# corpus's fingerprint), not as the config's value; the rest are config fields as given.
DERIVED_SETTINGS = ("weights_sha256", "corpus")
CONFIG_SETTINGS = tuple(name for name in STORE_SETTINGS if name not in DERIVED_SETTINGS)


class _Attrs(BaseModel):
    # Unknown keys are kept (a newer attnsim may add some); declared order is the order written.
    model_config = ConfigDict(extra="allow", protected_namespaces=())


class ModelMeta(_Attrs):
    name: str  # what the user asked for: alias, folder or hub id
    source: str  # the folder or hub id it was loaded from
    model_type: str
    layers: int
    heads: int
    head_size: int
    weights_sha256: str  # first 16 hex digits of a SHA-256 over every parameter, in name order
    max_tokens: int  # the longest window its position embeddings allow


class TokenClasses(_Attrs):
    cls: int | None
    sep: int | None
    punct: list[int]  # vocabulary ids of tokens made of punctuation only
    final_punct: list[int]  # ... of those, the sentence-final marks (. ! ? and the like)


class TokenizerMeta(_Attrs):
    source: str
    token_classes: TokenClasses


class WindowsMeta(_Attrs):
    max_tokens: int
    sentence_separator: str
    splitter: str
    stride: int


class CorpusMeta(_Attrs):
    spec: str
    fingerprint: str
    documents: int
    windows: int
    tokens: int
    problems: dict  # kind -> {"count", "examples"} of documents skipped or repaired


class StoreMeta(_Attrs):
    """The store's root attributes, typed: what `prepare` writes and every later stage reads.

    Format v1 repeats some values for readers without attnsim (k sits in `layout`, `settings`,
    `config` and at the top level; tiers and windows_per_shard likewise): they are kept as written,
    checked equal on reading, and read through one place here (`meta.k`, `meta.layout.tiers`).
    """

    format_version: int
    layout: Layout
    windows_per_shard: int
    n_units: int
    prepared: bool
    settings: dict  # STORE_SETTINGS -> value
    model: ModelMeta
    tokenizer: TokenizerMeta
    windows: WindowsMeta
    similarity_kind: str
    k: int
    tiers: list[str]
    mass_categories: list[str]
    corpus: CorpusMeta
    code_version: str
    config: dict  # the resolved RunConfig of the run that prepared the store
    token_checksums: dict | None = None  # {"algorithm", "units": one checksum of prepare's token arrays per unit}; verify checks them
    extracted: bool = False  # every unit has its marker (set by the driver after extraction)
    dataset_card: str | None = None  # README.md's text (set with `extracted`)

    @model_validator(mode="after")
    def _one_value_each(self) -> "StoreMeta":
        for name, values in {
            "k": {self.k, self.layout.k, self.settings.get("k", self.k)},
            "tiers": {tuple(self.tiers), self.layout.tiers, tuple(self.settings.get("tiers", self.tiers))},
            "windows_per_shard": {self.windows_per_shard, self.layout.windows_per_shard},
        }.items():
            if len(values) > 1:
                raise ValueError(f"store attribute {name} has different values: {sorted(map(str, values))}")
        return self

    @classmethod
    def from_attrs(cls, attrs: dict) -> "StoreMeta":
        return cls.model_validate({**attrs, "layout": layout_from_attrs(attrs)})

    def to_attrs(self) -> dict:
        """The attributes as written: JSON types, declared order, unset optional keys left out."""
        data = self.model_dump(mode="json", exclude_unset=True)
        data["layout"] = {**self.layout.__dict__, "tiers": list(self.layout.tiers)}
        return data

    @property
    def token_classes(self) -> dict:
        return self.tokenizer.token_classes.model_dump()

    @property
    def tier_arrays(self) -> list[str]:
        """The arrays extraction writes for this store's tiers, in tier order."""
        return [name for tier in self.layout.tiers for name in TIER_ARRAYS[tier]]
