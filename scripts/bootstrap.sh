#!/usr/bin/env bash
# Installs everything virtfleet needs on a fresh Debian 12 machine (as root):
# system packages (QEMU >= 9.0 from bookworm-backports), a .venv with the
# package and its pinned dependencies. Idempotent: skips what is present.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
if [ "$codename" = "bookworm" ] && ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
  cat > /etc/apt/sources.list.d/virtfleet-backports.sources <<SRC
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  apt_updated=0
fi

for p in qemu-system-x86 qemu-utils busybox-static e2fsprogs cpio zstd iproute2 debootstrap \
         procps util-linux kmod ovmf syslinux syslinux-common mtools dosfstools fdisk \
         chromium prometheus crun runc debootstrap dnsmasq-base nftables curl jq skopeo umoci \
         etcd-server etcd-client swtpm swtpm-tools; do
  have "$p" || need_apt+=("$p")
done
command -v npm >/dev/null || need_apt+=(nodejs npm)  # any node >= 18 will do (e.g. nodesource)
qemu_ok() {
  command -v qemu-system-x86_64 >/dev/null || return 1
  local v; v=$(qemu-system-x86_64 --version | head -1 | sed -E 's/.*version ([0-9]+)\..*/\1/')
  [ "$v" -ge 9 ]
}
if [ ${#need_apt[@]} -gt 0 ] || ! qemu_ok; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  backports=()
  [ "$codename" = "bookworm" ] && backports=(-t bookworm-backports)
  apt-get install -y -qq --no-install-recommends "${backports[@]}" qemu-system-x86 qemu-utils
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi
qemu_ok || { echo "bootstrap: QEMU >= 9.0 is required" >&2; exit 1; }
# virtfleet runs its own etcd members (the tests start theirs): not the package's service.
if command -v systemctl >/dev/null && systemctl is-enabled --quiet etcd 2>/dev/null; then
  systemctl disable --now etcd >/dev/null 2>&1 || true
fi

# Each VM's QEMU drops to its own uid from 90000-99999 (no account needed); this shared
# user is only the fallback with VIRTFLEET_QEMU_UIDS=off. Containers map their own
# 65536-id ranges from 100000 up: they are registered to it in /etc/subuid and
# /etc/subgid, so useradd never hands them to a new user's rootless containers.
if ! id virtfleet-qemu >/dev/null 2>&1; then
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin virtfleet-qemu
fi
getent group kvm >/dev/null && usermod -a -G kvm virtfleet-qemu
# qemu-img reads untrusted images (imports, OVA disks) as this user: no groups, no VMs.
if ! id virtfleet-img >/dev/null 2>&1; then
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin virtfleet-img
fi
id_ranges=100000-1073841823  # 16384 ranges of 65536 (drivers/oci/idranges.py)
grep -q "^virtfleet-qemu:100000:" /etc/subuid 2>/dev/null ||
  usermod --add-subuids "$id_ranges" --add-subgids "$id_ranges" virtfleet-qemu

py=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv || { apt-get install -y -qq python3-venv && "$py" -m venv .venv; }
fi
stamp=.venv/.virtfleet-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e ".[dev]"
  touch "$stamp"
fi

# The web UI's libraries (xterm.js, noVNC) from web/package-lock.json; the daemon serves
# web/node_modules under /ui/vendor/. Only reinstalled when missing or the lock changed.
npm_stamp=web/node_modules/.virtfleet-lock.sha256
lock_sum=$(sha256sum web/package-lock.json | cut -d' ' -f1)
if [ ! -f "$npm_stamp" ] || [ "$(cat "$npm_stamp")" != "$lock_sum" ]; then
  (cd web && npm ci --no-audit --no-fund --loglevel=error)
  echo "$lock_sum" >"$npm_stamp"
fi
