#!/usr/bin/env bash
# Runs the whole suite: meta checks (ruff, mypy, import contracts) are tests too.
set -euo pipefail
cd "$(dirname "$0")/.."
export VIRTFLEET_CACHE_DIR=${VIRTFLEET_CACHE_DIR:-/var/cache/virtfleet}
mkdir -p artifacts
# The 20 slowest tests close every run: where the suite's time goes.
exec .venv/bin/pytest -p no:cacheprovider --durations=20 --junitxml=artifacts/junit.xml "$@"
