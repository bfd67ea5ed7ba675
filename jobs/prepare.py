"""Stage 1 on the cluster: split and tokenise the corpus into windows (Ray tasks), create the store.

ray job submit --runtime-env jobs/runtime_env.yaml -- python -m jobs.prepare --config jobs/configs/bert-base-paper.yaml
"""

from __future__ import annotations

import sys

from jobs.entry import console, main


def work(cfg) -> None:
    from attnsim.pipeline import stage_prepare

    r = stage_prepare(cfg, use_ray=True)
    word = "kept (already prepared)" if r.reused else "written"
    console().print(f"store {r.url} {word}: {r.n_documents} documents, {r.n_windows} windows, {r.n_tokens} tokens")


if __name__ == "__main__":
    sys.exit(main("prepare", work))
