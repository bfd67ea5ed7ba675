"""One typed config for a whole run, validated on load.

Every choice the paper leaves open is a field here with a documented default. An unknown or
misspelt key is an error that names it (``extra="forbid"``).

Example::

    cfg = RunConfig.load("jobs/configs/default.yaml", overrides={"max_tokens": 128})
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from attnsim.errors import UserError

Tier = Literal["default", "vectors", "dense"]


class LabelRule(BaseModel):
    """Thresholds of the head-specialisation rule (see docs/design.md, Statistics). Checked in order."""

    model_config = ConfigDict(extra="forbid")

    separator_share: float = 0.5  # >= this share of high pairs point at [SEP]/[CLS]/final punct
    repetition_enrichment: float = 5.0  # >= this many times more repeated tokens than chance
    repetition_share: float = 0.2  # ... and >= this share of real high pairs are repetitions
    anchor_share: float = 0.25  # the top anchor token takes >= this share of high pairs
    anchor_lift: float = 5.0  # ... and is >= this many times its corpus frequency
    local_distance: float = 2.0  # mean high-pair distance <= this: a positional (prev/next) head
    sentence_enrichment: float = 1.5  # same-sentence enrichment >= this: a sentence-local head


class RunConfig(BaseModel):
    # Each field's docstring is its description: the CLI's help and the job entrypoints read it.
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), use_attribute_docstrings=True)

    # --- inputs
    model: str = "minilm"
    """alias `minilm` (embedded), a local folder, or a hub id"""
    corpus: str = "lee"
    """alias `lee` (embedded), a folder/glob of .txt, .jsonl, .parquet, or hf:NAME"""
    text_column: str = "text"
    """column of .jsonl/.parquet/datasets inputs that holds the text"""
    one_per_line: bool = False
    """.txt inputs: one document per line instead of one per file"""
    hf_split: str = "train"
    """split of a Hugging Face dataset corpus"""
    trust_remote_code: bool = False
    """never run model code from a hub unless asked"""
    allow_pickle_weights: bool = False
    """load only safetensors weights unless asked"""

    # --- outputs
    out: str = "runs/default"
    """run folder: config, stats, report (local path or fsspec URL)"""
    store: str | None = None
    """default: <out>/store.zarr; may be any fsspec URL (s3://, memory://)"""

    # --- windows
    max_tokens: int = Field(256, ge=8)
    """tokens per window incl. [CLS]/[SEP]; 512 is BERT's limit"""
    sentence_separator: Literal["none", "sep"] = "none"
    """`sep` puts [SEP] between sentences"""
    windows_per_shard: int = Field(32, ge=1)
    """one work unit = one Zarr shard along `window`"""
    docs_per_partition: int = Field(2000, ge=1)
    """prepare fans out over partitions of documents"""

    # --- extraction
    similarity_kind: Literal["dot", "cosine"] = "dot"
    """the paper's scalar product by default"""
    k: int = Field(8, ge=1, le=64)
    """neighbours kept per token in the default tier"""
    tiers: list[Tier] = ["default"]
    """add `vectors` (head outputs) and/or `dense` (full S)"""
    batch_size: int = Field(8, ge=1)
    """windows per forward pass"""
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    """model weights; S sums stay fp32"""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto: the actor's GPU if it was given one"""
    workers: int | None = None
    """actor pool size; default: actors_per_gpu per GPU, else one per 4 CPUs (cpus_per_worker)"""
    actors_per_gpu: int = Field(1, ge=1)
    """several small models can share one GPU"""
    cpus_per_worker: int | None = None
    """CPU actors: cores each (torch threads); default all/workers"""
    max_unit_retries: int = Field(3, ge=0)
    """a unit whose actor died is retried this many times"""
    actor_wait_timeout_s: float = Field(600.0, ge=0)
    """Seconds the extraction pool waits with no actor able to start (none placeable, or the
    cluster shrank) before the job fails naming what an actor asks for; 0 waits for an autoscaler."""
    unit_writers: int | None = Field(None, ge=0)
    """Units compressed and written beside the compute, per worker; default 0 on a CPU (a writer
    thread only takes cores from torch), 4 on a GPU (the host's compression is the bottleneck there)."""

    # --- reduce
    high_mode: Literal["topk", "quantile"] = "topk"
    """What makes a pair "high": j among i's top k (`topk`), or S above a quantile (`quantile`)."""
    quantile: float = Field(0.99, gt=0.0, lt=1.0)
    """`quantile` mode: per-head corpus quantile of S"""
    bootstrap: int = Field(200, ge=0)
    """Poisson bootstrap replicates over windows for CIs"""
    seed: int = 0
    """bootstrap seed"""
    top_anchors: int = Field(10, ge=1)
    """anchors kept per head in anchors.parquet"""
    dask_scheduler: str = "threads"
    """`threads`, `synchronous`, or a dask.distributed address"""
    labels: LabelRule = LabelRule()

    @field_validator("tiers")
    @classmethod
    def _tiers_include_default(cls, tiers: list[str]) -> list[str]:
        return sorted(set(tiers) | {"default"}, key=["default", "vectors", "dense"].index)

    @model_validator(mode="after")
    def _check(self) -> "RunConfig":
        if self.high_mode == "quantile" and not ({"vectors", "dense"} & set(self.tiers)):
            raise ValueError("high_mode=quantile needs the `vectors` or `dense` tier (add it to tiers)")
        if self.store is not None and "://" not in self.store:
            # A relative store path lives inside the run folder (a local one or a URL prefix alike)
            # and must not climb out of it; an absolute path or a URL is an explicit choice.
            norm = posixpath.normpath(self.store)
            if not posixpath.isabs(norm) and (norm == ".." or norm.startswith("../")):
                raise ValueError(f"store {self.store!r} escapes the run folder; use a path inside it")
        return self

    # ---------------------------------------------------------------- derived paths
    @property
    def store_url(self) -> str:
        if self.store is None:
            return join_url(self.out, "store.zarr")
        if "://" in self.store or posixpath.isabs(self.store):
            return self.store
        return join_url(self.out, self.store)

    @property
    def stats_url(self) -> str:
        return join_url(self.out, "stats")

    # ---------------------------------------------------------------- loading
    @classmethod
    def load(cls, path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> "RunConfig":
        """Build a config from an optional YAML file plus overrides (CLI flags); None values are ignored."""
        data: dict[str, Any] = read_yaml(path) if path is not None else {}
        data.update({k: v for k, v in (overrides or {}).items() if v is not None})
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise UserError(describe_validation_error(e)) from None

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML config file; a missing or malformed file is a UserError naming it."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file {str(p)!r} not found; pass an existing YAML file, e.g. jobs/configs/default.yaml")
    try:
        loaded = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"config file {str(p)!r} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(loaded, dict):
        raise UserError(f"config file {str(p)!r} must hold a mapping of settings")
    return loaded


def describe_validation_error(e: ValidationError) -> str:
    """One line naming the first bad key and what is expected."""
    err = e.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "config"
    if err["type"] == "extra_forbidden":
        return f"unknown config key {where!r}; check its spelling (see `attnsim run --help`)"
    return f"bad config value for {where!r}: {err['msg']}"


def join_url(base: str, *parts: str) -> str:
    """Join path segments onto a local path or an fsspec URL."""
    if "://" in base:
        return "/".join([base.rstrip("/"), *parts])
    return str(Path(base, *parts))
