"""Imported by the forkserver only (see fabric.runner.warmup): imports what nodes need.  [shell]

Each module of `PRELOAD` is imported in turn; one that fails is skipped, so the forkserver
always comes up and the node that needs the module reports the failure itself.
"""

from __future__ import annotations

import contextlib
import importlib

from fabric.runner.warmup import PRELOAD

for _name in PRELOAD:
    with contextlib.suppress(Exception):  # the node that needs the module reports the error
        importlib.import_module(_name)
