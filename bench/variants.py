"""Measurement-only variants of `relay serve`, for bench/run.py's --relay-cmd.

They answer "what would it take": how fast relay gets when a piece of its work is left
out, or when it runs as several processes. None of them is a way to run relay: the
no-store variant does not keep events, and the multi-process ones lack what a product
needs (metrics across processes, reload, restarts). bench/README.md has their figures.

    python bench/run.py --relay-cmd "python $PWD/bench/variants.py --no-store"   # one process
    python bench/run.py --relay-cmd "python $PWD/bench/variants.py --processes 2"
    python bench/run.py --relay-cmd "python $PWD/bench/variants.py --processes 2 --no-store"
    python bench/run.py --relay-cmd "python $PWD/bench/variants.py --processes 2 --store-process"

--no-store        the store's accept answers at once and keeps nothing (everything else
                  runs: verify, parse, route, the answer); bench/run.py's store check then
                  reports INVALID, as it should.
--no-store-delay-ms MS
                  the same, but each accept waits MS milliseconds first (0: it only
                  yields to the event loop once), as it would for a commit.
--processes N     N processes serve the port (SO_REUSEPORT: the kernel spreads the
                  connections). Each has its own connection to the one SQLite file and
                  commits its own batches; only the first runs the delivery worker.
--store-process   with --processes: the N processes only serve HTTP and send each accept
                  to one more process, which owns the store and the delivery worker, over
                  a socket pair; so one writer batches for all.

Any other command line (check, …) goes to relay's own CLI unchanged.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pickle
import signal
import socket
import struct
import sys
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from relay.app import STATE, create_app
from relay.cli import main as relay_main
from relay.config import load
from relay.config.model import Config
from relay.serve import _tune_gc
from relay.state import RelayState
from relay.store import NewDelivery, NewEvent
from relay.store.base import AcceptResult
from relay.store.sqlite import SqliteStore

_FRAME = struct.Struct("!I")


def _stub_the_store(delay_s: float | None) -> None:
    async def accept(
        self: SqliteStore,
        event: NewEvent,
        deliveries: Sequence[NewDelivery],
        *,
        dedupe_window_s: float,
        **_: object,  # the observation, tally and claim: all kept nowhere
    ) -> AcceptResult:
        if delay_s is not None:
            await asyncio.sleep(delay_s)
        return AcceptResult(duplicate=False, event_id=event.event_id, deliveries=len(deliveries))

    SqliteStore.accept = accept  # type: ignore[method-assign]


async def _send(writer: asyncio.StreamWriter, message: object) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    writer.write(_FRAME.pack(len(data)) + data)


async def _receive(reader: asyncio.StreamReader) -> Any:
    (size,) = _FRAME.unpack(await reader.readexactly(_FRAME.size))
    return pickle.loads(await reader.readexactly(size))


class ForwardingStore:
    """The store of an HTTP-only process: every call goes to the store process."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._last_id = 0

    async def open(self) -> None:
        self._reader, self._writer = await asyncio.open_unix_connection(sock=self._sock)
        self._answers = asyncio.create_task(self._read_answers())

    async def close(self) -> None:
        self._answers.cancel()
        self._writer.close()

    async def _read_answers(self) -> None:
        while True:
            call_id, ok, value = await _receive(self._reader)
            future = self._waiting.pop(call_id)
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        self._last_id += 1
        future = asyncio.get_running_loop().create_future()
        self._waiting[self._last_id] = future
        await _send(self._writer, (self._last_id, method, args, kwargs))
        return await future

    async def accept(
        self, event: NewEvent, deliveries: Sequence[NewDelivery], *, dedupe_window_s: float
    ) -> AcceptResult:
        result: AcceptResult = await self._call(
            "accept", event, tuple(deliveries), dedupe_window_s=dedupe_window_s
        )
        return result

    async def ping(self) -> None:
        await self._call("ping")

    async def queue_depths(self) -> dict[str, int]:
        depths: dict[str, int] = await self._call("queue_depths")
        return depths


async def _serve_forwarded_calls(state: RelayState, sock: socket.socket) -> None:
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    calls: set[asyncio.Task[None]] = set()

    async def answer(call_id: int, method: str, args: tuple[Any, ...], kwargs: Any) -> None:
        try:
            value, ok = await getattr(state.store, method)(*args, **kwargs), True
            if method == "accept" and not value.duplicate and state.worker is not None:
                state.worker.wake(d.destination for d in args[1])
        except Exception as exc:
            value, ok = exc, False
        await _send(writer, (call_id, ok, value))

    while True:
        try:
            call_id, method, args, kwargs = await _receive(reader)
        except asyncio.IncompleteReadError:
            return
        task = asyncio.create_task(answer(call_id, method, args, kwargs))
        calls.add(task)
        task.add_done_callback(calls.discard)


async def _run(
    config: Config,
    *,
    http: bool,
    run_worker: bool,
    store: ForwardingStore | None = None,
    serve_calls_from: Sequence[socket.socket] = (),
) -> None:
    app = create_app(config, store=store, run_worker=run_worker)  # type: ignore[arg-type]
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    if http:
        server = config.server
        await web.TCPSite(runner, server.host, server.port, reuse_port=True).start()
    forwarded = [
        asyncio.create_task(_serve_forwarded_calls(app[STATE], sock)) for sock in serve_calls_from
    ]
    _tune_gc()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    for task in forwarded:
        task.cancel()
    await runner.cleanup()


def _fork(run: Any) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            asyncio.run(run())
        finally:
            os._exit(0)
    return pid


def _serve(config: Config, processes: int, store_process: bool) -> None:
    """Fork the processes (before any thread or loop exists), then wait for them."""
    children: list[int] = []
    store_ends: list[socket.socket] = []
    for index in range(processes):
        if store_process:
            parent_end, child_end = socket.socketpair()
            store_ends.append(parent_end)
            forwarding = ForwardingStore(child_end)
            children.append(
                _fork(lambda s=forwarding: _run(config, http=True, run_worker=False, store=s))
            )
        else:
            first = index == 0
            children.append(_fork(lambda w=first: _run(config, http=True, run_worker=w)))

    def stop_children(signum: int, frame: object) -> None:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    signal.signal(signal.SIGTERM, stop_children)
    signal.signal(signal.SIGINT, stop_children)
    if store_process:
        # Its event loop takes SIGTERM over from stop_children: pass it on once it is done.
        asyncio.run(_run(config, http=False, run_worker=True, serve_calls_from=store_ends))
        stop_children(signal.SIGTERM, None)
    for pid in children:
        os.waitpid(pid, 0)


def main(argv: Sequence[str]) -> int:
    variant = argparse.ArgumentParser(add_help=False)
    variant.add_argument("--no-store", action="store_true")
    variant.add_argument("--no-store-delay-ms", type=float)
    variant.add_argument("--processes", type=int, default=1)
    variant.add_argument("--store-process", action="store_true")
    args, relay_argv = variant.parse_known_args(argv)
    if not relay_argv or relay_argv[0] != "serve":
        return relay_main(relay_argv)
    if args.no_store or args.no_store_delay_ms is not None:
        delay_ms = args.no_store_delay_ms
        _stub_the_store(None if delay_ms is None else delay_ms / 1000)
    if args.processes == 1 and not args.store_process:
        return relay_main(relay_argv)
    serve_args = argparse.ArgumentParser(add_help=False)
    serve_args.add_argument("-c", "--config", required=True)
    config = load(serve_args.parse_known_args(relay_argv[1:])[0].config)
    _serve(config, args.processes, args.store_process)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
