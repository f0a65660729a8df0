"""The local process pool's start-up, kept apart so that it imports nothing heavy.

Workers come from a fork server that has imported desim once (about a second): each worker is
a fork of it and starts warm. ``desim sweep`` starts the server before it imports the rest of
desim, so the two imports overlap on two cores instead of following each other.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from multiprocessing import forkserver

# What a worker needs: the CLI module too, as a worker re-imports its parent's ``__main__``
# (the ``desim`` script, which imports desim.cli).
PRELOAD = ["desim.cli", "desim.sweep.worker", "desim.engine", "desim.results"]


def default_jobs() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def pool_context():
    # forkserver: forking the sweep process itself would copy the progress bar's thread state.
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def start_pool_server() -> None:
    """Start the fork server now; it preloads desim while this process goes on."""
    pool_context()
    forkserver.ensure_running()
