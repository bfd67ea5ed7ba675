"""A whole run whose run folder and store live in S3: a real S3-protocol server (moto) on 127.0.0.1,
reached through fsspec/s3fs by the driver and by the Ray actors alike. The server fails some writes
once with a 500, as S3 does under load; the job retries them and the store ends byte-identical to a
local run, with every marker matching its shards.
"""

from __future__ import annotations

import logging
import re
import threading

import pytest
from helpers import array_digest, store_digest

from attnsim.config import RunConfig
from attnsim.pipeline import stage_extract, stage_prepare, stage_reduce
from attnsim.store.verify import verify_store

BUCKET = "attnsim-test"
# Writes that fail once: a token array (prepare, on the driver), a tier shard and a marker (both
# written by an actor). Paths are /bucket/key (path-style requests to an endpoint URL).
FAIL_ONCE = (r"/input_ids/c/1/0$", r"/topk_value/c/3/0/0/0/0$", r"/_markers/shard-000005\.json$")


class FailOnce:
    """WSGI middleware in front of moto: answers the first PUT matching each pattern with a 500."""

    BODY = b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code><Message>injected</Message></Error>'

    def __init__(self, app, patterns):
        self.app = app
        self.pending = {re.compile(p): 1 for p in patterns}
        self.injected: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if environ["REQUEST_METHOD"] == "PUT":
            with self.lock:
                hit = next((p for p, left in self.pending.items() if left and p.search(path)), None)
                if hit is not None:
                    self.pending[hit] = 0
                    self.injected.append(path)
            if hit is not None:
                environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))  # consume the upload
                start_response("500 Internal Server Error", [("Content-Type", "application/xml"), ("Content-Length", str(len(self.BODY)))])
                return [self.BODY]
        return self.app(environ, start_response)


@pytest.fixture(scope="module")
def s3():
    """moto's S3 on a free loopback port, with the environment every client (and Ray worker) reads."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    faults = FailOnce(DomainDispatcherApplication(create_backend_app), FAIL_ONCE)
    server = make_server("127.0.0.1", 0, faults, threaded=True, request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{server.server_port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        # botocore would retry a 500 by itself; one attempt lets the fault reach attnsim's own retry,
        # as a longer outage (or a client configured without retries) would.
        "AWS_MAX_ATTEMPTS": "1",
    }
    patch = pytest.MonkeyPatch()
    for key, value in env.items():
        patch.setenv(key, value)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem()
    fs.mkdir(BUCKET)
    yield fs, faults
    patch.undo()
    s3fs.S3FileSystem.clear_instance_cache()
    server.shutdown()


@pytest.fixture(scope="module")
def ray_session(s3):
    """This module's Ray session starts after the S3 environment is set, so its workers inherit it."""
    import ray

    # address="local": always a new cluster, never one another process left in /tmp/ray
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 1024**2)
    yield ray
    ray.shutdown()


def s3_digest(fs, url: str) -> dict[str, str]:
    """`helpers.store_digest` of a store in S3."""
    root = url.removeprefix("s3://")
    return store_digest((key[len(root) + 1 :], fs.cat_file(key)) for key in fs.find(root))


def test_full_run_in_s3_survives_transient_write_errors(s3, ray_session, tiny_bert, corpus_dir, tmp_path):
    fs, faults = s3
    base = dict(model=tiny_bert, corpus=corpus_dir, max_tokens=32, windows_per_shard=2, batch_size=2, bootstrap=10, workers=1)
    local = RunConfig(out=str(tmp_path / "local"), **base)
    stage_prepare(local, use_ray=False)
    stage_extract(local, use_ray=False)

    cfg = RunConfig(out=f"s3://{BUCKET}/runs/one", **base)
    # prepare (the driver writes the token arrays; its Ray fan-out never touches the store), extract
    # on Ray actors that write shards and markers to S3 themselves, reduce reading back from S3
    stage_prepare(cfg, use_ray=False)
    extracted = stage_extract(cfg, use_ray=True)
    summary = stage_reduce(cfg)

    assert sorted(faults.injected) == sorted(
        f"/{BUCKET}/runs/one/store.zarr/{key}" for key in ("input_ids/c/1/0", "topk_value/c/3/0/0/0/0", "_markers/shard-000005.json")
    ), "every injected failure must have happened (and been retried)"
    assert extracted["remaining"] == 0 and extracted["retried"] == 0  # no actor died: the store layer retried
    assert summary["windows"] == 29
    assert s3_digest(fs, cfg.store_url) == array_digest(local.store_url)
    report = verify_store(cfg.store_url)
    assert not report.bad_units and len(report.ok) == 15
    for name in ("config.yaml", "progress.json", "stats/head_stats.parquet", "stats/summary.json"):
        assert fs.exists(f"{BUCKET}/runs/one/{name}"), name
