"""`serve`: resolve the embedded servers, then run one gateway in-process or N worker processes
sharing the port (SO_REUSEPORT); forward signals, restart a worker that dies, stop cleanly."""

import dataclasses
import logging
import multiprocessing
import os
import shutil
import signal
import time
from types import FrameType

from gateway.app import run_worker
from gateway.config import Config
from storage.embedded import Embedded

log = logging.getLogger(__name__)


def serve(config: Config) -> int:
    embedded = Embedded(config.data_dir)
    if config.database_url is None or config.redis_url is None:
        db, redis = embedded.start(config.database_url is None, config.redis_url is None)
        config = dataclasses.replace(config, database_url=config.database_url or db,
                                     redis_url=config.redis_url or redis)
    try:
        if config.workers == 1:
            run_worker(config)
        else:
            _supervise(config)
    finally:
        embedded.stop()
    return 0


def _supervise(config: Config) -> None:
    metrics_dir = config.data_dir.absolute() / "metrics"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    ctx = multiprocessing.get_context("spawn")
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    workers = []
    for _ in range(config.workers):
        worker = ctx.Process(target=run_worker, args=(config,), daemon=False)
        worker.start()
        workers.append(worker)
    log.info("started %d workers on port %d", config.workers, config.port)
    while not stopping:
        time.sleep(0.2)
        for i, worker in enumerate(workers):
            if not worker.is_alive() and not stopping:
                log.warning("worker %d exited with %s; restarting", worker.pid, worker.exitcode)
                workers[i] = ctx.Process(target=run_worker, args=(config,), daemon=False)
                workers[i].start()
    for worker in workers:
        if worker.is_alive() and worker.pid is not None:
            os.kill(worker.pid, signal.SIGTERM)
    for worker in workers:
        worker.join(config.shutdown_grace_s + 5)
        if worker.is_alive():
            worker.kill()
