#!/usr/bin/env bash
# The GPU machine's checks in one call (see benchmarks/RESULTS.md, "GPU"): the CUDA-vs-CPU agreement
# tests, then the harness's extract rows for float32 and float16 weights. That machine has torch and
# transformers but no network: zarr, pydantic, pysbd travel as wheels in .gpu/whl, minilm's weights as
# float16 safetensors in .gpu/minilm (the package's 87 MiB of float32 would not fit the transfer), the
# lee corpus as .gpu/lee_background.cor. Prepare .gpu with benchmarks/gpu_kit.sh on a machine with pip.
# A short device budget: RUNS="float16 32 4" REPEATS=2 bash benchmarks/gpu_run.sh (one configuration per model;
# MODELS="minilm" or "bert-base" for one model). Each configuration runs with the GPU's fused kernels
# (Triton S + top-k, fused attention mass) and again with the T x T reference (KERNELS="auto" skips that).
set -euo pipefail
out=${OUT:-/tmp/attnsim-gpu}
runs=${RUNS:-"float32 8 4,float16 32 4,float16 32 1"}  # dtype batch writers, comma-separated
repeats=${REPEATS:-3}
compare=${COMPARE_SERIAL:---compare-serial}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 ATTNSIM_GPU_TEST_MODEL=$PWD/.gpu/minilm
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv
python3 -c "import torch, transformers, zarr; print('torch', torch.__version__, 'transformers', transformers.__version__, 'zarr', zarr.__version__)"
python3 -m pytest -q -p no:cacheprovider -s tests/gpu 2>&1 | tee "$out/gpu_tests.log"
# Models (issue 12): minilm, and bert-base (BertConfig() defaults, random weights, minilm's tokenizer,
# built by the harness; its goal is extract / bare >= 0.85, minilm's 0.60).
models=${MODELS:-"minilm bert-base"}
kernel_sets=${KERNELS:-"auto reference"}
IFS=, read -ra configurations <<< "$runs"
for model in $models; do
    if [ "$model" = bert-base ]; then
        tiers="default,vectors"  # the dense tier of a 12 x 12-head model would not fit a short run
        model_args=(--model bert-base-random --tokenizer .gpu/minilm --tiers "$tiers")
    else
        model_args=(--model .gpu/minilm)
    fi
    for run in "${configurations[@]}"; do  # dtype, batch, unit writers
        set -- $run
        for kernels in $kernel_sets; do
            name="$model-$1-b$2-w$3-$kernels"
            python3 -m benchmarks.harness --device cuda --dtype "$1" --batch-size "$2" --unit-writers "$3" --extract-only \
                --kernels "$kernels" --repeats "$repeats" $compare --corpus .gpu/lee_background.cor "${model_args[@]}" \
                --out "/tmp/bench-$name" --results "$out/RESULTS-gpu-$name.md" 2>&1 | tail -24
            cp "/tmp/bench-$name/results.json" "$out/results-gpu-$name.json"
        done
    done
done
python3 -m benchmarks.profile_units --device cuda --dtype float16 --batch-size 32 --units 6 --corpus .gpu/lee_background.cor \
    --model .gpu/minilm --top 30 > "$out/profile-gpu-float16-b32.txt" 2>&1 || true
head -60 "$out/profile-gpu-float16-b32.txt" | grep -v "^$" | cut -c1-150
