"""Resuming a killed run exactly: resumable state, resume checkpoints, stale runs."""
