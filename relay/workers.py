"""`relay serve` with `server.workers` above 1: a supervisor and its worker processes.

One Python process uses one core. With `server.workers: N`, `relay serve` starts N
workers, each a whole relay (`relay serve` again, in a process of its own), and only
supervises them:

- every worker binds server.port with SO_REUSEPORT, so the kernel spreads connections
  across them; they share the store as replicas do (claims and leases already keep two
  processes from sending one delivery or raising one signal twice);
- the first worker alone serves the console, whose port cannot be shared that way
  without splitting a login between processes;
- SIGTERM and SIGINT are passed on to every worker, which drains as one relay does
  (/readyz 503, drain_grace, in-flight sends finished); the supervisor exits when they all
  have, 0 when they all exited 0;
- SIGHUP is passed on: each worker reloads relay.yaml, or keeps its config if the new one
  is invalid;
- a worker that dies is started again, after a pause that doubles while its successors
  die before they are ready;
- a worker whose supervisor dies (kill -9) is sent SIGTERM by the kernel, and drains.

/metrics sums every worker's counters, whichever worker answers the scrape: the
supervisor gives them a directory for prometheus-client's multiprocess mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass

from relay.metrics import METRICS_DIR_ENV

log = logging.getLogger("relay.workers")

# Set in a worker's environment: "<index>/<count>/<supervisor pid>/<ready fd>".
WORKER_ENV = "RELAY_WORKER"

# A worker that died is started again after this, doubled while its successors die before
# they are ready, up to the cap: a worker that cannot start must not spin.
RESTART_PAUSE_S = 1.0
RESTART_PAUSE_MAX_S = 30.0

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass(frozen=True)
class WorkerRole:
    """What a worker process is told by its supervisor."""

    index: int  # from 1
    count: int
    supervisor_pid: int
    ready_fd: int

    @property
    def serves_console(self) -> bool:
        return self.index == 1

    def encode(self) -> str:
        return f"{self.index}/{self.count}/{self.supervisor_pid}/{self.ready_fd}"


def worker_role() -> WorkerRole | None:
    """This process's role, when a supervisor started it; None for a relay of its own."""
    value = os.environ.get(WORKER_ENV)
    if not value:
        return None
    try:
        index, count, supervisor_pid, ready_fd = (int(part) for part in value.split("/"))
    except ValueError:
        raise ValueError(f"{WORKER_ENV}: not set by relay's supervisor: {value!r}") from None
    return WorkerRole(index, count, supervisor_pid, ready_fd)


def become_worker(role: WorkerRole) -> None:
    """Ask the kernel for SIGTERM when the supervisor dies, so that no worker outlives it
    holding the port beside the next supervisor's workers; drain if it is gone already."""
    libc_name = ctypes.util.find_library("c")
    if libc_name and sys.platform.startswith("linux"):
        libc = ctypes.CDLL(libc_name, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != role.supervisor_pid:  # it died before prctl: nobody will tell us
        os.kill(os.getpid(), signal.SIGTERM)


def tell_ready(role: WorkerRole) -> None:
    """Tell the supervisor this worker listens (one byte on the pipe it was given)."""
    try:
        os.write(role.ready_fd, b"r")
    finally:
        os.close(role.ready_fd)


class _Worker:
    """One worker process: started, watched, started again."""

    def __init__(self, index: int, count: int, argv: list[str], env: dict[str, str]) -> None:
        self.index = index
        self._count = count
        self._argv = argv
        self._env = env
        self.process: asyncio.subprocess.Process | None = None
        self.ready = False
        # A SIGHUP that came while the worker started: it may have read relay.yaml before
        # the change, and a SIGHUP before its handler is set would end it.
        self._reload_pending = False

    async def start(self) -> bool:
        """Start the worker and wait until it listens; False when it died first."""
        self.ready = False
        read_fd, write_fd = os.pipe()
        role = WorkerRole(self.index, self._count, os.getpid(), write_fd)
        try:
            self.process = await asyncio.create_subprocess_exec(
                *self._argv,
                env={**self._env, WORKER_ENV: role.encode()},
                pass_fds=(write_fd,),
            )
        finally:
            os.close(write_fd)
        try:
            # A byte when it listens; end of file when it exits before.
            ready = await asyncio.get_running_loop().run_in_executor(None, os.read, read_fd, 1)
        finally:
            os.close(read_fd)
        self.ready = ready == b"r"
        if self.ready and self._reload_pending:
            self._reload_pending = False
            self.signal(signal.SIGHUP)
        return self.ready

    def signal(self, signum: int) -> None:
        if signum == signal.SIGHUP and not self.ready:
            self._reload_pending = True
            return
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signum)

    async def wait(self) -> int:
        assert self.process is not None
        return await self.process.wait()


def _worker_argv() -> list[str]:
    """This command again: the worker reads the same flags and the same config path."""
    return [sys.executable, "-m", "relay", *sys.argv[1:]]


async def supervise(count: int, argv: list[str] | None = None) -> int:
    """Run `count` workers until SIGTERM or SIGINT; return the exit status."""
    metrics_dir = tempfile.mkdtemp(prefix="relay-metrics-")
    env = {**os.environ, METRICS_DIR_ENV: metrics_dir}
    workers = [_Worker(i, count, argv or _worker_argv(), env) for i in range(1, count + 1)]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, _pass_on, workers, signal.SIGHUP)
    try:
        started = await asyncio.gather(*(worker.start() for worker in workers))
        if not all(started):
            log.error("a worker could not start: stopping the others")
            return await _stop_started(workers)
        log.info("%d workers serving, pids %s", count, _pids(workers))
        watchers = [_keep_running(w, stop, metrics_dir) for w in workers]
        running = asyncio.gather(*watchers)
        await stop.wait()
        log.info("stopping %d workers", count)
        _pass_on(workers, signal.SIGTERM)
        codes = await running
        # A worker still starting may have no handler yet: it has not listened (relay.serve
        # sets them before its listener starts), so SIGTERM ends it with nothing to drain.
        return 1 if any(code not in (0, -signal.SIGTERM) for code in codes) else 0
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _pass_on(workers: list[_Worker], signum: int) -> None:
    for worker in workers:
        worker.signal(signum)


def _pids(workers: list[_Worker]) -> str:
    return ", ".join(str(w.process.pid) for w in workers if w.process is not None)


async def _stop_started(workers: list[_Worker]) -> int:
    """SIGTERM the workers that started and wait for them; 1, as one could not start."""
    _pass_on(workers, signal.SIGTERM)
    await asyncio.gather(*(w.wait() for w in workers if w.process is not None))
    return 1


async def _keep_running(worker: _Worker, stop: asyncio.Event, metrics_dir: str) -> int:
    """Start the worker again whenever it exits before the supervisor is told to stop;
    return its last exit status once it is."""
    pause = RESTART_PAUSE_S
    while True:
        assert worker.process is not None
        code = await worker.wait()
        _forget_live_gauges(metrics_dir, worker.process.pid)
        if stop.is_set():
            return code
        log.error(
            "worker %d (pid %d) exited with %d; starting another in %.0f s",
            worker.index,
            worker.process.pid,
            code,
            pause,
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), pause)
            return code  # told to stop meanwhile
        if await worker.start():
            log.info("worker %d started again, pid %d", worker.index, worker.process.pid)
            pause = RESTART_PAUSE_S
        else:
            pause = min(pause * 2, RESTART_PAUSE_MAX_S)
        if stop.is_set():  # told to stop while it started: the SIGTERM went before it
            worker.signal(signal.SIGTERM)


def _forget_live_gauges(metrics_dir: str, pid: int) -> None:
    # A dead worker's counters stay in the sum (they counted what happened); its gauges
    # would report a state it no longer has.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, metrics_dir)  # type: ignore[no-untyped-call]
