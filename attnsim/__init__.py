"""attnsim: corpus-scale self-attention head output similarities (Halevi et al., arXiv 2512.21956)."""

__version__ = "0.1.0"
FORMAT_VERSION = 2  # 2: attnsim.token_prefix serializes the per-token arrays (1: plain bytes; still read)

_LAZY = {"open_store": "attnsim.store.dataset", "SimilarityStore": "attnsim.store.dataset"}


def __getattr__(name: str):
    # `import attnsim` stays light: the dataset API (zarr, fsspec) loads on first use.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'attnsim' has no attribute {name!r}")
