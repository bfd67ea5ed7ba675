"""The whole run on the cluster this job was submitted to: prepare, extract, reduce.

    ray job submit --runtime-env jobs/runtime_env.yaml -- python -m jobs.run --config jobs/configs/default.yaml

Resubmitting the same command resumes: units with a marker are skipped (see cluster/README.md).
"""

from __future__ import annotations

import sys

from jobs.entry import console, main


def work(cfg) -> None:
    from attnsim.pipeline import run_all
    from attnsim.report.tables import print_summary

    result = run_all(cfg, use_ray=True)
    print_summary(console(), cfg, result)


if __name__ == "__main__":
    sys.exit(main("run", work))
