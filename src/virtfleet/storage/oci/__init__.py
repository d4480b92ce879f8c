"""OCI and Docker images: reading layouts and archives, verified layers applied once by digest."""
