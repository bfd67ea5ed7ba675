"""Logging set-up shared by the CLI and the `jobs/` entrypoints: attnsim speaks, libraries whisper."""

from __future__ import annotations

import logging
import os
import sys


def quiet_libraries(fmt: str) -> None:
    """Warnings and attnsim's own lines on stderr; transformers, Ray and Dask only on errors."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING, format=fmt, stream=sys.stderr)
    # A user's own TRANSFORMERS_VERBOSITY or HF_HUB_DISABLE_PROGRESS_BARS wins, as it would in transformers.
    quiet_log = os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error") == "error"
    no_bars = os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1") == "1"
    for name in ("transformers", "ray", "distributed", "huggingface_hub"):
        if name != "transformers" or quiet_log:
            logging.getLogger(name).setLevel(logging.ERROR)
    # Through the variables transformers and huggingface_hub read when imported, rather than by
    # importing transformers here: that import took 0.66 s of every command, `attnsim info` and
    # `attnsim verify` included, which never load a model. A library imported already is told directly.
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        if quiet_log:
            hf_logging.set_verbosity_error()
        if no_bars:
            hf_logging.disable_progress_bar()  # transformers' bars and huggingface_hub's
    elif "huggingface_hub" in sys.modules and no_bars:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
