#!/usr/bin/env bash
# make image-check: build both Lambda images on this machine and run every event of events/
# through them (facepipe images check). Where Docker is not running it starts a private dockerd
# (its own data root and socket, host network only, never a bridge) and stops it at the end;
# where dockerd or debootstrap is missing it installs them when it may (root and apt-get).
# Exit status: 0 passed, 1 an event failed, 2 an error, 3 SKIPPED (no Docker can be had here;
# the reason is printed). Figures: bench/results/images.json; build logs: bench/results/images/.
set -euo pipefail
cd "$(dirname "$0")/.."
FACEPIPE=${FACEPIPE:-.venv/bin/facepipe}
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "image-check: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  elif ! docker version >/dev/null 2>&1; then
    echo "image-check: SKIPPED: ${missing[*]} not installed, no Docker running, and no root to" \
         "install them (apt-get install docker.io debootstrap)" >&2
    exit 3
  fi
fi
mkdir -p bench/results/images
exec "$FACEPIPE" images check --logs bench/results/images --json-out bench/results/images.json "$@"
