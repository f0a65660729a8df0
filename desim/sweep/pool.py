"""The local process pool's start-up, kept apart so that it imports nothing heavy.

Workers come from a fork server that has imported desim once (about a second): each worker is
a fork of it and starts warm. ``desim sweep`` starts the server before it imports the rest of
desim, so the two imports overlap on two cores instead of following each other.

Workers and the fork server end with the sweep process, however it ends (kill -9 included), so
nothing goes on writing a sweep directory whose lock has been released:

* a worker is forked by the fork server, not by the sweep process, so the kernel's parent-death
  signal (``prctl(PR_SET_PDEATHSIG)``, delivered by kernel/exit.c ``forget_original_parent()``
  to the children of an exiting task, Linux v6.6) would tell it of the fork server's death, not
  the sweep's. Each worker watches the sweep process instead (``worker_init``) through the
  sentinel multiprocessing gives every child: a pipe whose write end only the sweep process
  holds, readable (EOF) as soon as that process is gone;
* the fork server (multiprocessing.forkserver ``main``) exits when its "alive" pipe reads EOF,
  that is when the sweep process and every worker, which all hold its write end, are gone.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
from multiprocessing import forkserver
from multiprocessing.connection import wait

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


def worker_init() -> None:
    """Run in each pool worker as it starts: die at once when the sweep process dies."""
    parent = mp.parent_process()
    if parent is None:  # not started by multiprocessing: nothing to watch
        return
    sentinel = parent.sentinel

    def watch() -> None:
        wait([sentinel])  # returns only when the sweep process has gone
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="desim-parent-watch", daemon=True).start()


def describe_exit(exitcode: int | None) -> str:
    """How a worker process ended, for the failed run's message."""
    if exitcode is None:
        return "it vanished"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        oom = " (as the OOM killer does)" if exitcode == -signal.SIGKILL else ""
        return f"it was killed by {name}{oom}"
    return f"it exited with status {exitcode}"
