"""What every job entrypoint shares: arguments -> config, joining the cluster, logging, exit codes.

Arguments: ``--config PATH`` (default ``jobs/configs/default.yaml``), ``--address ADDR`` (default
``auto``: the cluster this job was submitted to, via RAY_ADDRESS), then overrides of any config key
as ``key=value``, ``--key=value`` or ``--key value``; nested keys with dots (``labels.anchor_share=0.3``).
Values are read as YAML (``workers=2`` is a number, ``tiers=[default,vectors]`` a list, ``store=null``
unsets). A user error (bad key, missing file, no cluster) prints one line and exits 2.

Example::

    python -m jobs.run --config jobs/configs/default.yaml out=runs/x max_tokens=128
"""

from __future__ import annotations

import logging
import socket
import sys
from pathlib import Path
from typing import Any, Callable

import yaml

from attnsim.config import RunConfig, read_yaml
from attnsim.errors import UserError
from attnsim.logs import quiet_libraries

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "default.yaml"
USAGE = """usage: python -m jobs.{stage} [--config PATH] [--address ADDR] [key=value ...]

  --config PATH   YAML config (default jobs/configs/default.yaml); see attnsim/config.py for the keys
  --address ADDR  Ray cluster to join (default auto: the one this job was submitted to)
  key=value       override a config key, e.g. out=s3://bucket/runs/x workers=4 labels.anchor_share=0.3
"""


def parse_args(argv: list[str]) -> tuple[str, str, dict[str, Any]]:
    """(config path, Ray address, overrides) from the command line."""
    config, address = str(DEFAULT_CONFIG), "auto"
    overrides: dict[str, Any] = {}
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg.startswith("--"):
            key, eq, value = arg[2:].partition("=")
            if not eq:  # `--key value`, or a bare `--flag` meaning true
                value = args.pop(0) if args and not args[0].startswith("--") and "=" not in args[0] else "true"
        elif "=" in arg:
            key, _, value = arg.partition("=")
        else:
            raise UserError(f"cannot read argument {arg!r}; give overrides as key=value (e.g. max_tokens=128)")
        key = key.replace("-", "_")
        if key == "config":
            config = value
        elif key == "address":
            address = value
        elif not key:
            raise UserError(f"argument {arg!r} has no key; write key=value")
        else:
            try:
                overrides[key] = yaml.safe_load(value) if value != "" else ""
            except yaml.YAMLError:
                overrides[key] = value  # not YAML: take the text as it is
    return config, address, overrides


def load_config(config: str, overrides: dict[str, Any]) -> RunConfig:
    """The YAML file with the overrides applied (dotted keys go into nested settings), validated."""
    data = read_yaml(config)
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"override {dotted!r}: {part!r} is not a group of settings")
        node[leaf] = value
    cfg = RunConfig.from_dict(data)
    from attnsim.reduce.stage import check_scheduler

    check_scheduler(cfg.dask_scheduler)  # fail now, not after hours of extraction
    return cfg


def probe_scheduler(spec: str, timeout: float = 10.0) -> None:
    """A dask.distributed address must answer before the run starts, not after its extraction."""
    from attnsim.reduce.stage import check_scheduler

    if check_scheduler(spec) != "distributed":
        return
    host, _, port = spec.split("://", 1)[-1].rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except (OSError, ValueError) as e:
        raise UserError(f"no dask scheduler answers at dask_scheduler {spec!r} ({e}); start it, or use dask_scheduler=threads") from None


def connect(address: str) -> None:
    """Join the running Ray cluster (token authentication stays on: RAY_AUTH_TOKEN or ~/.ray/auth_token)."""
    from attnsim.executors.cluster import ensure_ray

    try:
        ensure_ray(address)  # an address nothing answers at is a UserError within seconds
    except ConnectionError as e:
        raise UserError(
            f"no Ray cluster to join at address {address!r} ({str(e).splitlines()[0][:120]}); "
            "submit with `ray job submit`, start one with `ray start --head`, or run locally with `attnsim run`"
        ) from None


def setup_logging() -> None:
    """Plain timestamped lines: what `ray job logs -f`, kubectl logs and SLURM logs show well."""
    quiet_libraries(fmt="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("attnsim").setLevel(logging.INFO)


def main(stage: str, work: Callable[[RunConfig], None], argv: list[str] | None = None) -> int:
    """Parse, validate, connect, run `work(cfg)`; a UserError is one line and exit code 2."""
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE.format(stage=stage))
        return 0
    setup_logging()
    log = logging.getLogger("attnsim")
    from attnsim.executors import lifecycle

    try:
        with lifecycle.stop_on_signals():  # SLURM's TERM and a KubeRay stop end the pool cleanly, exit 143
            config, address, overrides = parse_args(argv)
            cfg = load_config(config, overrides)
            log.info("job %s: config %s, overrides %s, run folder %s, store %s", stage, config, overrides or "none", cfg.out, cfg.store_url)
            if stage in ("run", "reduce"):
                probe_scheduler(cfg.dask_scheduler)
            connect(address)
            work(cfg)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except lifecycle.RunStopped as e:  # non-zero, not 2: a KubeRay retry or SLURM requeue resumes it
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        code, line = lifecycle.interrupt_exit()
        print(f"error: {line}", file=sys.stderr)
        return code
    return 0


def console():
    from rich.console import Console

    return Console(width=160, highlight=False)  # job logs are not terminals: no wrapping at 80 columns
