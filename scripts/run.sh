#!/usr/bin/env bash
# `make run`: start the daemon on DATA_DIR (unless it already runs), build the tiny
# image if missing, create and start the `demo` VM, and print how to reach it.
# `scripts/run.sh DATA_DIR --stop` stops the daemon (VMs keep running).
set -euo pipefail
cd "$(dirname "$0")/.."
data_dir=$1
vf() { .venv/bin/virtfleet --data-dir "$data_dir" "$@"; }
pidfile="$data_dir/virtfleet.pid"

if [ "${2:-}" = "--stop" ]; then
  [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null && echo "virtfleet daemon stopped"
  rm -f "$pidfile"
  exit 0
fi

mkdir -p "$data_dir"
if ! vf vm list >/dev/null 2>&1; then
  echo "Starting the virtfleet daemon on $data_dir (log: $data_dir/virtfleet.log)"
  setsid nohup .venv/bin/virtfleet --data-dir "$data_dir" serve >>"$data_dir/virtfleet.log" 2>&1 &
  echo $! >"$pidfile"
  for _ in $(seq 1 150); do vf vm list >/dev/null 2>&1 && break; sleep 0.2; done
  vf vm list >/dev/null || { tail -20 "$data_dir/virtfleet.log"; exit 1; }
fi

vf image show tiny >/dev/null 2>&1 || vf image build tiny
vf vm show demo >/dev/null 2>&1 || vf vm create demo --image tiny --memory 256M --nic user
power=$(vf vm show demo --json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["status"]["power"])')
case "$power" in
  running) ;;
  paused) vf vm resume demo ;;
  *) vf vm start demo ;;
esac

echo "Waiting for demo to boot (TCG binary translation takes a few seconds)..."
for _ in $(seq 1 240); do
  vf vm logs demo 2>/dev/null | grep -q VIRTFLEET-READY && break
  sleep 0.5
done
vf vm logs demo | grep VIRTFLEET-READY | tail -1 || echo "demo has not printed its boot marker yet"
echo
vf vm list
cat <<TXT

virtfleet is running (data directory: $data_dir).
  virtfleet --data-dir $data_dir vm list           # instances, state and virtualization mode
  virtfleet --data-dir $data_dir vm console demo   # serial console (detach: Ctrl-])
  virtfleet --data-dir $data_dir host check        # what this host can do
  make stop                                         # stop the daemon (VMs keep running)
(the virtfleet command is .venv/bin/virtfleet; VIRTFLEET_DATA_DIR works too)
TXT
