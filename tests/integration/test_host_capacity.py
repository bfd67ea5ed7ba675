"""The harness's host-capacity measure (benchmarks/host.py) on a tiny random BERT: it times the
real pipeline (every full unit ends as shards plus a marker whose checksum matches what the store
holds) over the tokens it says, and leaves the partial last unit alone."""

from __future__ import annotations

import numpy as np

from attnsim.config import RunConfig
from attnsim.extract.stage import Extractor
from attnsim.pipeline import stage_prepare
from attnsim.store.io import completed_units, read_marker, read_unit, unit_checksum
from attnsim.store.meta import TIER_ARRAYS
from benchmarks.host import host_capacity


def test_host_capacity_writes_and_marks_every_full_unit(tiny_bert, corpus_dir, tmp_path):
    cfg = RunConfig(model=tiny_bert, corpus=corpus_dir, out=str(tmp_path), max_tokens=32, windows_per_shard=4, batch_size=3)
    stage_prepare(cfg, use_ray=False)
    extractor = Extractor(cfg)
    layout = extractor.layout
    lengths = extractor.root["length"][:]
    full = [u for u in range(layout.n_units) if layout.unit_windows(u)[1] - layout.unit_windows(u)[0] == layout.windows_per_shard]
    assert 2 <= len(full) < layout.n_units, "the corpus should give full units and a partial last one"

    out = host_capacity(extractor, threads=(1, 2), repeats=1, distinct_units=2)

    # Units are written from the first two computed units in turn: 0, 1, 0, 1, ...
    sources = [full[i % 2] for i in range(len(full))]
    expected_tokens = sum(int(lengths[slice(*layout.unit_windows(s))].sum()) for s in sources)
    assert out["host_tokens"] == expected_tokens
    for n in (1, 2):
        assert out[f"host_tokens_per_s_{n}t"] == expected_tokens / out["host_walls"][n][0]
        assert out[f"host_tokens_per_s_per_core_{n}t"] * n == out[f"host_tokens_per_s_{n}t"]
    assert completed_units(cfg.store_url) == set(full)  # the partial last unit is never written
    for unit, source in zip(full, sources):
        stored = read_unit(extractor.root, layout, unit, TIER_ARRAYS["default"])
        assert read_marker(cfg.store_url, unit)["checksum"] == unit_checksum(stored)
        if unit == source:  # a unit written from its own windows holds what extraction computes
            tokens = read_unit(extractor.root, layout, unit, ("input_ids", "sentence_id", "length"))
            again = extractor.computer.compute(tokens["input_ids"], tokens["sentence_id"], tokens["length"])
            for name in TIER_ARRAYS["default"]:
                np.testing.assert_array_equal(stored[name], again[name])
