"""``NetworkManager``: makes this host's links, dnsmasq instances and rules match the networks.

The one entry point to networking on a host. The service asks it to check and
create or remove one network (all or nothing: a failure undoes what the step
made); the agent asks it for taps before QEMU starts and to drop them after
QEMU ended, and to reconcile everything at its own start. Container runtimes
attach a network namespace with ``attach_netns``. Links are found by their
alias (``links.ALIAS_PREFIX``), so the host's own interfaces are never touched.
Several daemons may share a host: ``owner`` (the daemon's id) is in every alias,
tap name and nftables table name, and reconciliation removes only what carries
this owner (the old shared tables only when no other daemon's links are in them).
Must not read or write the store: callers pass the networks in.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import ipaddress
import logging
import shutil
from collections.abc import Iterable
from pathlib import Path

from virtfleet.errors import ConflictError, DriverError, InUseError, VirtfleetError
from virtfleet.model.network import Lease, NetworkMode, NetworkSpec, NetworkState
from virtfleet.network import dnsmasq, firewall, links
from virtfleet.network.base import TapRequest
from virtfleet.network.dnsmasq import DnsmasqFiles

log = logging.getLogger(__name__)


class NetworkManager:
    def __init__(self, root: Path, owner: str) -> None:
        self.root = root  # per-network dnsmasq files live in root/<network>/
        self.owner = owner  # tells this daemon's links and tables from another daemon's
        self.table = firewall.table_for(owner)
        self._lock = asyncio.Lock()
        self._networks: dict[str, NetworkSpec] = {}

    # -- aliases -------------------------------------------------------------------------

    def _bridge_alias(self, name: str) -> str:
        return f"{links.ALIAS_PREFIX}{self.owner}:bridge:{name}"

    def _tap_alias(self, instance: str, nic: int, network: str) -> str:
        return f"{links.ALIAS_PREFIX}{self.owner}:tap:{instance}:{nic}:{network}"

    def _ours(self, link: links.Link, what: str) -> bool:
        return link.alias.startswith(f"{links.ALIAS_PREFIX}{self.owner}:{what}:")

    def _port(self, link: links.Link) -> bool:
        """A tap of a VM or the host end of a container's veth (an instance's bridge port)."""
        return self._ours(link, "tap") or self._ours(link, "veth")

    def _port_of(self, link: links.Link, instance: str, nic: int) -> bool:
        return self._port(link) and link.alias.split(":")[3:5] == [instance, str(nic)]

    def _tap_name(self, instance: str, nic: int) -> str:
        return links.tap_name(instance, nic, self.owner)

    def files(self, name: str) -> DnsmasqFiles:
        return DnsmasqFiles(self.root / name)

    # -- checks --------------------------------------------------------------------------

    async def check(self, spec: NetworkSpec) -> None:
        """Raise ``ConflictError`` if ``spec`` clashes with this host (names, addresses)."""
        all_links = await asyncio.to_thread(links.list_links)
        by_name = {link.name: link for link in all_links}
        if spec.mode is NetworkMode.BRIDGED:
            parent = by_name.get(spec.parent or "")
            if parent is None or parent.kind != "bridge":
                raise ConflictError(f"parent {spec.parent!r} is not a bridge on this host")
            if spec.name in by_name:
                raise ConflictError(f"network name {spec.name!r} is a host interface")
            return
        found = by_name.get(spec.name)
        if found is not None and not self._ours(found, "bridge"):
            whose = (
                "another virtfleet daemon's"
                if found.alias.startswith(links.ALIAS_PREFIX)
                else "a host"
            )
            raise ConflictError(f"network name {spec.name!r} is already {whose} interface")
        mine = ipaddress.ip_network(spec.subnet or "")
        for cidr in await asyncio.to_thread(links.addresses):
            net = ipaddress.ip_interface(cidr).network
            if net.version == 4 and net.overlaps(mine) and not net.is_loopback:
                raise ConflictError(f"subnet {spec.subnet} overlaps {net} on this host")

    # -- networks ------------------------------------------------------------------------

    async def create(self, spec: NetworkSpec, others: Iterable[NetworkSpec]) -> None:
        """Create ``spec``'s bridge, dnsmasq and rules; on failure undo all of it."""
        async with self._lock:
            await self.check(spec)
            self._networks = {n.name: n for n in others if n.name != spec.name}
            try:
                await self._ensure(spec)
                self._networks[spec.name] = spec
                await self._apply_rules()
            except BaseException:
                self._networks.pop(spec.name, None)
                await self._teardown(spec)
                with contextlib.suppress(VirtfleetError):
                    await self._apply_rules()
                raise

    async def remove(self, spec: NetworkSpec, others: Iterable[NetworkSpec]) -> None:
        """Remove ``spec``'s rules, dnsmasq and bridge (idempotent); ``InUseError`` if in use."""
        async with self._lock:
            users = await self._users(spec.name)
            if users:
                raise InUseError(f"network {spec.name} is in use by {', '.join(users)}")
            self._networks = {n.name: n for n in others if n.name != spec.name}
            await self._apply_rules()
            await self._teardown(spec)

    async def _ensure(self, spec: NetworkSpec) -> None:
        if spec.mode is NetworkMode.BRIDGED:
            return  # the parent bridge is the host's; only rules are ours
        gateway = spec.gateway
        gw6 = f"{ipaddress.IPv6Network(spec.ipv6_subnet)[1]}/64" if spec.ipv6_subnet else None
        alias = self._bridge_alias(spec.name)
        await asyncio.to_thread(links.create_bridge, spec.name, alias, str(gateway), gw6)
        if spec.mode is NetworkMode.NAT:
            await asyncio.to_thread(links.enable_forwarding)
        await asyncio.to_thread(dnsmasq.start, spec, self.files(spec.name))

    async def _teardown(self, spec: NetworkSpec) -> None:
        await asyncio.to_thread(dnsmasq.stop, self.files(spec.name))
        shutil.rmtree(self.files(spec.name).root, ignore_errors=True)
        link = await asyncio.to_thread(links.find, spec.name)
        if link is not None and self._ours(link, "bridge"):
            await asyncio.to_thread(links.delete, spec.name)

    async def _apply_rules(self) -> None:
        if not self._networks and not await asyncio.to_thread(firewall.present, self.table):
            return  # nothing of ours to write or remove: leave the host's rules alone
        host_links = await asyncio.to_thread(links.list_links)
        ports: dict[str, builtins.list[str]] = {}
        for link in host_links:
            if self._port(link):
                ports.setdefault(link.alias.rsplit(":", 1)[-1], []).append(link.name)
        script = firewall.ruleset(self._ruled(host_links), ports, self.table)
        await asyncio.to_thread(firewall.apply, script)

    def _ruled(self, host_links: builtins.list[links.Link]) -> builtins.list[NetworkSpec]:
        """The networks to write rules for: not one whose name is now someone else's
        interface (our rules would drop that interface's traffic)."""
        theirs = {x.name for x in host_links if not self._ours(x, "bridge")}
        return [
            n
            for n in self._networks.values()
            if n.mode is NetworkMode.BRIDGED or n.name not in theirs
        ]

    async def _users(self, network: str) -> builtins.list[str]:
        users = set()
        for link in await asyncio.to_thread(links.list_links):
            if self._port(link) and link.alias.endswith(f":{network}"):
                users.add(link.alias.split(":")[3])
        return sorted(users)

    # -- state ---------------------------------------------------------------------------

    async def state(self, spec: NetworkSpec) -> NetworkState:
        link = await asyncio.to_thread(links.find, spec.bridge)
        files = self.files(spec.name)
        pid = await asyncio.to_thread(dnsmasq.running_pid, files)
        return NetworkState(
            bridge=spec.bridge,
            present=link is not None
            and (spec.mode is NetworkMode.BRIDGED or self._ours(link, "bridge")),
            dnsmasq_pid=pid,
            leases=await asyncio.to_thread(dnsmasq.leases, files),
            users=await self._users(spec.name),
        )

    def leases(self, network: str) -> builtins.list[Lease]:
        return dnsmasq.leases(self.files(network))

    # -- taps for VMs --------------------------------------------------------------------

    async def create_taps(self, requests: Iterable[TapRequest]) -> builtins.list[str]:
        """Create one tap per request on its network's bridge; all or none."""
        made: builtins.list[str] = []
        async with self._lock:
            try:
                for req in requests:
                    name = self._tap_name(req.instance, req.nic)
                    alias = self._tap_alias(req.instance, req.nic, req.network.name)
                    await asyncio.to_thread(links.create_tap, name, alias, req.network.bridge)
                    made.append(name)
                if any(r.network.vlan is not None for r in requests):
                    await self._apply_rules()
            except BaseException:
                for name in made:
                    await asyncio.to_thread(links.delete, name)
                raise
        return made

    async def remove_taps(self, instance: str) -> None:
        """Delete every tap and veth of ``instance`` (after it ended); idempotent."""
        async with self._lock:
            gone = False
            for link in await asyncio.to_thread(links.list_links):
                port = self._port(link)
                if port and link.alias.split(":")[3] == instance:
                    await asyncio.to_thread(links.delete, link.name)
                    gone = True
            if gone and any(n.vlan is not None for n in self._networks.values()):
                with contextlib.suppress(VirtfleetError):
                    await self._apply_rules()

    # -- containers ----------------------------------------------------------------------

    async def attach_netns(
        self,
        instance: str,
        nic: int,
        network: NetworkSpec,
        netns_pid: int,
        ifname: str = "eth0",
        mac: str | None = None,
    ) -> str:
        """Attach the network namespace of ``netns_pid`` (a container's init) to ``network``.

        Creates a veth pair: the host end (named like a tap) joins the network's bridge,
        the peer (with ``mac``) moves into the namespace as ``ifname`` (down; the container
        brings it up and runs DHCP). Returns the host end's name; ``detach_netns`` or
        ``remove_taps(instance)`` removes it (so does the namespace's end, later).
        """
        host_end = self._tap_name(instance, nic)
        alias = f"{links.ALIAS_PREFIX}{self.owner}:veth:{instance}:{nic}:{network.name}"
        async with self._lock:
            await self._delete_ports(instance, nic)  # a dying netns's old veth (ours only)
            await asyncio.to_thread(
                links.create_veth, host_end, ifname, alias, network.bridge, netns_pid, mac
            )
            if network.vlan is not None:
                await self._apply_rules()
        return host_end

    async def detach_netns(self, instance: str, nic: int) -> None:
        async with self._lock:
            await self._delete_ports(instance, nic)

    async def _delete_ports(self, instance: str, nic: int) -> None:
        """Delete this daemon's links for NIC ``nic`` of ``instance``, found by alias (also
        those named before tap names carried the owner)."""
        for link in await asyncio.to_thread(links.list_links):
            if self._port_of(link, instance, nic):
                await asyncio.to_thread(links.delete, link.name)

    # -- reconciliation ------------------------------------------------------------------

    async def reconcile(self, networks: Iterable[NetworkSpec], running: set[str]) -> None:
        """Make the host match ``networks`` without interrupting guest traffic.

        Existing bridges, addresses and a dnsmasq with an unchanged config are kept;
        missing ones are made; the rules are swapped in one transaction; bridges,
        dnsmasq instances and taps that no network or ``running`` instance owns go.
        A network that cannot be made is logged and skipped, not fatal.
        """
        async with self._lock:
            self._networks = {n.name: n for n in networks}
            for spec in list(self._networks.values()):
                try:
                    await self._ensure(spec)
                except VirtfleetError as err:
                    log.error("network %s could not be restored: %s", spec.name, err.message)
            await self._reattach_taps()
            await self._remove_orphans(running)
            await self._apply_rules()
            await self._retire_legacy_tables()

    async def adopt(self, networks: Iterable[NetworkSpec]) -> None:
        """Take ``networks`` as this host's set and rewrite the rules for them (a create
        through another path may have written them for an older set); links stay."""
        async with self._lock:
            self._networks = {n.name: n for n in networks}
            await self._apply_rules()

    async def _reattach_taps(self) -> None:
        for link in await asyncio.to_thread(links.list_links):
            if not self._port(link):
                continue
            spec = self._networks.get(link.alias.rsplit(":", 1)[-1])
            if spec is not None:
                with contextlib.suppress(DriverError):
                    await asyncio.to_thread(links.attach, link.name, spec.bridge)

    async def _remove_orphans(self, running: set[str]) -> None:
        for link in await asyncio.to_thread(links.list_links):
            parts = link.alias.split(":")
            if self._ours(link, "bridge") and parts[3] not in self._networks:
                log.warning("removing orphan bridge %s", link.name)
                await asyncio.to_thread(links.delete, link.name)
            elif self._port(link) and parts[3] not in running:
                log.warning("removing orphan %s %s of %s", parts[2], link.name, parts[3])
                await asyncio.to_thread(links.delete, link.name)
        if self.root.exists():
            for sub in self.root.iterdir():
                if sub.is_dir() and sub.name not in self._networks:
                    await asyncio.to_thread(dnsmasq.stop, self.files(sub.name))
                    shutil.rmtree(sub, ignore_errors=True)

    async def _retire_legacy_tables(self) -> None:
        """Delete the shared tables of older versions unless another daemon's links are in
        them (then they hold that daemon's rules: it retires them when it is upgraded)."""
        table = firewall.LEGACY_TABLE
        try:
            names = await asyncio.to_thread(firewall.legacy_ifnames)
            if names is None:
                return
            others = foreign_owners(names, await asyncio.to_thread(links.list_links), self.owner)
            if others:
                who = ", ".join(sorted(others))
                log.warning("old nftables tables %r hold rules of daemon(s) %s: kept", table, who)
                return
            await asyncio.to_thread(firewall.apply, firewall.removal(table))
            log.info("removed the old shared nftables tables %r", table)
        except VirtfleetError as err:
            log.warning("old nftables tables %r left in place: %s", table, err.message)

    # -- supervision ---------------------------------------------------------------------

    async def supervise(self, interval_s: float = 5.0) -> None:
        """Restart a dnsmasq that died, until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            async with self._lock:
                for spec in list(self._networks.values()):
                    await self._revive(spec)

    async def _revive(self, spec: NetworkSpec) -> None:
        if spec.mode is NetworkMode.BRIDGED:
            return
        bridge = await asyncio.to_thread(links.find, spec.name)
        if bridge is None or not self._ours(bridge, "bridge"):
            return  # never serve DHCP on a bridge that is not (or no longer) ours
        files = self.files(spec.name)
        if await asyncio.to_thread(dnsmasq.running_pid, files) is None:
            log.warning("dnsmasq of network %s is gone; restarting it", spec.name)
            with contextlib.suppress(VirtfleetError):
                await asyncio.to_thread(dnsmasq.start, spec, files)


def foreign_owners(names: Iterable[str], host_links: Iterable[links.Link], me: str) -> set[str]:
    """The other daemons whose links are among ``names`` (by their aliases)."""
    wanted = set(names)
    owners = set()
    for link in host_links:
        if link.name in wanted and link.alias.startswith(links.ALIAS_PREFIX):
            owner = link.alias.split(":")[1]
            if owner != me:
                owners.add(owner)
    return owners
