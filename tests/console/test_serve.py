"""`relay serve` with a console: its own listener beside the webhook port, never on it;
`console.listen` applies on restart."""

from __future__ import annotations

import asyncio
import html
import re
import signal
import socket
import time
from dataclasses import replace
from pathlib import Path

import aiohttp

from relay.config.model import ConsoleConfig
from relay.secrets import Secret
from relay.serve import CONSOLE_SHUTDOWN_TIMEOUT_S, changes_needing_a_restart
from tests.console.support import AUTH, CONSOLE_PASSWORD, JSON, USERNAME, EventStream, hidden_fields
from tests.support.processes import RelayProcess, RelayProcesses, run_cli
from tests.support.relay import SECRET, make_config

CONSOLE_LISTENING = re.compile(r"console listening on http://127\.0\.0\.1:(\d+)/")


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "relay.yaml"
    path.write_text(
        f"""\
server: {{ host: 127.0.0.1, port: 0, shutdown_timeout: 2s, drain_grace: 0s }}
verify: {{ secrets: ["{SECRET}"] }}
store: {{ url: "sqlite:{tmp_path / "relay.db"}" }}
destinations:
  audit: {{ type: console }}
rules:
  - name: everything
    send_to: [audit]
console:
  listen: 127.0.0.1:0
  username: {USERNAME}
  password: "${{CONSOLE_PASSWORD}}"
""",
        encoding="utf-8",
    )
    return path


def console_url(process: RelayProcess) -> str:
    found = CONSOLE_LISTENING.search(process.log())
    assert found is not None, process.log()
    assert int(found.group(1)) not in (0, process.port)
    return f"http://127.0.0.1:{found.group(1)}"


async def test_the_console_listens_on_its_own_port_only(
    processes: RelayProcesses, tmp_path: Path
) -> None:
    process = await processes.start(
        write_config(tmp_path), env={"CONSOLE_PASSWORD": CONSOLE_PASSWORD}
    )
    console = console_url(process)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{console}/deliveries", headers=AUTH) as response:
            page = await response.text()
            assert response.status == 200, page
            assert "<title>Deliveries · relay console</title>" in page
            assert response.headers["Cache-Control"] == "no-store"
        async with http.get(f"{console}/static/console.css", headers=AUTH) as response:
            assert response.status == 200
        async with http.get(f"{console}/deliveries") as response:
            assert response.status == 401
        for method, path in (
            ("GET", "/deliveries"),
            ("GET", "/deliveries/1"),
            ("GET", "/static/console.css"),
            ("POST", "/deliveries/1/replay"),
        ):
            async with http.request(method, process.base_url + path, headers=AUTH) as response:
                assert response.status in (404, 405), (method, path)
        async with http.get(process.base_url + "/", headers=AUTH) as response:
            assert response.status == 404  # the console's home is not on the webhook port

    assert await process.terminate() == 0
    log = process.log()
    assert "stopped" in log
    assert CONSOLE_PASSWORD not in log


def test_console_listen_applies_on_restart_and_its_credentials_at_once(tmp_path: Path) -> None:
    base = make_config("", tmp_path)
    console = ConsoleConfig(password=Secret("one-password"), host="127.0.0.1", port=8081)
    running = replace(base, console=console)
    assert changes_needing_a_restart(running, running) == []
    assert changes_needing_a_restart(base, running) == ["console.listen"]
    assert changes_needing_a_restart(running, base) == ["console.listen"]
    moved = replace(running, console=replace(console, port=8082, host="::1"))
    assert changes_needing_a_restart(running, moved) == ["console.listen"]
    rotated = replace(running, console=replace(console, password=Secret("another"), username="ops"))
    assert changes_needing_a_restart(running, rotated) == []


async def test_a_console_address_in_use_stops_relay_saying_so(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = write_config(tmp_path)
        text = path.read_text(encoding="utf-8")
        path.write_text(text.replace("127.0.0.1:0", f"127.0.0.1:{port}"), encoding="utf-8")
        status, out = await run_cli(
            "serve", "-c", str(path), env={"CONSOLE_PASSWORD": CONSOLE_PASSWORD}
        )
    assert status == 1
    [said] = [line for line in out.splitlines() if line.startswith("relay serve: cannot start")]
    assert "console.listen: error while attempting to bind on address" in said
    assert said.endswith("address already in use")
    assert "Traceback" not in out


async def test_an_open_live_stream_does_not_hold_up_the_shutdown(
    processes: RelayProcesses, tmp_path: Path
) -> None:
    process = await processes.start(
        write_config(tmp_path), env={"CONSOLE_PASSWORD": CONSOLE_PASSWORD}
    )
    console = console_url(process)
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{console}/deliveries/live", headers=AUTH) as response,
    ):
        assert response.status == 200
        assert response.content_type == "text/event-stream"
        events = EventStream(response)
        await events.until("the first update", lambda sent: sent.event == "update")
        started = time.monotonic()
        process.popen.send_signal(signal.SIGTERM)
        async with asyncio.timeout(CONSOLE_SHUTDOWN_TIMEOUT_S):
            while await events.next() is not None:
                pass  # the stream ends as relay starts shutting down
        assert await process.wait_exit() == 0
    # Well within what the console's shutdown would wait for a page still in progress.
    assert time.monotonic() - started < CONSOLE_SHUTDOWN_TIMEOUT_S
    assert "stopped" in process.log()


async def test_the_test_button_of_a_real_relay(processes: RelayProcesses, tmp_path: Path) -> None:
    # The webhook listener on port 0: the console posts to the port it took.
    path = write_config(tmp_path)
    process = await processes.start(path, env={"CONSOLE_PASSWORD": CONSOLE_PASSWORD})
    console = console_url(process)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{console}/deliveries", headers=AUTH) as response:
            token = hidden_fields(await response.text(), "send-test")["csrf_token"]
        form = {"csrf_token": token, "event": "room.join", "message": ""}
        origin = {"Origin": console, **AUTH}
        async with http.post(
            f"{console}/deliveries/test", data=form, headers=origin, allow_redirects=False
        ) as response:
            assert response.status == 303, await response.text()
            location = response.headers["Location"]
        async with http.get(console + location, headers=AUTH) as response:
            page = html.unescape(await response.text())
        found = re.search(r"relay accepted the test event (\S+): 1 delivery", page)
        assert found is not None, page
        async with http.get(f"{console}/deliveries", headers={**AUTH, **JSON}) as response:
            [row] = (await response.json())["deliveries"]
    assert (row["event_id"], row["event_type"], row["destination"]) == (
        found.group(1),
        "room.join",
        "audit",
    )
    assert await process.terminate() == 0
