#!/usr/bin/env bash
# Downloads into .whl/ (ignored by git) the wheels that `bench/gpu-check.sh` installs on a GPU
# machine that has torch, numpy, OpenCV, ONNX Runtime, Pillow and pytest but no PyPI: the
# pipeline's other packages, at the versions this checkout's .venv runs, for that machine's
# Python (GPU_PYTHON, default 3.12). Run it here, then send .whl with the checks (the device
# tool's `carry`; about 20 MB).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
GPU_PYTHON=${GPU_PYTHON:-3.12}
NAMES='facenet-pytorch|pydantic|pydantic[-_]core|annotated-types|typing[-_]inspection|typing[-_]extensions|boto3|botocore|s3transfer|jmespath|aws[-_]lambda[-_]powertools'
mapfile -t pins < <("$PY" -m pip freeze | grep -iE "^($NAMES)==")
[ "${#pins[@]}" -eq 11 ] || { echo "gpu-wheels: expected 11 pins in $PY's environment, got: ${pins[*]}" >&2; exit 1; }
rm -rf .whl && mkdir .whl
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
    platforms+=(--platform "$p")
done
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$GPU_PYTHON" \
    --implementation cp "${platforms[@]}" -d .whl "${pins[@]}"
du -sh .whl
