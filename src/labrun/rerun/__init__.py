"""Rerunning a stored run: fetch, drift report, overrides, the verdict, at the recorded commit."""
