#!/usr/bin/env bash
# `make lab` / `make lab-down`: a three-host cluster on this machine (tests/cluster/lab.py).
set -euo pipefail
cd "$(dirname "$0")/.."
export VIRTFLEET_CACHE_DIR=${VIRTFLEET_CACHE_DIR:-/var/cache/virtfleet}
exec .venv/bin/python -m tests.cluster.lab "$@"
