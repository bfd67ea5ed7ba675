"""attnsim: corpus-scale self-attention head output similarities (Halevi et al., arXiv 2512.21956)."""

__version__ = "0.1.0"
FORMAT_VERSION = 1
