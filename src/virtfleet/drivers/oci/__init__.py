"""OCI system containers: bundle builder, runtime runner (crun/runc), console, driver."""
