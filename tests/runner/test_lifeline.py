"""A process that asked to die with its parent does, even busy in a loop that never yields."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import psutil
import pytest

PARENT = textwrap.dedent(
    """
    import subprocess, sys
    child = subprocess.Popen([sys.executable, "-c", sys.argv[1]], stdout=sys.stdout)
    child.wait()
    """
)
CHILD = textwrap.dedent(
    """
    import sys
    from fabric.runner.lifeline import die_with_parent
    if {ask}:
        assert die_with_parent()
    print("ready", flush=True)
    while True:  # busy, never waiting on anything a watching thread could use
        pass
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signals are Linux's")
@pytest.mark.parametrize("ask", [True, False])
def test_a_child_dies_with_its_parent_only_when_it_asked(ask):
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, CHILD.format(ask=ask)], stdout=subprocess.PIPE, text=True
    )
    child = None
    try:
        assert parent.stdout.readline().strip() == "ready"
        (child,) = psutil.Process(parent.pid).children()
        parent.kill()
        parent.wait(timeout=10)
        gone, alive = psutil.wait_procs([child], timeout=10 if ask else 1)
        assert bool(gone) is ask
    finally:
        parent.kill()
        if child is not None and child.is_running():
            child.kill()  # re-parented to init, it is no longer ours to find
