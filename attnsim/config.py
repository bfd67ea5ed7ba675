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
    """Thresholds of the head-specialisation rule (attnsim/reduce/statistics.py), checked in order.

    Every label needs a ratio to the random head (chance.py; 1 = chance) so that a head cannot earn a
    label by what a random or a purely positional head would score too, and, where the ratio alone
    could come from a rare class, a share, so that the feature is a large part of what the head does.
    """

    model_config = ConfigDict(extra="forbid")

    # Sentence-final punctuation and [SEP] hold about 1 in 20 tokens of prose, so a random head's
    # separator share is about 0.05: a quarter of all high pairs is 5x that, and the ratio guards
    # corpora of short windows, where chance itself can approach a quarter.
    separator_share: float = 0.25  # >= this share of high pairs point at [SEP] or sentence-final punctuation
    separator_ratio: float = 4.0  # ... and that share is >= this many times the random head's
    # A fifth of a head's pairs being repeats is far above prose's few percent; 5x chance rules out
    # corpora whose small vocabulary makes repeats common anyway.
    repetition_share: float = 0.2  # >= this share of real high pairs join two tokens of one id
    repetition_ratio: float = 5.0  # ... and >= this many times the random head's share
    anchor_share: float = 0.25  # the top anchor token takes >= this share of high pairs
    anchor_ratio: float = 5.0  # ... and >= this many times the random head's expected share of it (its in-degree)
    # Local (positional): P(d) / chance concentrated at small d. With k = 8, a head of the k nearest
    # tokens has every pair at d <= 4; half its pairs there, and 3x a random head's share, is
    # locality that a sentence-wide head (sentences of ~25 tokens: about a third at d <= 4) lacks.
    local_distance: float = 4.0  # "small d": high pairs at |i - j| <= this count as local
    local_share: float = 0.5  # >= this share of real high pairs at d <= local_distance
    local_ratio: float = 3.0  # ... and >= this many times the random head's share there
    # The matched ratio cannot exceed 1 / p_same at the head's distances (about 1.3-2 for prose at
    # d of 5-15); 1.2 asks for a fifth more same-sentence pairs than the head's distances predict.
    # A purely local head scores about 1 (minilm/lee: heads 0.99-1.15, see README).
    sentence_ratio: float = 1.2  # same_sentence_ratio_matched >= this: a sentence-specific head

    @model_validator(mode="before")
    @classmethod
    def _retired_keys(cls, data):
        """Configs saved before the rule used ratios hold its old keys at their defaults: dropped, so
        such a run folder can be reduced again; an old key set to another value is refused, naming its successor."""
        old_defaults = {
            "separator_share": 0.5,
            "repetition_enrichment": 5.0,
            "repetition_share": 0.2,
            "anchor_share": 0.25,
            "anchor_lift": 5.0,
            "local_distance": 2.0,
            "sentence_enrichment": 1.5,
        }
        retired = {  # key of the pre-chance rule -> (its old default, the key that replaces it)
            "repetition_enrichment": (5.0, "repetition_ratio"),
            "anchor_lift": (5.0, "anchor_ratio"),
            "sentence_enrichment": (1.5, "sentence_ratio"),
        }
        if not isinstance(data, dict):
            return data
        if data == old_defaults:  # the whole old default rule, as every earlier run saved it
            return {}
        data = dict(data)
        for old, (default, new) in retired.items():
            if old in data and data.pop(old) != default:
                raise ValueError(f"{old} is retired (it compared with an uncalibrated baseline); set {new} instead")
        return data


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
