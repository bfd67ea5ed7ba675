"""Extraction in this process, without Ray: `attnsim extract --local`, `memory://` stores, tests.

It writes the same bytes as the actor pool (a unit's bytes depend on nothing but the unit) and
never imports Ray.

Example::

    run_extract_local(cfg, units=[0, 1], on_unit=print)
"""

from __future__ import annotations

from typing import Callable

from attnsim.config import RunConfig
from attnsim.extract.stage import Extractor


def run_extract_local(cfg: RunConfig, units: list[int], on_unit: Callable[[dict], None] = lambda info: None) -> dict:
    """The same units in this process, one after another."""
    done = Extractor(cfg).run_units(units, on_unit)
    return {"done": done, "retried": 0, "actors": 0}
