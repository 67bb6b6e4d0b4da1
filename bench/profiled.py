"""Run `run.py` under cProfile, switched on by SIGUSR1 and off, stats written, by SIGUSR2, so a
profile covers just the measured window.

    python -m bench.profiled OUT.prof run.py serve ...
"""

import cProfile
import runpy
import signal
import sys
from types import FrameType

if __name__ == "__main__":
    out, script = sys.argv[1], sys.argv[2]
    sys.argv = sys.argv[2:]
    profiler = cProfile.Profile()

    def start(signum: int, frame: FrameType | None) -> None:
        profiler.enable()  # signal handlers run in the main thread: the event loop's

    def stop(signum: int, frame: FrameType | None) -> None:
        profiler.disable()
        profiler.dump_stats(out)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    runpy.run_path(script, run_name="__main__")
