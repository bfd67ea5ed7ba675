"""Logging set-up shared by the CLI and the `jobs/` entrypoints: attnsim speaks, libraries whisper."""

from __future__ import annotations

import logging
import os
import sys


def quiet_libraries(fmt: str) -> None:
    """Warnings and attnsim's own lines on stderr; transformers, Ray and Dask only on errors."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING, format=fmt, stream=sys.stderr)
    for name in ("transformers", "ray", "distributed", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass
