"""Entrypoints for `ray job submit`: one module per stage plus one for the whole run.

    ray job submit --runtime-env jobs/runtime_env.yaml -- python -m jobs.run --config jobs/configs/default.yaml out=runs/x
    python -m jobs.prepare|jobs.extract|jobs.reduce --config jobs/configs/bert-base-paper.yaml out=s3://bucket/runs/paper

Each reads a YAML config (validated by `attnsim.config.RunConfig`), applies `key=value` overrides,
joins the running cluster with `ray.init(address="auto")` and calls `attnsim.pipeline`.
"""
