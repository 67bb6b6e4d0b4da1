"""Run `run.py` under cProfile, switched on by SIGUSR1 and off, stats written, by SIGUSR2, so a
profile covers just the measured window.

    python -m bench.profiled OUT.prof run.py serve ...

The profiler counts the process's CPU time (time.process_time), not the wall clock: on a machine
whose cores the clients and servers share, a wall clock charges the time the process waited for a
core to whatever it was doing then (a socket write that woke a client, most often).

cProfile does not see the cyclic garbage collector (its pauses land on whichever call allocated),
so the collections during the window are timed apart and written to OUT.prof.gc as text.
The benches switch it with `switches(pid)` and show what it wrote with `print_stats`.
"""

import cProfile
import gc
import os
import pstats
import runpy
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any


def switches(pid: int) -> tuple[Callable[[], None], Callable[[], None]]:
    """Hooks that switch the profiler of process `pid` on and off (the measured window's)."""
    return lambda: os.kill(pid, signal.SIGUSR1), lambda: os.kill(pid, signal.SIGUSR2)


def print_stats(path: Path, tottime: int, pattern: str, cumulative: int) -> None:
    """The costliest functions by their own time, then those matching `pattern` by cumulative
    time, then the garbage collector's pauses."""
    stats = pstats.Stats(str(path))
    stats.sort_stats("tottime").print_stats(tottime)
    stats.sort_stats("cumulative").print_stats(pattern, cumulative)
    collections = Path(f"{path}.gc")
    if collections.exists():
        print(collections.read_text())
    print(f"stats in {path} (e.g. `python -m pstats {path}`)")


class GcClock:
    """The collections of each generation while switched on: how many, how long."""

    def __init__(self) -> None:
        self.on = False
        self.started = 0.0
        self.pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if not self.on:
            return
        if phase == "start":
            self.started = time.perf_counter()
        else:
            self.pauses[info["generation"]].append(time.perf_counter() - self.started)

    def report(self, seconds: float) -> str:
        lines = [f"garbage collector over {seconds:.1f} s (not in the cProfile stats):"]
        for generation, pauses in self.pauses.items():
            if pauses:
                lines.append(f"  generation {generation}: {len(pauses)} collections, {sum(pauses) * 1000:.0f} ms in "
                             f"all, longest {max(pauses) * 1000:.1f} ms")
        return "\n".join(lines) + "\n"


if __name__ == "__main__":
    out, script = sys.argv[1], sys.argv[2]
    sys.argv = sys.argv[2:]
    profiler = cProfile.Profile(time.process_time)
    clock = GcClock()
    gc.callbacks.append(clock)
    window = [0.0]

    def start(signum: int, frame: FrameType | None) -> None:
        window[0] = time.monotonic()
        clock.on = True
        profiler.enable()  # signal handlers run in the main thread: the event loop's

    def stop(signum: int, frame: FrameType | None) -> None:
        profiler.disable()
        clock.on = False
        Path(out + ".gc").write_text(clock.report(time.monotonic() - window[0]))
        profiler.dump_stats(out)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    runpy.run_path(script, run_name="__main__")
