"""The reduce's outputs under `<out>/stats/`, named in one place: the reduce writes them, the report
reads them, `attnsim run` lists them. Nothing heavy is imported here (no Dask, no Polars), so the
CLI's light commands can use it.

Example::

    stats_paths("runs/default/stats")  # [".../head_stats.parquet", ..., ".../summary.json"]
"""

from __future__ import annotations

from attnsim.config import join_url

STATS_TABLES = ("head_stats", "distance_decay", "anchors", "layer_summary")


def stats_paths(stats_url: str) -> list[str]:
    """Every output file of a reduce: the tables, then summary.json."""
    return [join_url(stats_url, f"{name}.parquet") for name in STATS_TABLES] + [join_url(stats_url, "summary.json")]
