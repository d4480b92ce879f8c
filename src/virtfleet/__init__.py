"""virtfleet: QEMU virtual machines and OCI system containers managed from one place."""

__version__ = "0.1.0"
