"""Advisory-lock namespaces (pure part of fabric.state.locks)."""

from fabric.state.locks import LockNamespace


def test_advisory_lock_namespaces_are_distinct():
    """Regression: runs and pipeline loads both used 0x0FAC."""
    values = [n.value for n in LockNamespace]
    assert len(values) == len(set(values)) == 7
