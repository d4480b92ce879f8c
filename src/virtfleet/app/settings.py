"""Daemon settings: where the data directory is and what lives in it.

Everything the platform keeps (store, images, disks, sockets, logs) is under
one data directory, so independent instances can run side by side; what only
lives while the host is up and others must traverse (container rootfs mount
points) is under the daemon's own runtime directory.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

RUNTIME_ROOT = Path("/run/virtfleet")


def default_data_dir() -> Path:
    env = os.environ.get("VIRTFLEET_DATA_DIR")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/virtfleet")
    return Path.home() / ".local/share/virtfleet"


def default_cache_dir() -> Path:
    env = os.environ.get("VIRTFLEET_CACHE_DIR")
    if env:
        return Path(env)
    return Path("/var/cache/virtfleet") if os.geteuid() == 0 else Path.home() / ".cache/virtfleet"


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


@dataclass
class Settings:
    data_dir: Path = field(default_factory=default_data_dir)
    cache_dir: Path = field(default_factory=default_cache_dir)
    # "sqlite" (embedded default), "memory", or etcd+http(s)://HOST:PORT URLs, comma-
    # separated (app.stores parses it); the TLS files below are for etcd+https.
    store: str = field(default_factory=lambda: os.environ.get("VIRTFLEET_STORE", "sqlite"))
    etcd_ca: Path | None = field(default_factory=lambda: _env_path("VIRTFLEET_ETCD_CA"))
    etcd_cert: Path | None = field(default_factory=lambda: _env_path("VIRTFLEET_ETCD_CERT"))
    etcd_key: Path | None = field(default_factory=lambda: _env_path("VIRTFLEET_ETCD_KEY"))
    driver: str = "qemu"  # "qemu" or "fake"
    qemu_binary: str = "qemu-system-x86_64"
    runas: str | None = "virtfleet-qemu"  # only without a uid pool (qemu_uids "off")
    # Each VM's QEMU gets its own uid from FIRST:COUNT (host-wide leases); "off": runas.
    qemu_uids: str = field(default_factory=lambda: os.environ.get("VIRTFLEET_QEMU_UIDS", ""))
    kvm_probe_timeout_s: float = 3.0
    tcg_tb_size_mib: int = field(
        default_factory=lambda: int(os.environ.get("VIRTFLEET_TCG_TB_SIZE_MIB", "32"))
    )  # TCG translation cache per VM; 0 = QEMU's default (~41 MiB more per VM)
    # TCP listeners besides <data-dir>/api.sock: "HOST:PORT" values, ["none"] for none
    # (parsed by app.serving: non-loopback always TLS; loopback TLS only with tls=True).
    listen: list[str] = field(default_factory=lambda: ["127.0.0.1:8006"])
    tls: bool = False
    tls_cert: Path | None = None  # with tls_key: the operator's certificate, else self-signed
    tls_key: Path | None = None
    metrics_interval_s: float = 10.0  # how often the collector samples host and instances
    metrics_scrape_from_loopback: bool = False  # /metrics without a token from loopback
    alert_webhooks: list[str] = field(default_factory=list)  # URLs alerts are POSTed to
    # Admission control: allocations may reach host CPUs x cpu ratio, memory x memory ratio.
    cpu_overcommit: float = field(
        default_factory=lambda: float(os.environ.get("VIRTFLEET_CPU_OVERCOMMIT", "4"))
    )
    memory_overcommit: float = field(
        default_factory=lambda: float(os.environ.get("VIRTFLEET_MEMORY_OVERCOMMIT", "1"))
    )
    # The backup repository (default <data-dir>/backups); e.g. another filesystem.
    backup_repo: Path | None = field(
        default_factory=lambda: Path(p) if (p := os.environ.get("VIRTFLEET_BACKUP_REPO")) else None
    )

    # Where imports may read and exports may write (TCP callers; the local root may name
    # any path): default <data-dir>/import and <data-dir>/export.
    import_dir: Path | None = field(default_factory=lambda: _env_path("VIRTFLEET_IMPORT_DIR"))
    export_dir: Path | None = field(default_factory=lambda: _env_path("VIRTFLEET_EXPORT_DIR"))
    # The user qemu-img runs as on untrusted images (falls back to ``runas``).
    image_user: str = "virtfleet-img"
    # Root-owned, traversable runtime state (container rootfs mount points), so the data
    # directory stays 0700: default /run/virtfleet/<instance_id> (gone at reboot).
    runtime_dir: Path | None = field(default_factory=lambda: _env_path("VIRTFLEET_RUNTIME_DIR"))

    # The kernel boot id the daemon compares with the stored one (a new id: the host
    # booted, so autostart instances start); "" = /proc/sys/kernel/random/boot_id.
    boot_id: str = field(default_factory=lambda: os.environ.get("VIRTFLEET_BOOT_ID", ""))
    # The host's name when its identity (<data-dir>/host.json) is first made; "" = the
    # machine's hostname. An existing identity keeps its name.
    host_name: str = field(default_factory=lambda: os.environ.get("VIRTFLEET_HOST_NAME", ""))
    # The host's liveness lease: others show it offline this long after it was cut off
    # (the lab and its tests shorten it to see a partition heal within seconds).
    host_lease_s: float = field(
        default_factory=lambda: float(os.environ.get("VIRTFLEET_HOST_LEASE_S", "15"))
    )
    # The cluster-wide singletons' leader lease (a dead leader is replaced this long after)
    # and how often the leader looks for due backup schedules; the lab shortens both.
    leader_ttl_s: float = field(
        default_factory=lambda: float(os.environ.get("VIRTFLEET_LEADER_TTL_S", "10"))
    )
    schedule_tick_s: float = field(
        default_factory=lambda: float(os.environ.get("VIRTFLEET_SCHEDULE_TICK_S", "20"))
    )

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).absolute()

    @property
    def import_path(self) -> Path:
        return Path(self.import_dir or self.data_dir / "import").absolute()

    @property
    def export_path(self) -> Path:
        return Path(self.export_dir or self.data_dir / "export").absolute()

    @property
    def work_dir(self) -> Path:
        """The daemon's private scratch space for imports and exports (0700)."""
        return self.data_dir / "work"

    @property
    def api_socket(self) -> Path:
        return self.data_dir / "api.sock"

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "tls"

    @property
    def store_path(self) -> Path:
        return self.data_dir / "virtfleet.db"

    @property
    def images_dir(self) -> Path:
        return self.data_dir / "images"

    @property
    def backup_repo_dir(self) -> Path:
        return self.backup_repo or self.data_dir / "backups"

    @property
    def disks_dir(self) -> Path:
        return self.data_dir / "disks"

    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"

    @property
    def runtime_path(self) -> Path:
        """This daemon's runtime directory (one per data directory)."""
        return Path(self.runtime_dir or RUNTIME_ROOT / self.instance_id).absolute()

    @property
    def log_file(self) -> Path:
        return self.data_dir / "virtfleet.log"

    @property
    def instance_id(self) -> str:
        """Short stable id of this data directory (names its cgroups)."""
        return hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:8]
