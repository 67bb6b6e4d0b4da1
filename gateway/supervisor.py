"""`serve`: resolve the embedded servers, then run one gateway in-process or N worker processes
sharing the port (SO_REUSEPORT); forward signals, restart a worker that dies, stop cleanly."""

import dataclasses
import logging
import multiprocessing
import os
import shutil
import signal
import time
from multiprocessing.process import BaseProcess
from types import FrameType

from gateway.app import run_worker
from gateway.config import Config
from storage.embedded import Embedded, Listen

log = logging.getLogger(__name__)


def serve(config: Config) -> int:
    listen = None if config.embedded_listen is None else \
        Listen(config.embedded_listen, config.embedded_postgres_port, config.embedded_redis_port)
    embedded = Embedded(config.data_dir, listen)
    need_redis = config.redis_url is None and config.redis_sentinels is None
    if config.database_url is None or need_redis:
        db, redis = embedded.start(config.database_url is None, need_redis)
        config = dataclasses.replace(config, database_url=config.database_url or db,
                                     redis_url=config.redis_url or redis)
    try:
        if config.workers == 1:
            run_worker(config)
            return 0
        return _supervise(config)
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        embedded.stop()


def _supervise(config: Config) -> int:
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
    def start() -> tuple[BaseProcess, float]:
        worker = ctx.Process(target=run_worker, args=(config,), daemon=False)
        worker.start()
        return worker, time.monotonic()

    workers = [start() for _ in range(config.workers)]
    log.info("started %d workers on port %d", config.workers, config.port)
    status = 0
    while not stopping:
        time.sleep(0.2)
        for i, (worker, started) in enumerate(workers):
            if worker.is_alive() or stopping:
                continue
            if time.monotonic() - started < 5:  # it could not start: restarting would loop
                log.error("worker %d failed at start (exit %s); stopping", worker.pid, worker.exitcode)
                stopping, status = True, 1
                break
            log.warning("worker %d exited with %s; restarting", worker.pid, worker.exitcode)
            workers[i] = start()
    workers_only = [worker for worker, _ in workers]
    for worker in workers_only:
        if worker.is_alive() and worker.pid is not None:
            os.kill(worker.pid, signal.SIGTERM)
    for worker in workers_only:
        worker.join(config.shutdown_grace_s + 5)
        if worker.is_alive():
            worker.kill()
    return status
