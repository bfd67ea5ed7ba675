"""Never hang (issue 14), through the real CLI on the tiny random BERT. Each scenario kills or
blocks by pid, runs under a bounded wall time, and ends with a store equal to an undisturbed run:

- the local Ray node (its raylet) dies mid-extraction: one line, exit 3, within 60 s; rerun resumes;
- an address nothing listens at: one line naming it and RAY_ADDRESS, exit 2, within 30 s;
- SIGTERM / SIGINT on the driver: exit 143 / 130 with the resume hint, no `ray::` process left;
- a SIGKILLed driver: its leftover Ray processes are stopped by the next run of the same command;
- damaged token arrays: `verify` names the unit, `extract --repair` refuses and says to rerun prepare.

Every driver runs in its own POSIX session, Ray temp dir and attnsim state dir, so only processes
it started are counted or killed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
from helpers import array_digest, kill_processes, tiny_config, tiny_extracted

from attnsim.config import RunConfig
from attnsim.pipeline import stage_prepare

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "COLUMNS": "200"}
N_UNITS = 29  # the corpus_dir fixture at max_tokens 32: 29 windows, one per unit


config = tiny_config


@pytest.fixture(scope="module")
def reference(tiny_bert, corpus_dir, tmp_path_factory) -> RunConfig:
    return tiny_extracted(tiny_bert, corpus_dir, tmp_path_factory.mktemp("reference"))


def session_processes(sid: int, prefix: str = "") -> list[psutil.Process]:
    """Live processes of POSIX session `sid` (the driver's own, as it was started in a new one)
    whose command line starts with `prefix`."""
    out = []
    for proc in psutil.process_iter():
        try:
            if proc.pid != sid and os.getsid(proc.pid) == sid and proc.status() != psutil.STATUS_ZOMBIE:
                if " ".join(proc.cmdline()).startswith(prefix):
                    out.append(proc)
        except (ProcessLookupError, PermissionError, psutil.NoSuchProcess):
            pass
    return out


class Driver:
    """`attnsim extract --out OUT` in its own session, Ray temp dir and state dir (XDG_CACHE_HOME)."""

    def __init__(self, tmp_path: Path, out: str, env: dict | None = None, state: Path | None = None):
        self.ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths have a length limit
        self.state = state or tmp_path / "state"
        self.log = tmp_path / f"driver-{time.monotonic_ns()}.log"  # a file: a full pipe would stall the driver
        self.markers = Path(out, "store.zarr", "_markers")
        env = {**ENV, "RAY_TMPDIR": self.ray_tmp, "XDG_CACHE_HOME": str(self.state), **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "attnsim.cli", "extract", "--out", out],
            env=env,
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_for_markers(self, n: int, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while len(list(self.markers.glob("*.json"))) < n:
            assert self.proc.poll() is None, self.output()[-3000:]
            assert time.monotonic() < deadline, "extraction never started"
            time.sleep(0.02)

    def wait(self, timeout: float) -> tuple[int, float]:
        start = time.monotonic()
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the driver did not stop within {timeout} s: {self.output()[-3000:]}")
        return code, time.monotonic() - start

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def error_lines(self) -> list[str]:
        return [line for line in self.output().splitlines() if line.startswith("error:")]

    def cleanup(self) -> None:
        self.proc.kill()
        self.proc.wait()
        kill_processes(session_processes(self.proc.pid))
        shutil.rmtree(self.ray_tmp, ignore_errors=True)


def rerun_matches_reference(tmp_path: Path, cfg: RunConfig, reference: RunConfig, state: Path | None = None) -> None:
    """The same command again finishes, and the store equals the undisturbed run's, array by array."""
    rerun = Driver(tmp_path, cfg.out, state=state)
    try:
        code, _ = rerun.wait(timeout=300)
        assert code == 0, rerun.output()[-3000:]
    finally:
        rerun.cleanup()
    assert array_digest(cfg.store_url) == array_digest(reference.store_url)
    assert not list(Path(cfg.store_url).rglob("*.partial"))


def prepared(tiny_bert, corpus_dir, tmp_path) -> RunConfig:
    cfg = config(tiny_bert, corpus_dir, tmp_path / "run")
    stage_prepare(cfg, use_ray=False)  # writes config.yaml: `attnsim extract --out` reuses it
    return cfg


@pytest.mark.timeout(600)
@pytest.mark.parametrize("lost", ["raylet", "every process"])
def test_local_node_lost_stops_within_a_minute_and_resumes(tiny_bert, corpus_dir, tmp_path, reference, lost):
    cfg = prepared(tiny_bert, corpus_dir, tmp_path)
    driver = Driver(tmp_path, cfg.out)
    try:
        driver.wait_for_markers(1)
        # The run's only node goes: its raylet and the actor on it (an actor outlives its raylet by
        # a while, and on this tiny model may finish every unit before it notices), or every Ray
        # process of the run, GCS included (a call to a dead GCS blocks for 60 s).
        every = session_processes(driver.proc.pid)
        raylets = [p for p in every if p.name() == "raylet"]
        actors = session_processes(driver.proc.pid, "ray::ExtractActor")
        assert len(raylets) == 1 and actors, [p.name() for p in every]
        for proc in raylets + actors if lost == "raylet" else every:
            os.kill(proc.pid, signal.SIGKILL)
        code, took = driver.wait(timeout=90)
    finally:
        driver.cleanup()
    assert code not in (0, 2), driver.output()[-3000:]
    assert took < 60, f"took {took:.0f} s"
    errors = driver.error_lines()
    assert len(errors) == 1, driver.output()[-3000:]
    assert "died" in errors[0] and "run the same command again" in errors[0], errors[0]
    rerun_matches_reference(tmp_path, cfg, reference)


def test_unreachable_address_is_one_line_within_30_s(reference, tmp_path):
    driver = Driver(tmp_path, reference.out, env={"RAY_ADDRESS": "127.0.0.1:1"})  # nothing listens on port 1
    try:
        code, took = driver.wait(timeout=60)
    finally:
        driver.cleanup()
    assert code == 2 and took < 30, (code, took, driver.output()[-2000:])
    errors = driver.error_lines()
    assert len(errors) == 1 and "127.0.0.1:1" in errors[0] and "RAY_ADDRESS" in errors[0] and "TOKEN" in errors[0], driver.output()


def test_job_entry_with_unreachable_address_exits_2(reference):
    start = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "jobs.extract", "--address", "127.0.0.1:1", f"out={reference.out}"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert r.returncode == 2 and time.monotonic() - start < 30, r.stderr[-2000:]
    assert "127.0.0.1:1" in r.stderr


@pytest.mark.timeout(600)
@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_stops_extraction_and_ray_then_resumes(tiny_bert, corpus_dir, tmp_path, reference, signum, code):
    cfg = prepared(tiny_bert, corpus_dir, tmp_path)
    driver = Driver(tmp_path, cfg.out)
    try:
        driver.wait_for_markers(2)
        assert session_processes(driver.proc.pid, "ray::")  # the actor (and Ray's agents) run now
        os.kill(driver.proc.pid, signum)
        got, _ = driver.wait(timeout=60)
        deadline = time.monotonic() + 10  # ray.shutdown has signalled them; give them moments to exit
        while session_processes(driver.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = session_processes(driver.proc.pid)  # `ray::` workers and agents, raylet, GCS: none
    finally:
        driver.cleanup()
    assert got == code, driver.output()[-3000:]
    errors = driver.error_lines()
    assert len(errors) == 1 and signal.Signals(signum).name in errors[0] and "run the same command again" in errors[0], errors
    assert not left, [p.cmdline()[:2] for p in left]
    assert 2 <= len(list(driver.markers.glob("*.json"))) < N_UNITS
    rerun_matches_reference(tmp_path, cfg, reference)


@pytest.mark.timeout(600)
def test_sigkilled_driver_leaves_nothing_after_the_next_run(tiny_bert, corpus_dir, tmp_path, reference):
    cfg = prepared(tiny_bert, corpus_dir, tmp_path)
    driver = Driver(tmp_path, cfg.out)
    try:
        driver.wait_for_markers(2)
        os.kill(driver.proc.pid, signal.SIGKILL)
        driver.proc.wait()
        time.sleep(3)  # what dies with the driver (workers) has died
        left_by_kill = session_processes(driver.proc.pid, "ray::")
        assert left_by_kill, "Ray 2.60 leaves its agents behind a SIGKILLed driver; if none are left, this test checks nothing"
        rerun_matches_reference(tmp_path, cfg, reference, state=driver.state)  # same command, same user state
        time.sleep(1)
        assert not session_processes(driver.proc.pid, "ray::"), "the rerun must stop the killed run's Ray processes"
    finally:
        driver.cleanup()


# ----------------------------------------------------------------------------- prepare's arrays
def cli(*args):
    from typer.testing import CliRunner

    from attnsim.cli import app

    result = CliRunner().invoke(app, list(args))
    result.flat = " ".join(result.stdout.split())
    return result


def test_verify_checks_token_arrays_and_repair_says_to_rerun_prepare(reference, tmp_path):
    import zarr

    out = tmp_path / "run"
    shutil.copytree(reference.out, out)
    (out / "config.yaml").write_text((out / "config.yaml").read_text().replace(reference.out, str(out)))
    store = out / "store.zarr"
    assert "token arrays not verified" not in cli("verify", str(store)).flat
    root = zarr.open_group(str(store), mode="r+")
    ids = root["input_ids"][5]
    ids[1] = ids[1] + 1  # unit 5: a decodable shard with one wrong token id
    root["input_ids"][5] = ids
    spans = sorted(p for p in (store / "char_span" / "c" / "7").rglob("*") if p.is_file())[0]
    raw = bytearray(spans.read_bytes())  # unit 7: bit rot in a span shard
    raw[-12:-4] = bytes(b ^ 0xFF for b in raw[-12:-4])
    spans.write_bytes(bytes(raw))
    before = {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()}

    bad = cli("verify", str(store))
    assert bad.exit_code == 1, bad.stdout
    assert "bad tokens: unit 000005: token arrays differ from prepare's checksum" in bad.flat, bad.stdout
    assert "bad tokens: unit 000007:" in bad.flat and "run prepare again" in bad.flat, bad.stdout
    repair = cli("extract", "--repair", "--out", str(out), "--local")
    assert repair.exit_code == 2, repair.stdout + repair.stderr
    errors = [line for line in repair.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "000005, 000007" in errors[0] and "rerun prepare" in errors[0], repair.stderr
    assert {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()} == before  # nothing recomputed


def test_extract_local_never_imports_ray(reference, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference.out, out)
    (out / "config.yaml").write_text((out / "config.yaml").read_text().replace(reference.out, str(out)))
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from attnsim.cli import app\n"
        f"r = CliRunner().invoke(app, ['extract', '--out', {str(out)!r}, '--local'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print(r.stdout.strip(), '| ray imported:', 'ray' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "extracted 0 units (0 retried); 0 remaining | ray imported: False" in r.stdout, r.stdout
