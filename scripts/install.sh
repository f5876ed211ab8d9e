#!/usr/bin/env bash
# `make install`'s pip steps into an existing venv (PY): torch and torchvision (TORCH_PINS), then
# facenet-pytorch with --no-deps, then requirements-dev.txt.
#
# TORCH_BUILD picks the torch build: `cuda` is PyPI's (on Linux x86_64 the CUDA build: ~4 GB of
# nvidia and triton packages), `cpu` the CPU build from TORCH_CPU_INDEX (PyTorch's CPU index; its
# `2.14.1+cpu` sorts above PyPI's `2.14.1`, so pip takes it, and the rest comes from your usual
# index), `auto` (default) `cuda` where `nvidia-smi -L` lists a GPU, else `cpu`. When the CPU
# index cannot be reached within a few seconds, it says so and installs PyPI's build instead.
#
# facenet-pytorch 2.6 pins torch<2.3, numpy<2 and Pillow<10.3; it runs beside the torch installed
# here (the tests compare the pipeline against it), so pip's conflict lines about it are expected
# and replaced by one note. Any other pip output, and pip's exit status, pass through.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
TORCH_PINS=${TORCH_PINS:-torch==2.14.1 torchvision==0.29.1}
TORCH_BUILD=${TORCH_BUILD:-auto}
TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
PROBE_TIMEOUT=${PROBE_TIMEOUT:-5}

# pip install ARGS..., its stderr with the facenet-pytorch lines of the conflict block turned into
# the note (stdout untouched; pipefail keeps pip's exit status).
pip_install() {
    { "$PY" -m pip install --quiet "$@" 2>&1 1>&3 3>&- | awk '
        /^ERROR: pip.s dependency resolver does not currently take into account/ {
            header = $0; block = 1; next
        }
        block && /^facenet-pytorch [^ ]+ requires / {
            version = $2
            if (match($0, /you have torch [^ ]+/)) torch = substr($0, RSTART + 15, RLENGTH - 15)
            req = $0; sub(/^[^ ]+ [^ ]+ requires /, "", req); sub(/,? (but|which) .*/, "", req)
            wants = wants (wants != "" ? ", " : "") req; next
        }
        block && / requires / { if (header != "") { print header; header = "" } print; next }
        { block = 0; print }
        END {
            if (wants == "") exit
            printf "note: pip says facenet-pytorch %s wants %s; expected: make install puts it in with --no-deps beside %s, which it works with\n",
                version, wants, (torch != "" ? "torch " torch : "this torch")
        }' >&2; } 3>&1
}

# 0 when URL answers within PROBE_TIMEOUT seconds (a thread, so a hanging DNS lookup counts too).
reachable() {
    "$PY" - "$1" "$PROBE_TIMEOUT" <<'EOF'
import sys, threading, urllib.request

url, timeout = sys.argv[1], float(sys.argv[2])
answered = []
def probe() -> None:
    try:
        urllib.request.urlopen(url, timeout=timeout).close()
        answered.append(url)
    except Exception:
        pass
thread = threading.Thread(target=probe, daemon=True)
thread.start()
thread.join(timeout + 1)
sys.exit(0 if answered else 1)
EOF
}

build=$TORCH_BUILD
case "$build" in
auto)
    if nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then build=cuda; else build=cpu; fi ;;
cpu | cuda) ;;
*)
    echo "install: TORCH_BUILD must be auto, cpu or cuda, not '$build'" >&2
    exit 2 ;;
esac

read -r -a pins <<<"$TORCH_PINS"
if [ "$build" = cpu ] && ! reachable "${TORCH_CPU_INDEX%/}/torch/"; then
    echo "install: $TORCH_CPU_INDEX cannot be reached; installing PyPI's torch build instead (on Linux the CUDA one, ~4 GB more)" >&2
    build=pypi
fi
if [ "$build" = cpu ]; then
    echo "install: torch CPU build ($TORCH_PINS from $TORCH_CPU_INDEX)"
    pip_install --extra-index-url "$TORCH_CPU_INDEX" "${pins[@]}"
else
    echo "install: torch from PyPI ($TORCH_PINS; TORCH_BUILD=$TORCH_BUILD)"
    pip_install "${pins[@]}"
fi
pip_install --no-deps facenet-pytorch==2.6.0
pip_install -r requirements-dev.txt
