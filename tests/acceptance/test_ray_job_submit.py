"""The cluster submission path for real: a local Ray head of its own (temp dir, free ports, token
authentication on), `ray job submit --runtime-env jobs/runtime_env.yaml -- python -m jobs.run ...`,
then the job's store, statistics, progress.json and logs checked, and that head alone stopped."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
from helpers import kill_processes

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PORTS = (
    "port",
    "dashboard-port",
    "ray-client-server-port",
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "runtime-env-agent-port",
    "metrics-export-port",
    "node-manager-port",
    "object-manager-port",
)


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _session_processes(sid: int, temp_dir: str) -> list[psutil.Process]:
    """Every process of this head: its session (start_new_session) or a command line naming its temp dir."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if os.getsid(proc.pid) == sid or temp_dir in " ".join(proc.info["cmdline"] or ()):
                found.append(proc)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return [p for p in found if p.pid != os.getpid()]


def stop_head(head: subprocess.Popen, temp_dir: str) -> None:
    """Stop this head only (never a global `ray stop`): SIGTERM to `ray start --block`, which stops its
    processes; then SIGKILL whatever of its session or temp dir is left."""
    if head.poll() is None:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            head.kill()
    kill_processes(_session_processes(head.pid, temp_dir), timeout=10)


@pytest.fixture(scope="module")
def ray_head():
    temp_dir = tempfile.mkdtemp(prefix="attnsim-ray-", dir="/tmp")  # short: Ray's socket paths have a length limit
    ports = dict(zip(PORTS, free_ports(len(PORTS))))
    token = secrets.token_hex(32)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    env.update(
        RAY_AUTH_MODE="token",  # the default on a fresh head; said explicitly for the CLI clients
        RAY_AUTH_TOKEN=token,  # this head's own token: ~/.ray/auth_token is neither needed nor touched
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",  # `python` in the entrypoint is this environment's
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        RAY_DEDUP_LOGS="0",
    )
    cmd = [
        str(BIN / "ray"),
        "start",
        "--head",
        "--block",
        f"--temp-dir={temp_dir}",
        "--num-cpus=2",
        "--node-ip-address=127.0.0.1",
        "--dashboard-host=127.0.0.1",
        "--include-dashboard=true",
        "--disable-usage-stats",
        f"--object-store-memory={200 * 1024**2}",
    ] + [f"--{name}={port}" for name, port in ports.items()]
    log = open(Path(temp_dir) / "head.log", "w")
    head = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{ports['dashboard-port']}"
    try:
        deadline = time.monotonic() + 90
        while True:
            request = urllib.request.Request(f"{address}/api/version", headers={"Authorization": f"Bearer {token}"})
            try:
                urllib.request.urlopen(request, timeout=2)
                break
            except (urllib.error.URLError, OSError):
                if head.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the Ray head did not start:\n" + (Path(temp_dir) / "head.log").read_text()[-3000:])
                time.sleep(0.5)
        # Without the token the dashboard refuses: authentication is really on.
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{address}/api/version", timeout=5)
        assert refused.value.code in (401, 403)
        yield {"address": address, "env": env, "temp_dir": temp_dir, "pid": head.pid}
    finally:
        stop_head(head, temp_dir)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


AGENT_WAIT_S = 120  # how long a submit is retried while the head's job agent is not up yet


@pytest.fixture(scope="module")
def submitted(ray_head, tiny_bert, corpus_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("job") / "run"
    job_id = f"attnsim-test-{secrets.token_hex(4)}"
    overrides = [
        f"model={tiny_bert}",
        f"corpus={corpus_dir}",
        f"out={out}",
        "max_tokens=32",
        "windows_per_shard=4",
        "batch_size=4",
        "bootstrap=20",
        "workers=1",
        "labels.anchor_share=0.3",
    ]
    cmd = [
        str(BIN / "ray"),
        "job",
        "submit",
        "--address",
        ray_head["address"],
        "--submission-id",
        job_id,
        "--runtime-env",
        "jobs/runtime_env.yaml",
        "--",
        "python",
        "-m",
        "jobs.run",
        "--config",
        "jobs/configs/default.yaml",
        *overrides,
    ]
    # A head answers /api/version before its job agent has registered; until then a submit fails
    # with "No available agent to submit job, please try again later" and creates no job (seen on a
    # fresh clone's first, cold start). Retried for at most AGENT_WAIT_S; the job's own time counts.
    logs, deadline = [], time.monotonic() + AGENT_WAIT_S
    while True:
        began = time.monotonic()
        r = subprocess.run(cmd, cwd=REPO, env=ray_head["env"], capture_output=True, text=True, timeout=300)
        seconds = time.monotonic() - began
        logs.append(r.stdout + r.stderr)
        if r.returncode == 0 or "No available agent" not in logs[-1] or time.monotonic() > deadline:
            break
        time.sleep(2)
    (out.parent / "submit.log").write_text("\n--- retried ---\n".join(logs))  # kept for a failing CI run
    request = urllib.request.Request(f"{ray_head['address']}/api/jobs/{job_id}", headers={"Authorization": f"Bearer {ray_head['env']['RAY_AUTH_TOKEN']}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        status = json.load(response)
    return {"out": out, "submit": r, "status": status, "seconds": seconds}


def test_job_succeeds(submitted):
    r, status = submitted["submit"], submitted["status"]
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert status["status"] == "SUCCEEDED", status
    assert status["entrypoint"].startswith("python -m jobs.run --config jobs/configs/default.yaml")
    assert submitted["seconds"] < 240


def test_store_and_stats_exist_and_verify(submitted):
    out = submitted["out"]
    for name in (
        "store.zarr/zarr.json",
        "config.yaml",
        "stats/head_stats.parquet",
        "stats/distance_decay.parquet",
        "stats/anchors.parquet",
        "stats/layer_summary.parquet",
        "stats/summary.json",
    ):
        assert (out / name).is_file(), name
    v = subprocess.run([sys.executable, "-m", "attnsim.cli", "verify", str(out / "store.zarr")], capture_output=True, text=True, timeout=120)
    assert v.returncode == 0, v.stdout + v.stderr
    units = json.loads((out / "progress.json").read_text())["units_total"]
    assert f"{units} of {units} units verified" in v.stdout


def test_job_used_the_config_and_overrides(submitted):
    import yaml

    saved = yaml.safe_load((submitted["out"] / "config.yaml").read_text())
    assert saved["max_tokens"] == 32 and saved["windows_per_shard"] == 4 and saved["labels"]["anchor_share"] == 0.3
    assert saved["k"] == 8 and saved["similarity_kind"] == "dot"  # from jobs/configs/default.yaml


def test_progress_json_and_log_lines(submitted):
    progress = json.loads((submitted["out"] / "progress.json").read_text())
    assert progress["state"] == "done" and progress["stage"] == "extract"
    assert progress["units_done"] == progress["units_total"] == progress["units_done_this_session"] > 1
    assert progress["windows_done_this_session"] == progress["windows_total"]
    assert progress["eta_seconds"] == 0.0 and progress["windows_per_second"] > 0
    logs = submitted["submit"].stdout + submitted["submit"].stderr
    total = progress["units_total"]
    assert f"extract: {total} of {total} units to do (0 done before)" in logs
    assert f"extract done: {total}/{total} units (100.0%)" in logs
    assert "windows/s" in logs and "ETA" in logs


def test_working_dir_upload_leaves_out_the_environment_and_outputs(tmp_path):
    """The runtime env's excludes keep .venv, runs/, .git out of what `ray job submit` uploads."""
    import yaml

    packaging = pytest.importorskip("ray._private.runtime_env.packaging")
    env = yaml.safe_load((REPO / "jobs" / "runtime_env.yaml").read_text())
    assert env["working_dir"] == "."
    zipped = tmp_path / "upload.zip"
    packaging.create_package(str(REPO), zipped, include_gitignore=False, excludes=env["excludes"])  # the excludes alone
    import zipfile

    names = zipfile.ZipFile(zipped).namelist()
    assert any(n.endswith("jobs/run.py") for n in names) and any(n.endswith("attnsim/pipeline.py") for n in names)
    for banned in (".venv/", "runs/", ".git/", "__pycache__/"):
        assert not any(f"/{banned}" in f"/{n}" for n in names), banned
