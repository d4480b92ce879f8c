"""The one exception tree of virtfleet.

Every error the platform raises on purpose is a ``VirtfleetError`` with a
stable machine-readable ``code`` and the HTTP ``status`` the API answers with.
Third-party errors are translated into this tree once, at the boundary that
calls them (``raise ... from err``); nothing else here does I/O.

    VirtfleetError (internal, 500)
    ├── InvalidInputError (invalid_input, 400)
    │   ├── InvalidNameError (invalid_name, 400)
    │   ├── UnknownFieldError (unknown_field, 400)
    │   ├── InvalidContinueError (invalid_continue, 400)
    │   ├── InvalidStoreUrlError (invalid_store_url, 400)
    │   └── UnknownHostError (unknown_host, 400)
    ├── AuthError (unauthenticated, 401)
    │   └── MemberAuthError (member_auth_failed, 401)
    ├── ForbiddenError (forbidden, 403)
    │   ├── CsrfError (csrf_failed, 403)
    │   └── PathNotAllowedError (path_not_allowed, 403)
    ├── NotFoundError (not_found, 404)
    ├── ConflictError (conflict, 409)
    │   ├── AlreadyExistsError (already_exists, 409)
    │   ├── InvalidStateError (invalid_state, 409)
    │   ├── InUseError (in_use, 409)
    │   ├── KeptDisksError (kept_disks, 409)
    │   ├── IdempotencyInProgressError (idempotency_in_progress, 409)
    │   ├── OwnedElsewhereError (owned_elsewhere, 409)
    │   ├── NetworkNotOnHostError (network_not_on_host, 409)
    │   ├── AlreadyClusteredError (already_clustered, 409)
    │   ├── PoolNotSharedError (pool_not_shared, 409)
    │   └── RevisionConflictError (revision_conflict, 409)
    ├── PreconditionFailedError (precondition_failed, 412)
    ├── PayloadTooLargeError (payload_too_large, 413)
    ├── IdempotencyKeyReusedError (idempotency_key_reused, 422)
    ├── RateLimitedError (rate_limited, 429)
    ├── CapacityError (insufficient_capacity, 409)
    │   └── PoolOvercommitError (pool_overcommitted, 409)
    ├── TimeoutError_ (timeout, 504)
    ├── CancelledError_ (cancelled, 499)
    ├── ImageError (image_error, 422)
    │   └── UnsafeImageError (unsafe_image, 422)
    ├── BackupDamagedError (backup_damaged, 422)
    ├── RepositoryFullError (repository_full, 507)
    ├── HostError (host_unsupported, 503)
    │   └── FirmwareMissingError (firmware_missing, 503)
    ├── StoreUnavailableError (store_unavailable, 503)
    ├── OwnerUnreachableError (owner_unreachable, 503)
    ├── ImageUnavailableError (image_unavailable, 503)
    ├── ImageTransferError (image_transfer_failed, 502)
    ├── SchemaTooNewError (schema_too_new, 503)
    └── DriverError (driver_error, 502)
        ├── GuestAgentError (guest_agent_error, 502)
        ├── QMPError (qmp_error, 502)
        │   └── QMPConnectionError (qmp_disconnected, 502)
        └── ProcessError (process_failed, 502)
"""

from __future__ import annotations

from typing import Any


class VirtfleetError(Exception):
    """Base class: a one-line ``message`` plus a stable ``code`` and HTTP ``status``."""

    code = "internal"
    status = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "status": self.status}


class InvalidInputError(VirtfleetError):
    code = "invalid_input"
    status = 400


class InvalidNameError(InvalidInputError):
    code = "invalid_name"


class UnknownFieldError(InvalidInputError):
    """A listing asked for a field its items do not have."""

    code = "unknown_field"


class InvalidContinueError(InvalidInputError):
    """A continue token this daemon did not make (edited, or from before a restart)."""

    code = "invalid_continue"


class InvalidStoreUrlError(InvalidInputError):
    """The daemon's ``--store`` setting is not sqlite, memory or etcd+http(s) URLs."""

    code = "invalid_store_url"


class UnknownHostError(InvalidInputError):
    """A request names a host that is not a member of the cluster."""

    code = "unknown_host"


class AuthError(VirtfleetError):
    code = "unauthenticated"
    status = 401


class MemberAuthError(AuthError):
    """A request claims to be forwarded by a cluster member but its credential fails."""

    code = "member_auth_failed"


class ForbiddenError(VirtfleetError):
    code = "forbidden"
    status = 403


class CsrfError(ForbiddenError):
    """A cookie-authenticated change came without the matching ``X-CSRF-Token`` header."""

    code = "csrf_failed"


class PathNotAllowedError(ForbiddenError):
    """A host path outside the directories imports and exports are confined to."""

    code = "path_not_allowed"


class NotFoundError(VirtfleetError):
    code = "not_found"
    status = 404


class ConflictError(VirtfleetError):
    code = "conflict"
    status = 409


class AlreadyExistsError(ConflictError):
    code = "already_exists"


class InvalidStateError(ConflictError):
    """An action was asked of an object in a state that does not allow it."""

    code = "invalid_state"

    def __init__(self, state: str, required: str | list[str], what: str = "instance") -> None:
        req = required if isinstance(required, str) else " or ".join(required)
        super().__init__(f"{what} is {state}; this needs it {req}", state=state, required=req)
        self.state = state
        self.required = req


class InUseError(ConflictError):
    code = "in_use"


class KeptDisksError(ConflictError):
    """A new instance's name has disks kept from a deleted instance of that name."""

    code = "kept_disks"


class RevisionConflictError(ConflictError):
    """A compare-and-swap write found a different revision than expected."""

    code = "revision_conflict"


class OwnedElsewhereError(ConflictError):
    """The instance is owned by another host, and this request is not forwarded there yet."""

    code = "owned_elsewhere"


class NetworkNotOnHostError(ConflictError):
    """A NIC names a network the instance's host does not have (another host's nat or
    isolated network, or one whose realisation failed there)."""

    code = "network_not_on_host"


class AlreadyClusteredError(ConflictError):
    """This host is already a cluster member (``cluster init`` or ``join`` again)."""

    code = "already_clustered"


class PoolNotSharedError(ConflictError):
    """A ``shared-dir`` pool's directory is not one filesystem on its hosts (a marker not
    read back, or locks that do not exclude a second writer)."""

    code = "pool_not_shared"


class PreconditionFailedError(VirtfleetError):
    code = "precondition_failed"
    status = 412


class PayloadTooLargeError(VirtfleetError):
    code = "payload_too_large"
    status = 413


class IdempotencyInProgressError(ConflictError):
    """A request with this idempotency key is still being processed; retry later."""

    code = "idempotency_in_progress"


class IdempotencyKeyReusedError(VirtfleetError):
    """An idempotency key came back with a different request (method, path or body)."""

    code = "idempotency_key_reused"
    status = 422


class RateLimitedError(VirtfleetError):
    """Too many attempts (e.g. failed logins) in a short time; try again later."""

    code = "rate_limited"
    status = 429


class CapacityError(VirtfleetError):
    """The host cannot give what the request asks: the asker's problem, so 4xx, not 507
    (a 5xx says "the server failed" and invites blind retries)."""

    code = "insufficient_capacity"
    status = 409


class PoolOvercommitError(CapacityError):
    """A new or grown disk would take a pool's allocation past total x its overcommit."""

    code = "pool_overcommitted"


class TimeoutError_(VirtfleetError):
    code = "timeout"
    status = 504


class CancelledError_(VirtfleetError):
    code = "cancelled"
    status = 499


class ImageError(VirtfleetError):
    code = "image_error"
    status = 422


class UnsafeImageError(ImageError):
    """An untrusted image whose metadata names another file (backing, data file, extent)."""

    code = "unsafe_image"


class BackupDamagedError(VirtfleetError):
    """A backup's manifest or chunks are missing or corrupt; ``details["chunks"]`` lists them."""

    code = "backup_damaged"
    status = 422


class RepositoryFullError(VirtfleetError):
    """The backup repository's filesystem has no space left; nothing half-written remains."""

    code = "repository_full"
    status = 507


class HostError(VirtfleetError):
    code = "host_unsupported"
    status = 503


class FirmwareMissingError(HostError):
    """The VM's firmware (OVMF code or variable template) is not installed on this host."""

    code = "firmware_missing"


class StoreUnavailableError(VirtfleetError):
    """The state store cannot be reached or has no quorum (etcd): nothing was written."""

    code = "store_unavailable"
    status = 503


class OwnerUnreachableError(VirtfleetError):
    """The instance's owning host is offline or does not answer: nothing was changed."""

    code = "owner_unreachable"
    status = 503


class ImageUnavailableError(VirtfleetError):
    """No online member holds the image's file this host needs: nothing was changed."""

    code = "image_unavailable"
    status = 503


class ImageTransferError(VirtfleetError):
    """An image file fetched from another member came truncated, corrupt or not at all;
    nothing of it was kept."""

    code = "image_transfer_failed"
    status = 502


class SchemaTooNewError(VirtfleetError):
    """The state file was written by a newer virtfleet: refusing beats misreading it."""

    code = "schema_too_new"
    status = 503


class DriverError(VirtfleetError):
    code = "driver_error"
    status = 502


class QMPError(DriverError):
    """QEMU answered a command with an error; keeps the command and the reply."""

    code = "qmp_error"


class QMPConnectionError(QMPError):
    """The QMP socket could not be reached or closed under us."""

    code = "qmp_disconnected"


class ProcessError(DriverError):
    """A helper process (QEMU, qemu-img, ...) failed; keeps its stderr tail."""

    code = "process_failed"


class GuestAgentError(DriverError):
    """qemu-guest-agent did not answer (not installed, not started yet) or answered an error."""

    code = "guest_agent_error"
