"""Failure and resume through the real CLI, on the tiny random BERT:

- the driver is SIGKILLed during extraction; the same command again redoes only the units without
  a marker (a half-written one included, rewritten whole) and the bytes equal an undisturbed run;
- a store made with other settings is refused with one line naming the setting, and left untouched;
- `attnsim verify` finds corrupt units (an undecodable shard, a decodable but wrong one) and a
  missing one by id and exits non-zero, and `attnsim extract --repair` redoes exactly those;
- dirty input is reported per document, while a whole-run problem is one line and exit code 2.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
from helpers import DOCS, array_digest, kill_processes, make_corpus, make_tiny_model, tiny_config, tiny_extracted, tree_digest

from attnsim.config import RunConfig
from attnsim.errors import UserError
from attnsim.pipeline import stage_prepare

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "COLUMNS": "200"}
N_UNITS = 29  # the corpus_dir fixture at max_tokens 32: 29 windows, one per unit


def attnsim_with_ray(*args) -> subprocess.CompletedProcess:
    """The CLI in its own process and POSIX session, with its own Ray temp dir; whatever Ray
    processes it leaves behind are killed by pid afterwards."""
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths have a length limit
    proc = subprocess.Popen(
        [sys.executable, "-m", "attnsim.cli", *args],
        env={**ENV, "RAY_TMPDIR": ray_tmp},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
        kill_session(proc.pid)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def cli(*args):
    """The same CLI app in this process (no interpreter start: these commands run without Ray).
    Output is compared with whitespace collapsed, as rich wraps lines at the console width."""
    from typer.testing import CliRunner

    from attnsim.cli import app

    result = CliRunner().invoke(app, list(args))
    result.flat = " ".join(result.stdout.split())
    return result


def config(tiny_bert, corpus_dir, out, **kw) -> RunConfig:
    return tiny_config(tiny_bert, corpus_dir, out, **{"bootstrap": 10, **kw})


@pytest.fixture(scope="module")
def reference(tiny_bert, corpus_dir, tmp_path_factory) -> RunConfig:
    """An undisturbed run, extracted in process (its bytes equal a Ray run's)."""
    return tiny_extracted(tiny_bert, corpus_dir, tmp_path_factory.mktemp("reference"), bootstrap=10)


def copy_run(cfg: RunConfig, dest: Path) -> RunConfig:
    shutil.copytree(cfg.out, dest)
    (dest / "config.yaml").write_text((dest / "config.yaml").read_text().replace(cfg.out, str(dest)))
    return cfg.model_copy(update={"out": str(dest)})


# ----------------------------------------------------------------------------- driver killed
def session_processes(sid: int) -> list[psutil.Process]:
    """Processes of one POSIX session: the killed driver's local Ray (GCS, raylet, agents, actors).

    The driver was started in a new session, so this finds exactly the processes it started and
    never those of another Ray session on the machine."""
    out = []
    for proc in psutil.process_iter():
        try:
            if proc.pid != sid and os.getsid(proc.pid) == sid and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
        except (ProcessLookupError, PermissionError, psutil.NoSuchProcess):
            pass
    return out


def kill_session(sid: int) -> None:
    kill_processes(session_processes(sid))


def test_driver_killed_mid_extraction_resumes_with_the_same_command(tiny_bert, corpus_dir, tmp_path, reference):
    cfg = config(tiny_bert, corpus_dir, tmp_path / "run")
    stage_prepare(cfg, use_ray=False)  # writes config.yaml: `attnsim extract --out` reuses it
    markers = Path(cfg.store_url, "_markers")
    command = ["extract", "--out", cfg.out]
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # this run's own Ray temp dir, short for socket paths
    log = tmp_path / "driver.log"  # a file, not a pipe: a full pipe would stall the driver
    driver = subprocess.Popen(
        [sys.executable, "-m", "attnsim.cli", *command],
        env={**ENV, "RAY_TMPDIR": ray_tmp},
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while len(list(markers.glob("*.json"))) < 2:  # extraction under way
            assert driver.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "extraction never started"
            time.sleep(0.01)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
    finally:
        kill_session(driver.pid)  # its actor may still be writing: stop it before counting
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert not session_processes(driver.pid)

    done_before = {p.name: p.stat().st_mtime_ns for p in markers.glob("*.json")}
    todo = N_UNITS - len(done_before)
    assert 2 <= len(done_before) < N_UNITS, "the kill must land during extraction"
    # A unit cut off between its shards and its marker: garbage arrays, a truncated shard and a
    # temp file of an interrupted write, but no marker. The rerun must rewrite it whole.
    half = max(u for u in range(N_UNITS) if f"shard-{u:06d}.json" not in done_before)
    import zarr

    root = zarr.open_group(cfg.store_url, mode="r+")
    for name in ("topk_index", "topk_value", "attention_mass"):
        root[name][half] = 7
    shard = Path(cfg.store_url, "topk_value", "c", str(half), "0", "0", "0", "0")
    shard.write_bytes(shard.read_bytes()[:40])
    shard.with_name("0.feedbeef.partial").write_bytes(b"interrupted write")
    kept_shard_times = {
        p: p.stat().st_mtime_ns
        for u in range(N_UNITS)
        if f"shard-{u:06d}.json" in done_before
        for p in Path(cfg.store_url, "topk_index", "c", str(u)).rglob("*")
        if p.is_file()
    }

    rerun = attnsim_with_ray(*command)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"extracted {todo} units (0 retried); 0 remaining" in rerun.stdout, rerun.stdout
    assert {p.name: p.stat().st_mtime_ns for p in markers.glob("*.json") if p.name in done_before} == done_before
    assert {p: p.stat().st_mtime_ns for p in kept_shard_times} == kept_shard_times  # done units untouched
    assert array_digest(cfg.store_url) == array_digest(reference.store_url)
    assert not list(Path(cfg.store_url).rglob("*.partial"))


# ----------------------------------------------------------------------------- wrong store
@pytest.fixture(scope="module")
def other_inputs(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("other")
    (folder / "corpus").mkdir()
    return {
        "model": make_tiny_model(folder / "model", heads=2),
        "corpus": make_corpus(folder / "corpus", docs=DOCS[:3], repeat=2),
    }


@pytest.mark.parametrize(
    "change, named",
    [
        ("model", "model="),
        ("max_tokens", "max_tokens=32, not 48"),
        ("k", "k=8, not 4"),
        ("similarity_kind", "similarity_kind='dot', not 'cosine'"),
        ("corpus", "corpus="),
    ],
)
def test_resuming_with_other_settings_is_refused_and_the_store_untouched(reference, other_inputs, tmp_path, change, named):
    cfg = copy_run(reference, tmp_path / "run")
    value = {"max_tokens": 48, "k": 4, "similarity_kind": "cosine"}.get(change) or other_inputs.get(change)
    before = tree_digest(cfg.out, exclude=())
    with pytest.raises(UserError) as err:
        stage_prepare(cfg.model_copy(update={change: value}), use_ray=False)  # what `attnsim run` does first
    message = str(err.value)
    assert named in message and "\n" not in message and "--out" in message, message
    if change == "corpus":
        assert repr(reference.corpus) in message  # names the corpus the store was made from
    assert tree_digest(cfg.out, exclude=()) == before


def test_cli_refuses_a_store_of_another_run_with_one_line_and_exit_2(reference, tmp_path):
    cfg = copy_run(reference, tmp_path / "run")
    before = tree_digest(cfg.out, exclude=())
    other = tmp_path / "other.yaml"
    other.write_text(f"model: {reference.model}\ncorpus: {reference.corpus}\nmax_tokens: 32\nwindows_per_shard: 1\nk: 4\n")
    for args in (["run", "--config", str(other), "--out", cfg.out, "--local"], ["extract", "--config", str(other), "--out", cfg.out, "--local"]):
        r = cli(*args)
        assert r.exit_code == 2, r.stderr[-2000:]
        errors = [line for line in r.stderr.splitlines() if line.strip()]
        assert len(errors) == 1 and errors[0].startswith("error:") and "k=8, not 4" in errors[0], r.stderr
    assert tree_digest(cfg.out, exclude=()) == before


# ----------------------------------------------------------------------------- verify, repair
def test_verify_finds_corrupt_and_missing_units_and_repair_redoes_exactly_those(reference, tmp_path):
    cfg = copy_run(reference, tmp_path / "run")
    store = Path(cfg.store_url)
    ok = cli("verify", str(store))
    assert ok.exit_code == 0 and f"{N_UNITS} of {N_UNITS} units verified" in ok.flat, ok.stdout + ok.stderr

    flipped = store / "topk_value" / "c" / "3" / "0" / "0" / "0" / "0"  # bit rot in unit 3's shard
    raw = bytearray(flipped.read_bytes())
    raw[-12:-4] = bytes(b ^ 0xFF for b in raw[-12:-4])
    flipped.write_bytes(bytes(raw))
    chunk = store / "attention_mass" / "c" / "11" / "0" / "0" / "0"  # unit 11: a decodable but wrong shard
    shutil.copy(store / "attention_mass" / "c" / "12" / "0" / "0" / "0", chunk)
    (store / "_markers" / "shard-000020.json").unlink()  # unit 20: its marker lost
    untouched = {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file() and "/c/" in str(p) and not re.search(r"/c/(3|11|20)/", str(p))}

    bad = cli("verify", str(store))
    assert bad.exit_code == 1
    assert "missing (1): 000020" in bad.flat, bad.stdout
    assert "corrupt: unit 000003: unreadable shard" in bad.flat, bad.stdout
    assert "corrupt: unit 000011: checksum differs from the marker" in bad.flat, bad.stdout
    assert f"{N_UNITS - 3} of {N_UNITS} units verified" in bad.flat

    repair = cli("extract", "--repair", "--out", cfg.out, "--local")
    assert repair.exit_code == 0, repair.stderr[-3000:]
    assert "extracted 3 units (0 retried); 0 remaining" in repair.flat, repair.stdout
    assert {p: p.stat().st_mtime_ns for p in untouched} == untouched  # only those three were redone
    assert cli("verify", str(store)).exit_code == 0
    assert array_digest(store) == array_digest(reference.store_url)


# ----------------------------------------------------------------------------- dirty input
def test_dirty_corpus_is_reported_per_document_and_never_stops_the_run(tiny_bert, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "good.txt").write_text(DOCS[0])
    (corpus / "empty.txt").write_text("")
    (corpus / "blob.txt").write_bytes(b"\x7fELF\x02\x01\x01\x00\x00\x00" + bytes(64))
    (corpus / "latin1.txt").write_bytes("Caf\xe9 cr\xe8me. Voil\xe0.".encode("latin-1"))
    (corpus / "lines.jsonl").write_text('{"text": "A good line."}\n{"text": \n')
    r = cli("prepare", "--model", tiny_bert, "--corpus", str(corpus), "--max-tokens", "32", "--out", str(tmp_path / "run"), "--local")
    assert r.exit_code == 0, r.stderr[-3000:]
    assert "3 documents" in r.flat
    for line in ("document problem bad_json: 1", "document problem binary: 1", "document problem empty: 1", "document problem invalid_utf8: 1"):
        assert line in r.flat, r.stdout


def test_parquet_without_the_text_column_is_one_line_and_exit_2(tiny_bert, tmp_path):
    import polars as pl

    pl.DataFrame({"body": ["Some text."]}).write_parquet(tmp_path / "data.parquet")
    out = tmp_path / "run"
    r = cli("prepare", "--model", tiny_bert, "--corpus", str(tmp_path / "data.parquet"), "--max-tokens", "32", "--out", str(out), "--local")
    assert r.exit_code == 2
    errors = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error:"), r.stderr
    assert "no column 'text'" in errors[0] and "--text-column" in errors[0]
    assert not out.exists()
