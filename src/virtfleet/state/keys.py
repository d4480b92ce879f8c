"""The store's key layout: every key and key prefix is built here and only here.

Keys of things that belong to a project carry a project segment (everything is in
``default`` until projects arrive, so data never has to move again); cluster-scoped
things stay global. Which is which follows Incus (docs/architecture.md, "Key layout"):

Per project, under ``/projects/{project}/``:
    instances/{name}/spec      InstanceSpec        written by the service
    instances/{name}/desired   DesiredState        written by the service
    instances/{name}/status    InstanceStatus      written by the owning host's agent
    instances/{name}/owner     Ownership           host id + epoch; changed only by a txn
    images/{name}              ImageRecord         images and templates (kind ``template``)
    image-files/{name}/{host}  ImageLocation       which hosts hold the image's file
    networks/{name}            NetworkSpec
    network-hosts/{name}/{host}  NetworkHostStatus  written by that host's agent
    backup-schedules/{name}    Schedule            (of the project's instances)

Cluster-wide:
    /hosts/{id}[/alive]         HostRecord          liveness on a lease
    /host/boot                  BootReport          this host's last boot report
    /operations/{id}            Operation           one list; the target names the thing
    /events/{revision:020d}-{writer}-{n}  Event     one ordered log, append-only, bounded
    /users/{username}           UserRecord          argon2 hash only
    /tokens/{id}                TokenRecord         SHA-256 of the secret
    /sessions/{id}              SessionRecord       on a lease of its TTL
    /audit/{time_ns:020d}-{rnd} AuditEntry          append-only, bounded
    /audit-anonymous/...        AuditEntry          requests without valid credentials
    /idempotency/{sha256}       IdempotencyRecord   on a lease
    /macs/{mac}                 instance name       unique wherever NICs may share a segment
    /claims/{scope}/{name}/{id} owner               first-come claims on a session lease
    /claim-sessions/{name}      -                   the sessions those claims hang on
    /alerts/rules/{name}, /alerts/silences/{rule:target}, /alerts/cursor
    /backup-verify/last         LastVerify          of the one backup repository
    /cluster/member-secret      bytes               HMAC key of forwarded requests
    /cluster/join-tokens/{sha}  JoinToken           one-time, on a lease of its lifetime
    /storage-pools/{name}       PoolRecord          global, as in Incus; ``local`` made at start
    /storage-pool-checks/{pool}/{host}  HostCheck   each host's marker and lock probe of it

Only the layouts of older schema versions, which ``state/migrations.py`` reads to move
them here, are spelled elsewhere.
"""

from __future__ import annotations

DEFAULT_PROJECT = "default"
PROJECTS = "/projects/"


def project_root(project: str = DEFAULT_PROJECT) -> str:
    """Where everything of ``project`` lives."""
    return f"{PROJECTS}{project}/"


# per project (the default one until projects arrive)
INSTANCES = project_root() + "instances/"
IMAGES = project_root() + "images/"
IMAGE_FILES = project_root() + "image-files/"  # per host: who holds an image's file
NETWORKS = project_root() + "networks/"
NETWORK_HOSTS = project_root() + "network-hosts/"  # per-host realisation of each network
SCHEDULES = project_root() + "backup-schedules/"
PROJECT_SCOPED = ("instances/", "images/", "networks/", "backup-schedules/")  # as of schema 4

# cluster-wide
HOSTS = "/hosts/"
ALIVE = "alive"
BOOT = "/host/boot"
OPERATIONS = "/operations/"
EVENTS = "/events/"
USERS = "/users/"
TOKENS = "/tokens/"
SESSIONS = "/sessions/"
AUDIT = "/audit/"
ANONYMOUS_AUDIT = "/audit-anonymous/"  # requests without valid credentials (bounded apart)
IDEMPOTENCY = "/idempotency/"
MACS = "/macs/"
CLAIMS = "/claims/"
CLAIM_SESSIONS = "/claim-sessions/"
ALERT_RULES = "/alerts/rules/"
ALERT_SILENCES = "/alerts/silences/"
ALERT_CURSOR = "/alerts/cursor"  # the revision of the last event a leader acted on
BACKUP_VERIFY = "/backup-verify/"  # the last verify's result, under .../last
MEMBER_SECRET = "/cluster/member-secret"  # signs requests members forward to owners
JOIN_TOKENS = "/cluster/join-tokens/"  # SHA-256 of one-time join tokens, on leases
STORAGE_POOLS = "/storage-pools/"
POOL_CHECKS = "/storage-pool-checks/"  # per pool, per host: what its probe found


def instance_prefix(name: str) -> str:
    """Every key of instance ``name`` starts with this."""
    return f"{INSTANCES}{name}/"


def instance_key(name: str, part: str) -> str:
    """``part`` (spec, desired, status, owner) of instance ``name``."""
    return f"{INSTANCES}{name}/{part}"


def instance_name_of(key: str) -> str | None:
    """Name of the instance a key belongs to, or None for keys of anything else."""
    if not key.startswith(INSTANCES):
        return None
    return key[len(INSTANCES) :].split("/", 1)[0] or None


def image_files_prefix(name: str) -> str:
    """Every host's location record of image ``name``'s file starts with this."""
    return f"{IMAGE_FILES}{name}/"


def image_file_key(name: str, host_id: str) -> str:
    """Host ``host_id``'s record that it holds image ``name``'s file."""
    return f"{IMAGE_FILES}{name}/{host_id}"


def network_hosts_prefix(name: str) -> str:
    """Every host's realisation status of network ``name``."""
    return f"{NETWORK_HOSTS}{name}/"


def network_host_key(name: str, host_id: str) -> str:
    return f"{NETWORK_HOSTS}{name}/{host_id}"


def host_key(host_id: str) -> str:
    return f"{HOSTS}{host_id}"


def alive_key(host_id: str) -> str:
    """The host's liveness key, on the lease its agent renews."""
    return f"{HOSTS}{host_id}/{ALIVE}"


def claim_scope(scope: str) -> str:
    return f"{CLAIMS}{scope}/"


def claim_session_key(name: str) -> str:
    return CLAIM_SESSIONS + name


def pool_key(name: str) -> str:
    return STORAGE_POOLS + name


def pool_checks_prefix(pool: str) -> str:
    return f"{POOL_CHECKS}{pool}/"


def pool_check_key(pool: str, host_id: str) -> str:
    return f"{POOL_CHECKS}{pool}/{host_id}"
