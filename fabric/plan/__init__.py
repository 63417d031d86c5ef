"""Diff and plan: pure functions from desired and observed state to an ordered list of changes."""
