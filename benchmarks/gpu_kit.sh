#!/usr/bin/env bash
# Builds .gpu/ (git-ignored) for benchmarks/gpu_run.sh: wheels of what a bare CUDA image with torch and
# transformers lacks (Python 3.12, x86-64), minilm's weights in float16, the lee corpus file.
set -euo pipefail
py=${PYTHON:-.venv/bin/python}
mkdir -p .gpu/whl .gpu/minilm
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .gpu/whl \
    zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0 pydantic==2.14.4 pydantic_core==2.50.5 \
    annotated-types==0.8.0 typing-inspection==0.4.5 pysbd==0.3.4 typing_extensions==4.16.0
"$py" - <<'PY'
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file

from attnsim.model.loading import resolve_model_source
from attnsim.prepare.sources import CORPUS_ALIASES

src, dst = Path(resolve_model_source("minilm")), Path(".gpu/minilm")
for f in src.iterdir():
    if f.suffix == ".safetensors":
        save_file({k: v.half().contiguous() for k, v in load_file(f).items()}, dst / f.name, metadata={"format": "pt"})
    elif f.is_file():
        shutil.copy(f, dst)
import importlib.util
package, relative = CORPUS_ALIASES["lee"]
shutil.copy(Path(importlib.util.find_spec(package).submodule_search_locations[0]) / relative, ".gpu/lee_background.cor")
PY
du -sh .gpu
