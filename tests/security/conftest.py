"""Shared helpers for the security tests: raw HTTP exchanges with a bounded wait."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

REQUEST_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class RawAnswer:
    """An HTTP answer read off a raw TCP connection."""

    status: int
    headers: dict[str, str]
    body: bytes
    elapsed_s: float

    def json(self) -> object:
        return json.loads(self.body)


async def read_answer(
    reader: asyncio.StreamReader, started: float, timeout_s: float = REQUEST_TIMEOUT_S
) -> RawAnswer:
    """Read one HTTP/1.1 answer (with a Content-Length) within timeout_s."""
    async with asyncio.timeout(timeout_s):
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return RawAnswer(status, headers, body, time.monotonic() - started)


async def closed_by_peer(reader: asyncio.StreamReader, timeout_s: float) -> bool:
    """Return whether the server closes the connection within timeout_s."""
    try:
        async with asyncio.timeout(timeout_s):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return True
