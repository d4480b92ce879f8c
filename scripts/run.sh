#!/usr/bin/env bash
# `make run`: start the daemon on DATA_DIR (unless it already runs), build the tiny
# image if missing, create and start the `demo` VM, and print how to reach it (the
# API/UI URL, how to log in). VIRTFLEET_LISTEN sets serve's --listen (127.0.0.1:8006).
# `scripts/run.sh DATA_DIR --stop` stops the daemon (VMs keep running).
set -euo pipefail
cd "$(dirname "$0")/.."
data_dir=$1
vf() { .venv/bin/virtfleet --data-dir "$data_dir" "$@"; }
pidfile="$data_dir/virtfleet.pid"
# TCP address(es) of the API and web UI besides the Unix socket; beyond loopback it is HTTPS.
listen=${VIRTFLEET_LISTEN:-127.0.0.1:8006}

if [ "${2:-}" = "--stop" ]; then
  [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null && echo "virtfleet daemon stopped"
  rm -f "$pidfile"
  exit 0
fi

# The log and everything else here is the daemon user's alone (the daemon checks too).
umask 077
mkdir -p "$data_dir"
[ ! -f "$data_dir/virtfleet.log" ] || chmod 600 "$data_dir/virtfleet.log"
if ! vf vm list >/dev/null 2>&1; then
  echo "Starting the virtfleet daemon on $data_dir (log: $data_dir/virtfleet.log)"
  setsid nohup .venv/bin/virtfleet --data-dir "$data_dir" serve --listen "$listen" \
    >>"$data_dir/virtfleet.log" 2>&1 &
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
# Where the API/UI listens and how to log in, from the daemon's own start-up lines.
started() { awk -v want="$1" '/^virtfleet: API on unix:/ {n = 0} $0 ~ want {v[n++] = $NF}
  END {for (i = 0; i < n; i++) print v[i]}' "$data_dir/virtfleet.log"; }
urls=$(started '^virtfleet: API on https?://')
fingerprint=$(started '^virtfleet: TLS certificate SHA-256 fingerprint')
if [ -f "$data_dir/initial-admin-password" ] && [ -t 1 ]; then
  login="user admin, password $(cat "$data_dir/initial-admin-password") (from $data_dir/initial-admin-password; change it after logging in)"
elif [ -f "$data_dir/initial-admin-password" ]; then  # not a terminal: never into a log
  login="user admin, with the one-time password in $data_dir/initial-admin-password (mode 0600)"
elif [ -n "${VIRTFLEET_ADMIN_PASSWORD:-}" ]; then
  login="user admin, with the password set through VIRTFLEET_ADMIN_PASSWORD"
else
  login="user admin, with the password you set"
fi
echo
for url in $urls; do echo "API and web UI: $url"; done
[ -n "$urls" ] || echo "API: Unix socket $data_dir/api.sock only (VIRTFLEET_LISTEN=$listen)"
[ -z "$fingerprint" ] || echo "TLS certificate SHA-256 fingerprint: $fingerprint"
echo "Log in: $login"
cat <<TXT

virtfleet is running (data directory: $data_dir).
  virtfleet --data-dir $data_dir list              # instances, kind, state and virtualization mode
  virtfleet --data-dir $data_dir console demo      # serial console (detach: Ctrl-])
  virtfleet --data-dir $data_dir host check        # what this host can do
  make stop                                         # stop the daemon (VMs keep running)
From another machine (start with VIRTFLEET_LISTEN=0.0.0.0:8006 for HTTPS beyond loopback):
  virtfleet remote add NAME https://HOST:8006 --token TOKEN   # pins the certificate, like SSH
  virtfleet --remote NAME list
(the virtfleet command is .venv/bin/virtfleet; VIRTFLEET_DATA_DIR works too)
TXT
