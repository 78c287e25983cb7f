"""Helper processes that end with the process that started them.

The local engine's worker processes (and the Ray actors) hold a pipeline each, hundreds of
MB: if the run's main process is killed outright (SIGKILL, the OOM killer), nothing tells
them to stop, and a pool worker waiting for its next batch waits forever (it holds the
write end of its own task queue, so it never reads an end of file).
:func:`die_with_parent` makes such a process end as soon as its parent is gone.
"""

import ctypes
import os
import signal
import sys
import threading
import time

# prctl(2): deliver this signal to the calling process when its parent ends (Linux).
PR_SET_PDEATHSIG = 1
# Seconds between two looks of the watchdog thread at the parent.
WATCH_INTERVAL_S = 1.0


def _kernel_death_signal() -> bool:
    """Ask Linux for SIGKILL when the parent ends (``prctl(PR_SET_PDEATHSIG)``); False
    where there is no such call."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _end_now() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _watch(parent_pid: int, interval_s: float) -> None:
    while os.getppid() == parent_pid:
        time.sleep(interval_s)
    _end_now()


def die_with_parent(parent_pid: int, *, kernel: bool = True, interval_s: float = WATCH_INTERVAL_S) -> None:
    """End this process (SIGKILL) when ``parent_pid`` is no longer its parent.

    parent_pid (int): the process that started this one, as that process saw its own pid
        (passed in, not read here: it may be gone already).
    kernel (bool): on Linux, also ask the kernel to send SIGKILL the moment the parent
        ends (``PR_SET_PDEATHSIG``). Only for a child of a Python process that started it
        from the thread that outlives it (the kernel watches the parent *thread*): the
        local engine's pool; not a Ray actor, whose parent (the raylet) is Ray's own.
    interval_s (float): how often the watchdog thread looks at ``os.getppid()``; it runs
        everywhere (macOS has no PR_SET_PDEATHSIG), as a daemon thread.

    If the parent is already gone (it ended while this process started), this process
    ends now."""
    if kernel:
        _kernel_death_signal()
    if os.getppid() != parent_pid:  # after the prctl: a parent that ended before it is seen here
        _end_now()
    threading.Thread(target=_watch, args=(parent_pid, interval_s), name="die-with-parent", daemon=True).start()
