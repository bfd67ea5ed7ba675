"""Where one extraction's time goes: cProfile of a few default-tier units, run one at a time.

The profile behind the tables in benchmarks/RESULTS.md. Units run serially (cProfile sees only the
calling thread); on a GPU, kernels are asynchronous, so their time shows up where the host waits
(the per-batch host transfer).

    python -m benchmarks.profile_units --units 4                     # CPU, lee, minilm
    python -m benchmarks.profile_units --device cuda --dtype float16 --batch-size 32
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import time
from pathlib import Path

from attnsim.config import RunConfig
from attnsim.extract.stage import Extractor
from attnsim.model.loading import load_model
from attnsim.prepare.stage import prepare, token_classes


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="lee")
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--units", type=int, default=4, help="units profiled (after one warm-up unit)")
    ap.add_argument("--out", default="/tmp/attnsim-profile")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args(argv)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    cfg = RunConfig(corpus=args.corpus, model=args.model, out=str(out), device=args.device, dtype=args.dtype, batch_size=args.batch_size)
    loaded = load_model(cfg.model, device=args.device, dtype=args.dtype if args.device == "cuda" else "float32")
    prep = prepare(cfg, {**loaded.describe(), "max_tokens": loaded.max_tokens, "token_classes": token_classes(loaded.tokenizer)})
    extractor = Extractor(cfg.model_copy(update={"store": prep.url}), loaded=loaded)
    extractor.run_unit(0)  # warm-up
    units = range(1, 1 + min(args.units, extractor.layout.n_units - 1))
    profile = cProfile.Profile()
    began = time.perf_counter()
    profile.enable()
    for unit in units:
        extractor.run_unit(unit)
    profile.disable()
    print(f"{len(units)} units in {time.perf_counter() - began:.2f} s ({args.device}, {args.dtype}, batch {args.batch_size})")
    pstats.Stats(profile).sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
