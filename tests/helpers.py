"""Builders used by the tests: tiny models, small corpora, store checksums."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

DOCS = [
    "The fire spread quickly through the hills. Residents were told to leave their homes. Firefighters worked through the night to contain the fire.",
    "Stocks fell sharply on Monday. Investors worried about rising interest rates! Analysts expect more volatility this week? The market closed lower.",
    "A new species of frog was found in the rainforest. Scientists said the frog is tiny. It was discovered during a survey of the region.",
    "The council approved the budget. It includes money for roads, schools and parks.",
    "Rain is expected tomorrow. The weekend will be sunny and warm.",
]


def make_tiny_model(folder: Path, model_type: str = "bert", layers: int = 2, heads: int = 4, hidden: int = 32) -> str:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from attnsim.model.loading import resolve_model_source

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_source("minilm"))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=2 * hidden,
        max_position_embeddings=128,
    )
    model = BertModel(config)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return str(folder)


def make_corpus(folder: Path, docs=DOCS, repeat: int = 3) -> str:
    for n in range(repeat):
        for m, text in enumerate(docs):
            (folder / f"doc{n:02d}_{m:02d}.txt").write_text(text + (" Extra sentence number %d." % n) * (n + m))
    return str(folder)


def tree_digest(folder: str | Path, exclude=("progress.json",)) -> dict[str, str]:
    """sha256 of every file under a folder, by relative path."""
    folder = Path(folder)
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name not in exclude:
            out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def store_digest(objects) -> dict[str, str]:
    """sha256 of every chunk/shard object and marker among (key within the store, bytes) pairs, by
    key; metadata excluded, and each marker less its `environment` (threads and versions may differ
    between runs; the bytes the marker promises may not)."""
    out = {}
    for key, data in objects:
        if "/c/" in key:
            out[key] = hashlib.sha256(data).hexdigest()
        elif key.startswith("_markers/") and key.endswith(".json"):
            content = json.loads(data)
            content.pop("environment", None)
            out[key] = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
    return out


def array_digest(store: str | Path) -> dict[str, str]:
    """`store_digest` of a local store."""
    folder = Path(store)
    return store_digest((str(p.relative_to(folder)), p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file())


def kill_processes(procs, timeout: float = 15) -> None:
    """SIGKILL each process (gone already is fine) and wait for them: Ray leftovers of one test."""
    import psutil

    for proc in procs:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=timeout)


def extract_actor_processes() -> dict:
    """This test's Ray extraction actors now: process -> title, e.g. "ray::ExtractActor.__init__"
    while it loads the model, "ray::ExtractActor.run_unit" inside a unit (Ray renames a worker
    after the method it runs). Only descendants of the test process are looked at, so no other Ray
    session on the machine is ever touched."""
    import psutil

    found = {}
    for proc in psutil.Process().children(recursive=True):
        try:
            title = proc.cmdline()[:1]
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if title and title[0].startswith("ray::ExtractActor"):
            found[proc] = title[0]
    return found


def extract_in_process(cfg) -> None:
    """Prepare and extract a run without Ray: the undisturbed reference many tests compare against."""
    from attnsim.pipeline import stage_extract, stage_prepare

    stage_prepare(cfg, use_ray=False)
    assert stage_extract(cfg, use_ray=False)["remaining"] == 0


def tiny_config(model: str, corpus: str, out, **settings):
    """A run of the tiny model over the tiny corpus at 32 tokens a window (29 windows), one worker;
    `settings` override or add RunConfig fields."""
    from attnsim.config import RunConfig

    base = dict(model=model, corpus=corpus, out=str(out), max_tokens=32, windows_per_shard=1, batch_size=1, workers=1)
    return RunConfig(**{**base, **settings})


def tiny_extracted(model: str, corpus: str, out, **settings):
    """`tiny_config`, prepared and extracted in process: a reference whose bytes a Ray run must equal."""
    cfg = tiny_config(model, corpus, out, **settings)
    extract_in_process(cfg)
    return cfg
