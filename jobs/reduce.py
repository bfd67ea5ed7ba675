"""Stage 3 on the cluster: corpus statistics from the store into <out>/stats/ (Parquet).

    ray job submit --runtime-env jobs/runtime_env.yaml -- python -m jobs.reduce --config jobs/configs/cloud-s3.yaml

The Dask graph runs where `dask_scheduler` says: a dask.distributed address (that cluster's
workers), or `threads` (this driver). Dask-on-Ray (`ray`) is refused with a one-line reason:
ray.util.dask cannot rebuild zarr 3 arrays (docs/design.md, Decisions).
"""

from __future__ import annotations

import sys

from jobs.entry import console, main


def work(cfg) -> None:
    from attnsim.pipeline import stage_reduce
    from attnsim.reduce.outputs import stats_paths
    from attnsim.report.tables import print_layer_table

    summary = stage_reduce(cfg)
    out = console()
    print_layer_table(out, summary)
    out.print("written:")
    for path in stats_paths(cfg.stats_url):
        out.print(f"  {path}")


if __name__ == "__main__":
    sys.exit(main("reduce", work))
