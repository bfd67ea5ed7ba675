"""Open an attnsim store as a dataset: one window's tokens, text, similarity matrix and neighbours.

Opening reads only metadata. Each call reads the chunks of the one window it asks for (the store
keeps one inner chunk per window for the per-head arrays), so a store of millions of windows on
s3:// opens and answers in the time of one chunk. ``.dataset`` is the whole store as a lazy xarray
Dataset (dask arrays) for corpus-wide work.

Example::

    import attnsim
    store = attnsim.open_store("runs/default/store.zarr")   # or s3://bucket/run/store.zarr
    s = store.similarity(window=3, layer=5, head=2)          # s.values (T, T), s.source
    print(store.text(3))
    for n in store.neighbors(3, layer=5, head=2, token=7):
        print(n.index, n.token, n.value)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import fsspec
import numpy as np
import zarr

from attnsim.errors import UserError
from attnsim.model.similarity import similarity_matrix
from attnsim.store.meta import StoreMeta

SOURCES = ("dense", "vectors", "topk")  # where .similarity takes S from, best first


class OutOfRange(UserError, IndexError):
    """A window, layer, head or token index outside the store; names the valid range."""


@dataclass(frozen=True)
class Similarity:
    """One head's context similarity matrix on one window (padding cut off)."""

    values: np.ndarray  # (T, T) float32, S[i, j] with i the row; NaN where unknown
    source: str  # dense: the stored S; vectors: v_i . v_j from the stored float16 head vectors;
    #              topk: only each row's top k entries are known (NaN elsewhere)
    kind: str  # dot (the paper's scalar product) or cosine
    window: int
    layer: int
    head: int
    tokens: list[str]  # (T,) token strings
    sentence_id: np.ndarray  # (T,) sentence of each token within its document, -1 = [CLS]/[SEP]

    @property
    def sparse(self) -> bool:
        return self.source == "topk"


@dataclass(frozen=True)
class Neighbor:
    index: int  # position j in the window
    token: str
    value: float  # S[i, j] (float16 in the store)


class SimilarityStore:
    """A read-only view of one attnsim store; see the module docstring."""

    def __init__(self, url: str, storage_options: dict | None = None):
        self.url = str(url)
        self.storage_options = storage_options or {}
        fs, path = fsspec.core.url_to_fs(self.url, **self.storage_options)
        if not fs.exists(f"{path.rstrip('/')}/zarr.json"):
            raise UserError(f"no attnsim store at {self.url!r}; give the path or URL of a store.zarr made by `attnsim run`")
        self.root = zarr.open_group(self.url, mode="r", zarr_format=3, storage_options=self.storage_options or None)
        self.attrs = dict(self.root.attrs)
        self.meta = StoreMeta.from_attrs(self.attrs)
        layout = self.meta.layout
        self.n_windows, self.n_layers, self.n_heads = layout.n_windows, layout.n_layers, layout.n_heads
        self.kind = self.meta.similarity_kind
        self.tiers = layout.tiers

    def __repr__(self) -> str:
        return (
            f"SimilarityStore({self.url!r}: {self.meta.model.name}, {self.n_windows} windows, "
            f"{self.n_layers} layers x {self.n_heads} heads, tiers {', '.join(self.tiers)})"
        )

    # ------------------------------------------------------------------ whole store
    @functools.cached_property
    def dataset(self):
        """The store as a lazy xarray Dataset (dims window, layer, head, token, k, ...)."""
        import xarray as xr

        return xr.open_zarr(self.url, storage_options=self.storage_options or None)

    @property
    def card(self) -> str | None:
        """The dataset card (also README.md in the store), if extraction finished."""
        return self.meta.dataset_card

    @functools.cached_property
    def tokenizer(self):
        """The tokenizer recorded in the store; falls back to the model name if that folder moved."""
        from attnsim.model.loading import load_tokenizer

        tried = []
        for source in dict.fromkeys([self.meta.tokenizer.source, self.meta.model.name]):
            try:
                return load_tokenizer(source)
            except UserError as e:
                tried.append(str(e))
        raise UserError(f"cannot load the tokenizer of store {self.url!r}: " + "; ".join(tried))

    # ------------------------------------------------------------------ one window
    def length(self, window: int) -> int:
        self.check(window=window)
        return int(self.root["length"][window])

    def input_ids(self, window: int) -> np.ndarray:
        """(T,) token ids of the window's real length."""
        return self.root["input_ids"][window, : self.length(window)].astype(np.int64)

    def sentence_ids(self, window: int) -> np.ndarray:
        """(T,) sentence id of each token within its document; -1 for [CLS]/[SEP]."""
        return self.root["sentence_id"][window, : self.length(window)]

    def tokens(self, window: int) -> list[str]:
        return self.tokenizer.convert_ids_to_tokens(self.input_ids(window).tolist())

    def text(self, window: int) -> str:
        """The window's text, decoded from its tokens (special tokens left out)."""
        return self.tokenizer.decode(self.input_ids(window).tolist(), skip_special_tokens=True)

    def similarity(self, window: int, layer: int, head: int) -> Similarity:
        """S of one head on one window: stored dense S, else from head vectors, else sparse top-k."""
        self.check(window=window, layer=layer, head=head)
        n = self.length(window)
        if "similarity" in self.root:
            values, source = self.root["similarity"][window, layer, head, :n, :n].astype(np.float32), "dense"
        elif "head_vectors" in self.root:
            v = self.root["head_vectors"][window, layer, head, :n].astype(np.float32)  # (T, d)
            values, source = similarity_matrix(v, self.kind), "vectors"  # (T, T)
        else:
            index = self.root["topk_index"][window, layer, head, :n].astype(np.int64)  # (T, k)
            value = self.root["topk_value"][window, layer, head, :n].astype(np.float32)  # (T, k)
            values, source = np.full((n, n), np.nan, np.float32), "topk"
            rows, slots = np.nonzero(index >= 0)
            values[rows, index[rows, slots]] = value[rows, slots]
        return Similarity(values, source, self.kind, window, layer, head, self.tokens(window), self.sentence_ids(window))

    def neighbors(self, window: int, layer: int, head: int, token: int, k: int | None = None) -> list[Neighbor]:
        """Token `token`'s most similar other tokens of the window, best first (the stored top k)."""
        self.check(window=window, layer=layer, head=head)
        n = self.length(window)
        if not 0 <= token < n:
            raise OutOfRange(f"token {token} is outside window {window} (0..{n - 1})")
        index = self.root["topk_index"][window, layer, head, token]  # (k,)
        value = self.root["topk_value"][window, layer, head, token].astype(np.float32)
        keep = index >= 0
        names = self.tokenizer.convert_ids_to_tokens(self.input_ids(window)[index[keep]].tolist())
        out = [Neighbor(int(j), name, float(v)) for j, name, v in zip(index[keep], names, value[keep])]
        return out[:k] if k is not None else out

    def check(self, window: int | None = None, layer: int | None = None, head: int | None = None) -> None:
        """Raise OutOfRange (a UserError and an IndexError) naming the valid range of a bad index."""
        for name, value, size in (("window", window, self.n_windows), ("layer", layer, self.n_layers), ("head", head, self.n_heads)):
            if value is not None and not 0 <= int(value) < size:
                raise OutOfRange(f"{name} {value} is outside the store ({name}s 0..{size - 1})")


def open_store(url: str, storage_options: dict | None = None) -> SimilarityStore:
    """Open an attnsim store (local path or fsspec URL) lazily; see `SimilarityStore`."""
    return SimilarityStore(url, storage_options)
