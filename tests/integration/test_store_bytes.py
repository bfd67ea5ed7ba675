"""The store's bytes are those recorded in tests/data/store_digest.json: a refactor that moves code
leaves every shard and marker as it was. A deliberate change of the format or of what is computed
regenerates the record in the same commit and says why:

    ATTNSIM_REGENERATE_DIGEST=1 python -m pytest tests/integration/test_store_bytes.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from helpers import array_digest

from attnsim.config import RunConfig
from attnsim.pipeline import stage_extract, stage_prepare

RECORD = Path(__file__).resolve().parents[1] / "data" / "store_digest.json"


def test_store_bytes_match_the_record(tiny_bert, corpus_dir, tmp_path):
    cfg = RunConfig(
        model=tiny_bert,
        corpus=corpus_dir,
        out=str(tmp_path),
        max_tokens=32,
        windows_per_shard=4,
        batch_size=3,
        tiers=["default", "vectors", "dense"],
    )
    stage_prepare(cfg, use_ray=False)
    assert stage_extract(cfg, use_ray=False)["remaining"] == 0
    digest = array_digest(cfg.store_url)
    if os.environ.get("ATTNSIM_REGENERATE_DIGEST") == "1":
        RECORD.write_text(json.dumps(digest, indent=1, sort_keys=True) + "\n")
    recorded = json.loads(RECORD.read_text())
    assert sorted(digest) == sorted(recorded), "the store has other objects than recorded"
    changed = sorted(key for key in digest if digest[key] != recorded[key])
    assert not changed, f"{len(changed)} of {len(digest)} objects changed, first: {changed[:5]}"
