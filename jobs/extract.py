"""Stage 2 on the cluster: the GPU actor pool over every unit without a marker (resumable).

    ray job submit --runtime-env jobs/runtime_env.yaml -- python -m jobs.extract --config jobs/configs/bert-base-paper.yaml

Run it with the same config and overrides as `jobs.prepare`.
"""

from __future__ import annotations

import sys

from jobs.entry import console, main


def work(cfg) -> None:
    from attnsim.pipeline import stage_extract

    r = stage_extract(cfg, use_ray=True)
    for actor in r.get("pool", []):
        console().print(f"actor pid {actor['pid']} on node {actor['node_id'][:12]}: GPUs {actor['gpu_ids'] or 'none'}, device {actor['device']}")
    console().print(f"extracted {r['done']} units ({r['retried']} retried); {r['remaining']} remaining")


if __name__ == "__main__":
    sys.exit(main("extract", work))
