"""The libraries' quiet set-up: transformers and huggingface_hub told through the variables they read
at import, so that a command which loads no model never imports them (each case in a fresh
interpreter: what is imported is the point)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = """
import json, logging, sys
from attnsim.logs import quiet_libraries
{before}
quiet_libraries("%(message)s")
imported_by_quiet = "transformers" in sys.modules
from transformers.utils import logging as hf_logging
from huggingface_hub.utils import are_progress_bars_disabled
print(json.dumps({{
    "imported_by_quiet": imported_by_quiet,
    "verbosity": hf_logging.get_verbosity(),
    "transformers_bars": hf_logging.is_progress_bar_enabled(),
    "hub_bars_disabled": are_progress_bars_disabled(),
}}))
"""


def _probe(before: str = "", env: dict | None = None) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in ("TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS")}
    probe = [sys.executable, "-c", PROBE.format(before=before)]
    out = subprocess.run(probe, env={**clean, **(env or {})}, capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_transformers_is_quiet_without_being_imported_by_the_set_up():
    got = _probe()
    assert not got["imported_by_quiet"]
    assert got["verbosity"] == 40  # logging.ERROR
    assert not got["transformers_bars"] and got["hub_bars_disabled"]


def test_transformers_imported_before_the_set_up_is_told_directly():
    got = _probe(before="import transformers")
    assert got["verbosity"] == 40
    assert not got["transformers_bars"] and got["hub_bars_disabled"]


def test_a_users_own_verbosity_wins():
    assert _probe(env={"TRANSFORMERS_VERBOSITY": "info"})["verbosity"] == 20  # logging.INFO


def test_a_users_own_verbosity_wins_over_an_imported_transformers_too():
    assert _probe(before="import transformers", env={"TRANSFORMERS_VERBOSITY": "info"})["verbosity"] == 20
