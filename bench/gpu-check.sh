#!/usr/bin/env bash
# The GPU checks in one run, on a machine with an NVIDIA GPU and a CUDA build of torch: the GPU
# tests (tests/integration/test_gpu.py: parity with facenet-pytorch on the same GPU and with this
# pipeline on the CPU) and `facepipe bench perf` on CUDA (random:0 weights; no local stack, no
# cold start: those are the Lambdas', which have no GPU). Writes everything under $OUT (default
# bench/results/gpu): gpu-smi.txt, gpu-tests.txt, gpu-bench.txt, gpu.json, gpu.png.
# With .whl/ present (bench/gpu-wheels.sh) it first installs those wheels into /tmp/site; with
# the project installed (make install on a GPU host) it needs nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -z "${PY:-}" ]; then
    PY=python3
    [ -x .venv/bin/python ] && PY=.venv/bin/python
fi
if [ -d .whl ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/shared${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu-smi.txt"
"$PY" -c "import torch; assert torch.cuda.is_available(), 'torch sees no GPU'; print(torch.__version__, torch.cuda.get_device_name(0))"
status=0
"$PY" -m pytest -p no:cacheprovider -ra tests/integration/test_gpu.py tests/unit/test_runtime.py \
    2>&1 | tee "$OUT/gpu-tests.txt" || status=1
"$PY" -m facepipe.cli.main bench perf --random-weights --no-e2e --no-cold-start --device cuda \
    --json-out "$OUT/gpu.json" --chart "$OUT/gpu.png" 2>&1 >/dev/null | tee "$OUT/gpu-bench.txt" || status=1
exit $status
