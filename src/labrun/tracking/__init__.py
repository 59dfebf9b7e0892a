"""Writing a run: its lifecycle, signals, heartbeat, logger, records, provenance, secrets, plots."""
