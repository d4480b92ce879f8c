"""Pure data of the platform: instances, hosts, events, operations. No I/O here."""
