#!/usr/bin/env bash
# Runs the tests under PATH(S) N times in a row (default 20) and stops at the first
# failing run, naming it: a test that fails once in N is a bug to fix at its cause.
# Usage: scripts/flake-check.sh [-n N] PATH...   (make flake-check P="tests/unit" N=20)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=20
if [ "${1:-}" = "-n" ]; then runs=$2; shift 2; fi
[ $# -gt 0 ] || { echo "usage: $0 [-n N] PATH..." >&2; exit 2; }
export VIRTFLEET_CACHE_DIR=${VIRTFLEET_CACHE_DIR:-/var/cache/virtfleet}
for i in $(seq 1 "$runs"); do
  if ! .venv/bin/pytest -p no:cacheprovider -q -x "$@" >"/tmp/flake-check.$$.log" 2>&1; then
    echo "flake-check: run $i of $runs failed ($*):" >&2
    grep -E "^(FAILED|ERROR)" "/tmp/flake-check.$$.log" >&2 || tail -20 "/tmp/flake-check.$$.log" >&2
    exit 1
  fi
  echo "flake-check: run $i of $runs passed: $(tail -1 "/tmp/flake-check.$$.log")"
done
rm -f "/tmp/flake-check.$$.log"
