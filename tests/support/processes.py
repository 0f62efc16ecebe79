"""Run `relay serve` as a real subprocess: start, wait until ready, SIGKILL, SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from tests.support.fake_discord import FakeDiscord, wait_until
from tests.support.relay import SECRET
from tests.support.secrets import LOG_FILES

LISTENING = re.compile(r"listening on (https?)://127\.0\.0\.1:(\d+)(/\S*)")
START_TIMEOUT_S = 20.0
EXIT_TIMEOUT_S = 20.0


@dataclass
class RelayProcess:
    """One `relay serve` process; its stderr goes to a file so no pipe can fill up."""

    popen: subprocess.Popen[bytes]
    log_path: Path
    port: int = 0
    path: str = "/webhook"
    scheme: str = "http"  # https when relay serves TLS itself

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def webhook_url(self) -> str:
        return self.base_url + self.path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash or an OOM kill."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)

    async def wait_exit(self, timeout_s: float = EXIT_TIMEOUT_S) -> int:
        """Wait (bounded) for the process to end; return its exit status."""
        await wait_until(
            lambda: f"relay (pid {self.popen.pid}) to exit; its log:\n{self.log()}",
            lambda: self.popen.poll() is not None,
            timeout_s,
            poll_s=0.05,
        )
        return self.popen.returncode

    async def terminate(self, timeout_s: float = EXIT_TIMEOUT_S) -> int:
        """SIGTERM and wait for the exit status."""
        self.popen.send_signal(signal.SIGTERM)
        return await self.wait_exit(timeout_s)


@dataclass
class RelayProcesses:
    """Starts relay processes and, at teardown, kills whichever are still running."""

    workdir: Path
    started: list[RelayProcess] = field(default_factory=list)

    async def start(
        self,
        config_path: Path,
        timeout_s: float = START_TIMEOUT_S,
        env: dict[str, str] | None = None,
    ) -> RelayProcess:
        """Run `relay serve -c config_path`; return once it listens and /readyz says 200."""
        log_path = self.workdir / f"relay-{len(self.started)}.log"
        with log_path.open("wb") as log_file:
            popen = subprocess.Popen(
                [sys.executable, "-m", "relay.cli", "serve", "-c", str(config_path)],
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            )
        process = RelayProcess(popen, log_path)
        self.started.append(process)
        LOG_FILES.append(log_path)  # searched for secrets at the end of the session
        deadline = time.monotonic() + timeout_s
        await self._wait_listening(process, timeout_s)
        await self._wait_ready(process, max(deadline - time.monotonic(), 0.1))
        return process

    async def _wait_listening(self, process: RelayProcess, timeout_s: float) -> None:
        def listening() -> bool:
            if process.popen.poll() is not None:
                raise AssertionError(
                    f"relay exited with {process.popen.returncode} at start:\n{process.log()}"
                )
            match = LISTENING.search(process.log())
            if match is None:
                return False
            process.scheme, process.port = match.group(1), int(match.group(2))
            process.path = match.group(3)
            return True

        await wait_until(
            lambda: f"relay to log its port; its log so far:\n{process.log()}", listening, timeout_s
        )

    async def _wait_ready(self, process: RelayProcess, timeout_s: float) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:

            async def ready() -> bool:
                try:
                    # Readiness only: a test's own certificate is checked by the test.
                    url = process.base_url + "/readyz"
                    async with http.get(url, ssl=False) as response:
                        return response.status == 200
                except (aiohttp.ClientError, TimeoutError):
                    return False

            await wait_until(
                lambda: f"relay on port {process.port} to be ready; its log:\n{process.log()}",
                ready,
                timeout_s,
            )

    def kill_all(self) -> None:
        """Kill and reap every process still running (fixture teardown)."""
        for process in self.started:
            process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):  # SIGKILL cannot be refused
                process.popen.wait(timeout=10)


async def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run `relay ARGS…` as a subprocess; return its exit status and its output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "relay.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    out, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode()


def write_discord_config(
    tmp_path: Path,
    fake: FakeDiscord,
    *,
    store_url: str | None = None,
    path: Path | None = None,
    port: int = 0,
    shutdown_timeout: str = "2s",
    lease: str = "10s",
    drain_grace: str = "0s",
    workers: int = 1,
    send_timeout: str = "30s",
) -> Path:
    """Write a relay.yaml for `relay serve`: everything to one fake Discord, quick retries
    that never dead-letter; the store a SQLite file in tmp_path unless `store_url` says;
    `workers` processes sharing the port (which must then be set)."""
    path = path or tmp_path / "relay.yaml"
    store_url = store_url or f"sqlite:{tmp_path / 'relay.db'}"
    path.write_text(
        f"""\
server:
  host: 127.0.0.1
  port: {port}
  shutdown_timeout: {shutdown_timeout}
  drain_grace: {drain_grace}
  workers: {workers}
verify:
  secrets: ["{SECRET}"]
store:
  url: "{store_url}"
delivery:
  max_attempts: 10000   # never dead-letter while Discord is down
  backoff: {{ first: 50ms, max: 200ms }}
  lease: {lease}
  timeout: {send_timeout}
destinations:
  community: {{ type: discord, webhook_url: "{fake.url()}" }}
rules:
  - name: everything
    send_to: [community]
""",
        encoding="utf-8",
    )
    return path
