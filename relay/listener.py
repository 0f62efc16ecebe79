"""The webhook port: aiohttp's HTTP protocol behind a listener that bounds connections.

bitHuman sends each session event once, so relay must still answer it while a flood of
slow or idle connections is open. Two limits keep them from using up relay:

- a connection whose request headers are not in within `server.read_timeout` of its
  start (or of its last answer) is closed: aiohttp's keep-alive timeout does exactly that,
  and the runner is given `keepalive_timeout=read_timeout` (see serve.py);
- beyond `server.max_connections` open connections, a new one is answered 503 and closed
  at once, not queued behind the others (and kept half-open a moment, so the answer
  is not lost to a reset).
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import time
from typing import Any, cast

from aiohttp import web

_BUSY_BODY = json.dumps({"error": "too many connections, retry later"}).encode()
BUSY_ANSWER = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: " + str(len(_BUSY_BODY)).encode() + b"\r\n"
    b"Connection: close\r\n\r\n" + _BUSY_BODY
)


# How long a refused connection is kept half-closed, reading and dropping what the
# client still sends. Closing at once would make the kernel answer that late request
# with a reset, and a reset can make the client drop the 503 it was sent (nginx's
# lingering_close solves the same problem).
REFUSED_LINGER_S = 2.0
# At most this many refused connections linger at a time, so that a flood of them costs
# a bounded number of open files; past it they are closed at once.
REFUSED_LINGER_AT_MOST = 1024


class _Refuse(asyncio.Protocol):
    """Answer 503, stop writing, drop whatever the client still sends, then close."""

    def __init__(self, listener: Listener) -> None:
        self._listener = listener
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport; uvloop's do not subclass asyncio.Transport, so no isinstance.
        transport = cast(asyncio.Transport, transport)
        transport.write(BUSY_ANSWER)
        if not transport.can_write_eof() or not self._listener.may_linger(self):
            transport.close()
            return
        self._transport = transport
        transport.write_eof()
        self._timer = asyncio.get_running_loop().call_later(REFUSED_LINGER_S, transport.close)

    def data_received(self, data: bytes) -> None:
        """The request nobody will answer: dropped."""

    def eof_received(self) -> bool:
        return False  # the client is done too: asyncio closes the transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._listener.lingering.discard(self)


class _Counted(asyncio.Protocol):
    """aiohttp's protocol for one connection, counted from its admission to its end.

    Counting in aiohttp's own connection list would lag: asyncio accepts a burst of
    connections and creates their protocols before any of them is told it is connected.
    """

    def __init__(self, inner: asyncio.Protocol, listener: Listener) -> None:
        self._inner = inner
        self._listener = listener
        self.admitted_at = time.monotonic()
        self.connected = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.connected = True
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._listener.open.discard(self)
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class Listener:
    """Listens on host:port for a started AppRunner, at most `max_connections` at a time."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        max_connections: int,
        handshake_timeout_s: float,
        ssl_context: ssl.SSLContext | None = None,
        reuse_port: bool = False,
    ) -> None:
        self._runner = runner
        self._host = host
        self._port = port
        self._max_connections = max_connections
        self._handshake_timeout_s = handshake_timeout_s
        self._ssl_context = ssl_context
        self._reuse_port = reuse_port  # workers of one relay share the port (workers.py)
        self._server: asyncio.Server | None = None
        self.open: set[_Counted] = set()
        self.lingering: set[_Refuse] = set()
        self.refused = 0

    def _protocol(self) -> asyncio.BaseProtocol:
        if len(self.open) >= self._max_connections:
            self._forget_failed_handshakes()
        if len(self.open) >= self._max_connections:
            self.refused += 1
            return _Refuse(self)
        server = self._runner.server
        assert server is not None, "the runner is set up first"
        counted = _Counted(server(), self)
        self.open.add(counted)
        return counted

    def may_linger(self, refused: _Refuse) -> bool:
        """Whether `refused` may linger (REFUSED_LINGER_AT_MOST); if so it is counted."""
        if len(self.lingering) >= REFUSED_LINGER_AT_MOST:
            return False
        self.lingering.add(refused)
        return True

    def _forget_failed_handshakes(self) -> None:
        """Drop connections that never connected: asyncio tells a protocol nothing when
        its TLS handshake fails (ssl_handshake_timeout bounds it)."""
        horizon = time.monotonic() - self._handshake_timeout_s
        self.open -= {c for c in self.open if not c.connected and c.admitted_at < horizon}

    async def start(self) -> list[Any]:
        """Start listening; return the bound addresses."""
        self._server = await asyncio.get_running_loop().create_server(
            self._protocol,
            self._host,
            self._port,
            ssl=self._ssl_context,
            ssl_handshake_timeout=self._handshake_timeout_s if self._ssl_context else None,
            backlog=1024,  # a burst of connections waits in the kernel, not refused
            reuse_address=True,
            reuse_port=self._reuse_port,
        )
        return [sock.getsockname() for sock in self._server.sockets if _is_inet(sock)]

    async def close(self) -> None:
        """Stop accepting; connections already open are the runner's to finish."""
        if self._server is not None:
            self._server.close()
            self._server = None


def _is_inet(sock: socket.socket) -> bool:
    return sock.family in (socket.AF_INET, socket.AF_INET6)
