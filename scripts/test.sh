#!/usr/bin/env bash
# Runs the whole suite: meta checks (ruff, mypy, import contracts) are tests too.
set -euo pipefail
cd "$(dirname "$0")/.."
export VIRTFLEET_CACHE_DIR=${VIRTFLEET_CACHE_DIR:-/var/cache/virtfleet}
mkdir -p artifacts
# Two workers by default (VIRTFLEET_TEST_WORKERS; 0 = serial): most of the suite waits on
# one TCG vCPU thread at a time, so a second worker uses the second core. A module stays on
# one worker (tests/conftest.py groups by module). The 20 slowest tests close every run.
workers=${VIRTFLEET_TEST_WORKERS:-2}
parallel=()
[ "$workers" = 0 ] || parallel=(-n "$workers" --dist loadgroup)
exec .venv/bin/pytest -p no:cacheprovider "${parallel[@]}" --durations=20 \
  --junitxml=artifacts/junit.xml "$@"
