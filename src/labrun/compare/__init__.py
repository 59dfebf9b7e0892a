"""Comparing runs: selection, pooled statistics, pair diffs, plots, rendering."""
