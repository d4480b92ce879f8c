"""The composition root: the one place that picks and wires concrete classes.

``build_platform`` assembles store, driver, agent, services and the API for a
``Settings``; ``serve`` runs it as the daemon on the data directory's Unix
socket and on TCP (``app.serving``). Nothing imports this module except entry
points (CLI, tests, bench).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI

from virtfleet.api.app import create_app
from virtfleet.api.auth import local_admin
from virtfleet.api.members import HttpMemberPeers
from virtfleet.app.clustering import (
    ClusterFormer,
    EtcdAdmin,
    cluster_dir,
    cluster_member,
    clustered_settings,
)
from virtfleet.app.datadir import private_umask, secure_data_dir
from virtfleet.app.firstrun import ensure_admin
from virtfleet.app.serving import (
    Endpoint,
    Listener,
    bind_tcp,
    bind_unix,
    parse_listen,
    prepare,
    run_listeners,
)
from virtfleet.app.settings import Settings
from virtfleet.app.startup import Startup, StoreGate
from virtfleet.app.stores import EtcdFiles, check_store, open_store
from virtfleet.app.tls import Certificate, server_certificate
from virtfleet.drivers.base import Driver
from virtfleet.drivers.fake.driver import FakeDriver
from virtfleet.drivers.oci.factory import build_oci_driver
from virtfleet.drivers.qemu import aio as qemu_aio
from virtfleet.drivers.qemu import firmware
from virtfleet.drivers.qemu.config import QemuOptions
from virtfleet.drivers.qemu.driver import QemuDriver
from virtfleet.drivers.qemu.uids import UidPool, parse_pool
from virtfleet.drivers.routing import RoutingDriver
from virtfleet.errors import VirtfleetError
from virtfleet.host.agent import Agent, AgentConfig
from virtfleet.host.backups import BackupManager
from virtfleet.host.clusterca import ClusterFiles
from virtfleet.host.collector import MetricsCollector
from virtfleet.host.containers import ContainerHost, container_checks, data_dir_checks
from virtfleet.host.disks import DiskManager
from virtfleet.host.etcdmember import EtcdMember
from virtfleet.host.facts import host_check, probe_host
from virtfleet.host.guest import GuestAgents
from virtfleet.host.member import HostPresence
from virtfleet.host.ops import LocalHostOps
from virtfleet.host.owned import OwnerCheckedOps
from virtfleet.host.quiesce import AgentQuiescer
from virtfleet.host.snapshots import SnapshotManager
from virtfleet.host.usage import sample_usage
from virtfleet.hostops import HostOps, NoContainers
from virtfleet.model.capacity import OvercommitRatios
from virtfleet.model.cluster import ClusterIdentity
from virtfleet.model.host import Check, HostFacts
from virtfleet.network.base import NetworkHost
from virtfleet.network.fake import FakeNetworkManager
from virtfleet.network.manager import NetworkManager
from virtfleet.service import Services
from virtfleet.service.alerts import AlertService
from virtfleet.service.audit import AuditService
from virtfleet.service.auth import AuthService
from virtfleet.service.backups import BackupService
from virtfleet.service.boot import BootService
from virtfleet.service.capacity import CapacityService
from virtfleet.service.cluster import ClusterService, Former
from virtfleet.service.containers import ContainerService
from virtfleet.service.disks import DiskService
from virtfleet.service.events import EventService
from virtfleet.service.forwarding import ForwardingService
from virtfleet.service.guest import GuestService
from virtfleet.service.host import HostCheck, HostService
from virtfleet.service.idempotency import IdempotencyService
from virtfleet.service.imagefetch import ImageFetcher
from virtfleet.service.images import ImageService
from virtfleet.service.instances import InstanceService
from virtfleet.service.jointokens import JoinTokens
from virtfleet.service.membercred import SharedSecretCredentials
from virtfleet.service.metrics import MetricsService
from virtfleet.service.networks import NetworkService
from virtfleet.service.notify import WebhookNotifier
from virtfleet.service.operations import OperationRunner
from virtfleet.service.ova import OvaService
from virtfleet.service.placement import Placement
from virtfleet.service.pools import PoolService
from virtfleet.service.resources import ResourceService
from virtfleet.service.schedules import ScheduleService
from virtfleet.service.shutdown import ShutdownService
from virtfleet.service.snapshots import SnapshotService
from virtfleet.service.templates import TemplateService
from virtfleet.service.tokens import TokenService
from virtfleet.state.audit import AuditLog
from virtfleet.state.etcd import EtcdStore
from virtfleet.state.history import History, HistoryBackend, MemoryHistoryBackend
from virtfleet.state.history_sqlite import SQLiteHistoryBackend
from virtfleet.state.identity import load_or_create
from virtfleet.state.leader import Leadership
from virtfleet.state.locks import Session
from virtfleet.state.repos import EventLog, InstanceRepo
from virtfleet.state.sqlite import SQLiteStore
from virtfleet.state.store import StateStore
from virtfleet.storage.backup import Repository
from virtfleet.storage.hostpaths import HostPaths
from virtfleet.storage.images import ImageStore
from virtfleet.storage.pools import PoolContext, PoolLookup
from virtfleet.storage.qemuimg import Jail
from virtfleet.util.cgroups import CgroupManager
from virtfleet.util.limits import raise_open_files_limit

log = logging.getLogger(__name__)


@dataclass
class Platform:
    settings: Settings
    store: StateStore
    driver: Driver
    agent: Agent
    services: Services
    app: FastAPI
    host: HostMember
    presence: HostPresence | None = None  # this host's record and liveness lease in the store
    freeze_heap: bool = False  # the daemon process; not in-process test platforms
    session: Session | None = None  # this daemon's lease for its claims in the store
    leader: Leadership | None = None  # elects the daemon running cluster-wide singletons
    startup: Startup | None = None  # the daemon's start, waiting for the store to answer
    member: EtcdMember | None = None  # this host's supervised etcd member (a cluster member)
    former: ClusterFormer | None = None  # cluster init
    restart: bool = False  # the daemon re-executes itself once stopped (after cluster init)

    async def start(self) -> None:
        await ensure_admin(self.services.auth, self.settings.data_dir)
        # Before recovering operations: an import/export killed mid-way left work files.
        paths = self.services.images.paths
        await asyncio.to_thread(paths.clean_work, self.settings.images_dir)
        await self.services.images.claim_local()  # images made before hosts recorded copies
        await self.services.operations.recover()
        if self.services.pools is not None:
            await self.services.pools.ensure_default()  # an upgraded data dir's disks: ``local``
            await self.services.pools.verify_here()  # markers other hosts wrote read back here
        if self.services.capacity is not None:
            await self.services.capacity.start()  # its tally follows the store from here
        boot = self.services.boot
        host_booted = await boot.detect() if boot is not None else False
        if self.presence is not None:
            await self.presence.start()
        await self.agent.start(host_booted=host_booted)
        # Running VMs are re-adopted: a backup or restore killed mid-way left work behind.
        specs = [rec.spec for rec in await self.agent.repo.list()]
        await self.host.ops.backup_recover(specs)
        if self.leader is not None:
            self.leader.start()  # schedules and event alerts run while this daemon leads
        if self.services.alerts is not None:
            await self.services.alerts.start()
        await self.host.collector.start()
        if self.services.schedules is not None:
            self.services.schedules.start()
        if boot is not None:
            boot.begin()  # after a new host boot: autostart instances, in order
        if self.freeze_heap:
            # What start-up built lives as long as the daemon: out of the cyclic GC's
            # sight, a collection during a request no longer walks it (one took 140 ms).
            gc.collect()
            gc.freeze()

    async def stop(self) -> None:
        if self.services.boot is not None:
            await self.services.boot.close()
        if self.services.schedules is not None:
            await self.services.schedules.stop()
        await self.services.operations.close()
        await self.host.collector.stop()
        if self.services.alerts is not None:
            await self.services.alerts.stop()
        await self.agent.stop()
        if self.presence is not None:
            await self.presence.stop()
        if self.services.capacity is not None:
            await self.services.capacity.close()
        if self.leader is not None:
            await self.leader.stop()  # resign: another daemon takes over at once
        if self.session is not None:
            await self.session.close()
        await self.store.close()


def _agent_answers(guests: GuestService) -> Callable[[str], Awaitable[bool]]:
    async def ready(name: str) -> bool:
        return (await guests.info(name)).agent

    return ready


def host_facts(settings: Settings) -> HostFacts:
    """Probe the host, reusing this boot's result: the KVM verdict costs a timeout."""
    cache = settings.data_dir / "host-facts.json"
    boot_id = boot_id_of(settings)
    try:
        cached = HostFacts.model_validate_json(cache.read_text())
        if cached.boot_id == boot_id and cached.qemu_path and cached.machine_types:
            live = {"firmware": firmware.available(), "swtpm_path": shutil.which("swtpm")}
            return cached.model_copy(update=live)  # cheap: installed since the probe?
    except (OSError, ValueError):
        pass
    facts = probe_host(settings.qemu_binary, settings.kvm_probe_timeout_s)
    facts.boot_id = boot_id
    with contextlib.suppress(OSError):
        cache.write_text(facts.model_dump_json(indent=1))
    return facts


def boot_id_of(settings: Settings) -> str:
    """This host's kernel boot id (``settings.boot_id`` overrides it, for tests)."""
    if settings.boot_id:
        return settings.boot_id
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _driver(settings: Settings, facts: HostFacts, images: ImageStore) -> Driver:
    if settings.driver == "fake":
        return FakeDriver()
    uids = _uid_pool(settings.qemu_uids)
    want_runas = settings.runas if uids is None else None
    runas = want_runas if want_runas and _user_exists(want_runas) else None
    opts = QemuOptions(
        binary=settings.qemu_binary,
        runas=runas,
        uids=uids,
        tb_size_mib=settings.tcg_tb_size_mib,
        aio=qemu_aio.choose(settings.qemu_binary),
    )
    vm = QemuDriver(settings.run_dir, facts.qemu_version or "unknown", opts)
    containers = build_oci_driver(
        settings.data_dir,
        settings.disks_dir,
        images.rootfs_for,
        f"virtfleet-{settings.instance_id}",
        settings.runtime_path / "rootfs",
        images.oci_for,
    )
    return RoutingDriver(vm, containers)  # one driver for the agent, chosen by spec.kind


def _with_container_checks(driver: Driver) -> HostCheck:
    """``host check`` rows for VMs plus the container runtime row (which one, and why)."""

    def check(facts: HostFacts) -> list[Check]:
        return [*host_check(facts), *container_checks(driver.info())]

    return check


def _networks(settings: Settings) -> NetworkHost:
    """Real bridges, dnsmasq and nftables with QEMU; in memory with the fake driver, so
    functional tests never change the links or rules of the machine they run on."""
    if settings.driver == "fake":
        return FakeNetworkManager()
    return NetworkManager(settings.data_dir / "networks", owner=settings.instance_id)


def _uid_pool(setting: str) -> UidPool | None:
    """The per-VM uid pool (only root can drop QEMU to other uids)."""
    return parse_pool(setting) if os.geteuid() == 0 else None


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        log.warning("user %s missing: QEMU will keep running as root", name)
        return False
    return True


def _host_paths(settings: Settings) -> HostPaths:
    """Import/export confinement and the jail untrusted images are read in: its own user
    (``virtfleet-img``), else QEMU's, else (not root) the daemon's."""
    import pwd

    user = None
    for name in (settings.image_user, settings.runas):
        with contextlib.suppress(KeyError):
            if name and os.geteuid() == 0 and pwd.getpwnam(name):
                user = name
                break
    if user is None and os.geteuid() == 0:
        log.warning("no user %s: qemu-img reads untrusted images as root", settings.image_user)
    paths = HostPaths(
        settings.import_path, settings.export_path, settings.work_dir, Jail(user=user)
    )
    paths.prepare()
    return paths


@dataclass
class HostMember:
    """This host's side: the only parts that touch its processes and files. The control
    plane reaches them through ``ops`` (the ``HostOps`` door) alone, except ``check``
    (host check rows) and the ``collector`` (metrics sampling)."""

    driver: Driver
    networks: NetworkHost
    agent: Agent
    snapshots: SnapshotManager
    backups: BackupManager
    ops: LocalHostOps
    check: HostCheck
    collector: MetricsCollector


@dataclass(frozen=True)
class Membership:
    """What the control plane shares with the other daemons on the store: this host's
    id, its session (claims) and the leadership of cluster-wide singletons."""

    host_id: str
    session: Session
    leader: Leadership
    ratios: OvercommitRatios
    # Where a joining host reaches this cluster (None: no cluster CA, or no TCP API).
    identity: Callable[[], ClusterIdentity | None] = lambda: None


def build_host(
    settings: Settings,
    store: StateStore,
    events: EventLog,
    facts: HostFacts,
    images: ImageStore,
    host_id: str,
) -> HostMember:
    """This host's agent and everything it owns, with the ``HostOps`` door over them."""
    cgroups = CgroupManager(f"virtfleet-{settings.instance_id}") if os.geteuid() == 0 else None
    driver = _driver(settings, facts, images)
    networks = _networks(settings)
    pools = PoolLookup(store, PoolContext(settings.disks_dir, (settings.data_dir,)))
    disks = DiskManager(settings.disks_dir, images.file_for, verified=images.verified, pools=pools)
    agent = Agent(
        store,
        driver,
        facts,
        events,
        AgentConfig(
            disks=disks,
            cgroups=cgroups if cgroups is not None and cgroups.available else None,
            networks=networks,
            host_id=host_id,
        ),
    )
    guests = GuestAgents(settings.run_dir)
    quiescer = AgentQuiescer(guests)  # application-consistent when a guest agent answers
    snapshots = SnapshotManager(agent, quiescer)
    repo = Repository(settings.backup_repo_dir)
    backups = BackupManager(agent, snapshots, repo, quiescer)
    containers = ContainerHost(driver.containers()) if isinstance(driver, RoutingDriver) else None
    # Refuses door calls on what another host owns (the API forwards requests to owners).
    ops = OwnerCheckedOps(agent, snapshots, backups, guests, networks, containers or NoContainers())
    collector = MetricsCollector(
        agent.repo, lambda: agent.driver, facts, agent.cgroups, settings.metrics_interval_s
    )
    return HostMember(
        driver, networks, agent, snapshots, backups, ops,
        _with_container_checks(driver), collector,
    )  # fmt: skip


def build_control_plane(
    settings: Settings,
    store: StateStore,
    events: EventLog,
    facts: HostFacts,
    images: ImageStore,
    host: HostMember,
    cluster: Membership,
    former: Former | None = None,
) -> Services:
    """The services over the store and the host's door; they never see ``host/`` parts."""
    door: HostOps = host.ops  # mypy: LocalHostOps is the whole HostOps protocol
    me, session = cluster.host_id, cluster.session
    runner = OperationRunner(store, events, host_id=me, session=session)
    forwarding = ForwardingService(store, me, SharedSecretCredentials(store, me))
    fetcher = ImageFetcher(images, forwarding, HttpMemberPeers(forwarding), runner)
    tokens = TokenService(store)
    capacity = CapacityService(
        store, facts, cluster.ratios, sample_usage, session=session, host_id=me
    )
    networks = NetworkService(
        store, door, events, tally=capacity.tally, session=session, host_id=me
    )
    pools = PoolService(store, me, PoolContext(settings.disks_dir, (settings.data_dir,)))
    instances = InstanceService(
        store, images, facts, runner, events, owner=me, networks=networks, capacity=capacity,
        disks=DiskService(store, door, events), placement=Placement(store, me, capacity.tally),
        fetcher=fetcher,
        pools=pools,
    )  # fmt: skip
    snapshots = SnapshotService(store, runner, events, door)
    backups = BackupService(store, runner, events, door, instances)
    guests = GuestService(store, door)
    host_paths = _host_paths(settings)
    metrics, alerts = _monitoring(settings, store, events, facts, host.collector, cluster.leader)
    return Services(
        instances=instances,
        images=ImageService(images, store, runner, events, host_paths, fetcher),
        operations=runner,
        host=HostService(facts, host.check, store),
        events=EventService(events),
        auth=AuthService(store, tokens),
        tokens=tokens,
        audit=AuditService(AuditLog(store)),
        console=door,
        idempotency=IdempotencyService(store),
        metrics=metrics,
        alerts=alerts,
        containers=ContainerService(store, door.containers, facts, events, capacity),
        networks=networks,
        resources=ResourceService(store, instances, capacity, door.live_stats, images),
        capacity=capacity,
        templates=TemplateService(images, store, instances, runner, events, door),
        guests=guests,
        ova=OvaService(images, store, instances, runner, door, host_paths),
        snapshots=snapshots,
        backups=backups,
        schedules=ScheduleService(
            store, backups, leader=cluster.leader, tick_s=settings.schedule_tick_s
        ),
        disks=instances.disks,
        boot=BootService(
            store,
            instances,
            runner,
            boot_id_of(settings),
            snapshots=snapshots,
            guest_ready=_agent_answers(guests),
        ),
        shutdown=ShutdownService(store, instances, runner, snapshots),
        cluster=ClusterService(
            store,
            me,
            check_store(settings.store).kind,
            members=store.members if isinstance(store, EtcdStore) else None,
            former=former,
            remove_member=store.remove_member if isinstance(store, EtcdStore) else None,
            tokens=JoinTokens(store, cluster.identity),
            admin=EtcdAdmin(settings.data_dir, store) if isinstance(store, EtcdStore) else None,
            tally=capacity.tally,
        ),
        forwarding=forwarding,
        pools=pools,
    )


def build_platform(settings: Settings, facts: HostFacts | None = None) -> Platform:
    """Wire every component for ``settings`` (nothing is started yet): this host's
    member, then the control plane over the store and the member's door."""
    settings = clustered_settings(settings)  # after cluster init: the cluster's etcd
    files = EtcdFiles(settings.etcd_ca, settings.etcd_cert, settings.etcd_key)
    check_store(settings.store, files)  # a bad --store: an error before anything is made
    secure_data_dir(settings.data_dir)
    for path in (settings.images_dir, settings.disks_dir, settings.run_dir):
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    facts = facts or host_facts(settings)
    identity = load_or_create(settings.data_dir, settings.host_name)  # before a migration
    store = open_store(settings.store, settings.store_path, files)
    events = EventLog(store)
    images = ImageStore(settings.images_dir, store, settings.cache_dir, host_id=identity.id)
    host = build_host(settings, store, events, facts, images, identity.id)
    ratios = OvercommitRatios(cpu=settings.cpu_overcommit, memory=settings.memory_overcommit)
    cluster = Membership(
        identity.id,
        Session(store, name=identity.id),  # this daemon's claims (operations, admission)
        Leadership(store, "singletons", identity.id, settings.leader_ttl_s),
        ratios,
        lambda: join_identity(settings, presence),
    )
    former = ClusterFormer(
        settings, store, identity.name, identity.id,
        gate=lambda why: setattr(startup, "reason", why), api_url=lambda: presence.api_url,
    )  # fmt: skip
    services = build_control_plane(settings, store, events, facts, images, host, cluster, former)
    member = cluster_member(settings)
    former.member = member  # the member cluster leave takes out

    # The platform below (bound when the app starts) starts once the store answers.
    startup = Startup(
        store.revision, lambda: platform.start(), check_store(settings.store).describe()
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await _start_member(member)
        await startup.begin()
        try:
            yield
        finally:
            if await startup.close():
                await platform.stop()
            else:
                await store.close()  # nothing else started
            if former.member is not None:
                await former.member.detach()  # it outlives the daemon, like QEMU

    app = create_app(services, lifespan=lifespan)
    app.add_middleware(StoreGate, startup=startup)  # outermost: 503 until started
    oci = lambda: host.driver.info().details.get("runtime")  # noqa: E731
    presence = HostPresence(
        store, identity, facts, ratios, settings.data_dir, oci, ttl_s=settings.host_lease_s
    )
    platform = Platform(
        settings, store, host.driver, host.agent, services, app, host,
        presence=presence, session=cluster.session, leader=cluster.leader, startup=startup,
        member=member, former=former,
    )  # fmt: skip
    return platform


def join_identity(settings: Settings, presence: HostPresence) -> ClusterIdentity | None:
    """This member's API URL and the fingerprints a joining host pins, once this data
    dir holds the cluster CA and the API listens on TCP."""
    files = ClusterFiles(cluster_dir(settings.data_dir))
    if presence.api_url is None or not files.ca_cert.exists():
        return None
    return ClusterIdentity(
        api_url=presence.api_url,
        ca_fingerprint=files.fingerprint(),
        api_fingerprint=presence.fingerprint,
    )


async def _start_member(member: EtcdMember | None) -> None:
    """Start or re-adopt this host's etcd member; if it fails the daemon still waits for
    the store (503 with the reason) rather than dying."""
    if member is None:
        return
    try:
        await member.start()
    except VirtfleetError as err:
        log.error("etcd member %s did not start: %s; retrying", member.config.name, err.message)
        member.retry_in_background()


def _monitoring(
    settings: Settings,
    store: StateStore,
    events: EventLog,
    facts: HostFacts,
    collector: MetricsCollector,
    leader: Leadership | None = None,
) -> tuple[MetricsService, AlertService]:
    """The metrics history (in the store's own file with SQLite) and the alerts, as the
    host's collector's sinks."""
    backend: HistoryBackend = (
        SQLiteHistoryBackend(store.side_connection())
        if isinstance(store, SQLiteStore)
        else MemoryHistoryBackend()
    )
    metrics = MetricsService(
        collector, History(backend), InstanceRepo(store), facts,
        scrape_from_loopback=settings.metrics_scrape_from_loopback,
    )  # fmt: skip
    alerts = AlertService(store, events, WebhookNotifier(settings.alert_webhooks), leader=leader)
    collector.sinks = [metrics.record, alerts.evaluate]  # a cycle: the sinks read the collector
    return metrics, alerts


def serve(settings: Settings) -> None:
    """Run the daemon in the foreground until SIGINT/SIGTERM; VMs keep running after it.

    Serves one API on ``<data-dir>/api.sock`` (local root) and on the TCP endpoints of
    ``settings.listen`` (see ``app.serving`` for the TLS rule), in one event loop with
    the platform started and stopped once. A bad ``--listen``, a busy port or an
    unreadable certificate raises a ``VirtfleetError`` before anything starts.
    """
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    old = private_umask()  # the store, its WAL, logs and run files: 0600 from birth
    try:
        _serve(settings)
    finally:
        os.umask(old)  # a refused start leaves the caller's process as it was


def _serve(settings: Settings) -> None:
    endpoints = parse_listen(settings.listen, settings.tls)
    raise_open_files_limit()
    platform = build_platform(settings)
    platform.freeze_heap = True
    for row in data_dir_checks(platform.driver.info()):  # containers could not start
        log.warning("%s: %s", row.name, row.detail)
    cert = _certificate(settings, endpoints)
    listeners = _listeners(platform, endpoints, cert)
    if platform.presence is not None and len(listeners) > 1:  # the first TCP one: its address
        platform.presence.api_url = listeners[1].name
        tls = cert is not None and listeners[1].tls is not None
        platform.presence.fingerprint = cert.fingerprint if tls and cert else None
    if platform.former is not None:
        platform.former.restart = lambda: _restart(platform)
    try:
        servers = prepare(listeners)
        _announce(listeners, cert)
        asyncio.run(run_listeners(platform.app, listeners, servers))
    finally:
        for listener in listeners:
            listener.sock.close()
    if platform.restart:
        log.info("restarting on the cluster store: %s", " ".join(sys.orig_argv))
        os.execv(sys.executable, sys.orig_argv)  # same pid; guests and etcd keep running


def _restart(platform: Platform) -> None:
    """Stop the daemon as SIGTERM does, then re-execute it (``_serve``)."""
    platform.restart = True
    os.kill(os.getpid(), signal.SIGTERM)


def _certificate(settings: Settings, endpoints: list[Endpoint]) -> Certificate | None:
    if not any(ep.tls for ep in endpoints):
        return None
    hosts = [ep.host for ep in endpoints]
    return server_certificate(settings.tls_dir, settings.tls_cert, settings.tls_key, hosts)


def _listeners(
    platform: Platform, endpoints: list[Endpoint], cert: Certificate | None
) -> list[Listener]:
    """Bind the Unix socket and every TCP endpoint; on any failure close what was bound."""
    path = platform.settings.api_socket
    unix_app = local_admin(platform.app)  # the Unix socket (mode 0600) is local root; TCP never
    listeners = [Listener(f"unix:{path}", bind_unix(path), unix_app, unix_path=path)]
    try:
        for ep in endpoints:
            tls = (cert.cert, cert.key) if ep.tls and cert is not None else None
            sock = bind_tcp(ep)
            bound = dataclasses.replace(ep, port=sock.getsockname()[1])  # port 0: the real one
            listeners.append(Listener(bound.url, sock, platform.app, tls))
    except BaseException:
        for listener in listeners:
            listener.sock.close()
        path.unlink(missing_ok=True)
        raise
    return listeners


def _announce(listeners: list[Listener], cert: Certificate | None) -> None:
    """Say where the API is (the daemon's stdout; ``make run`` keeps it in the log)."""
    for listener in listeners:
        note = " (local root, no password)" if listener.unix_path else ""
        print(f"virtfleet: API on {listener.name}{note}", flush=True)
    if cert is not None:
        made = " (generated now)" if cert.generated else ""
        print(f"virtfleet: TLS certificate {cert.cert}{made}", flush=True)
        print(f"virtfleet: TLS certificate SHA-256 fingerprint {cert.fingerprint}", flush=True)
