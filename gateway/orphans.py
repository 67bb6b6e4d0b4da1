"""Worker processes end with their parent. A multiprocessing child outlives a parent that is
killed (SIGKILL, or SIGTERM with no handler: `daemon=True` only helps at a clean exit), and a
load-generator worker would reconnect, or a gateway worker serve, forever."""

import multiprocessing
import multiprocessing.connection
import os
import signal
import threading


def exit_with_parent(signum: int = signal.SIGTERM) -> bool:
    """Send this process `signum` once its multiprocessing parent is gone, however it went.

    The parent's sentinel is a pipe whose other end only the parent holds: the kernel closes it
    when the parent dies, so the watch sees even a SIGKILL, and a parent already dead before the
    watch starts (no race, unlike polling `os.getppid()`). False when this process has no
    multiprocessing parent (nothing to watch)."""
    parent = multiprocessing.parent_process()
    if parent is None or parent.sentinel is None:
        return False
    sentinel = parent.sentinel

    def watch() -> None:
        multiprocessing.connection.wait([sentinel])
        os.kill(os.getpid(), signum)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
    return True
