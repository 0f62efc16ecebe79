"""Operating relay: reload, shutdown, logs, the delivery log, with `relay serve` running."""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import sys
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.support.fake_discord import FakeDiscord, unknown_webhook, wait_until
from tests.support.local_server import serve_locally
from tests.support.processes import RelayProcess, RelayProcesses, run_cli
from tests.support.relay import SECRET, event_body, signed_headers
from tests.support.secrets import watch
from tests.support.smtp import self_signed_cert


def write_config(
    path: Path, discord_url: str, *, when: str = "{}", extra: str = "", send_timeout: str = "30s"
) -> Path:
    path.write_text(
        f"""
server: {{ port: 0, shutdown_timeout: 2s }}
verify: {{ secrets: ["{SECRET}"] }}
store: {{ url: "sqlite:{path.parent / "relay.db"}" }}
delivery: {{ backoff: {{ first: 50ms, max: 200ms }}, timeout: {send_timeout} }}
destinations:
  team: {{ type: discord, webhook_url: "{discord_url}" }}
rules:
  - name: main
    when: {when}
    send_to: [team]
{extra}"""
    )
    return path


async def post(relay: RelayProcess, body: bytes) -> tuple[int, dict[str, object]]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
        http.post(relay.webhook_url, data=body, headers=signed_headers(body)) as response,
    ):
        return response.status, await response.json()


async def status_of(url: str) -> int:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
        http.get(url) as response,
    ):
        return response.status


async def reload(relay: RelayProcess, marker: str, count: int = 1) -> None:
    relay.popen.send_signal(signal.SIGHUP)
    await wait_until(
        lambda: f"{count} x {marker!r} in the log:\n{relay.log()}",
        lambda: relay.log().count(marker) >= count,
        10,
    )


async def test_sighup_swaps_in_a_valid_config(
    tmp_path: Path, processes: RelayProcesses, discord: FakeDiscord
) -> None:
    config = write_config(tmp_path / "relay.yaml", discord.url(), when="{ event: room.join }")
    relay = await processes.start(config)
    first = event_body("chat.push", message="before reload")
    assert await post(relay, first) == (
        200,
        {"status": "accepted", "event_id": _id(first), "deliveries": 0},
    )

    write_config(config, discord.url(), when="{ event: chat.push }")
    await reload(relay, "reloaded")
    second = event_body("chat.push", message="after reload")
    status, answer = await post(relay, second)
    assert (status, answer["deliveries"]) == (200, 1)
    delivered = await discord.wait_for_delivered(1)
    assert "after reload" in delivered[0].description()
    # Dedupe state survives the reload.
    assert (await post(relay, first))[0] == 200


async def test_sighup_keeps_the_running_config_when_the_new_one_is_invalid(
    tmp_path: Path, processes: RelayProcesses, discord: FakeDiscord
) -> None:
    config = write_config(tmp_path / "relay.yaml", discord.url())
    relay = await processes.start(config)
    text = config.read_text()
    config.write_text(
        text.replace("send_to: [team]", "send_to: [teem]").replace("port: 0", "prot: 0")
    )
    await reload(relay, "reload rejected", count=2)
    log = relay.log()
    assert 'rules[0].send_to[0]: unknown destination "teem" (did you mean "team"?)' in log
    assert 'server: unknown key "prot" (did you mean "port"?)' in log
    body = event_body(message="still routed")
    status, answer = await post(relay, body)
    assert (status, answer["deliveries"]) == (200, 1)
    await discord.wait_for_delivered(1)


async def test_sighup_applies_server_limits_at_once_and_names_what_waits_for_a_restart(
    tmp_path: Path, processes: RelayProcesses, discord: FakeDiscord
) -> None:
    config = write_config(tmp_path / "relay.yaml", discord.url())
    relay = await processes.start(config)
    body = event_body(message="a body of a few hundred bytes")
    config.write_text(
        config.read_text()
        .replace("port: 0,", "port: 0, max_body_bytes: 100, max_connections: 50,")
        .replace('relay.db" }', 'relay.db", retention: 1d }')
    )
    await reload(relay, "reloaded")
    assert (
        "server.max_connections, store.retention change only on restart; the rest is reloaded"
    ) in relay.log()
    status, answer = await post(relay, body)
    assert (status, answer) == (413, {"error": "body is larger than 100 bytes"})


class GatedDiscord:
    """A Discord webhook that holds every request until the test opens the gate."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.arrived: list[bytes] = []
        self.answered = 0
        self.app = web.Application()
        self.app.router.add_post("/api/webhooks/{id}/{token}", self._handle)
        self.runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        self.arrived.append(await request.read())
        await self.gate.wait()
        self.answered += 1
        return web.json_response({"id": "1"})

    async def start(self) -> str:
        self.runner, port = await serve_locally(self.app)
        return f"http://127.0.0.1:{port}/api/webhooks/1/tok"

    async def close(self) -> None:
        self.gate.set()
        if self.runner is not None:
            await self.runner.cleanup()


async def test_sigterm_drains_finishes_in_flight_sends_and_exits_0(
    tmp_path: Path, processes: RelayProcesses
) -> None:
    gated = GatedDiscord()
    url = await gated.start()
    try:
        relay = await processes.start(write_config(tmp_path / "relay.yaml", url))
        assert (await post(relay, event_body(message="in flight")))[0] == 200
        await wait_until("the send to be in flight", lambda: len(gated.arrived) == 1, 10)

        relay.popen.send_signal(signal.SIGTERM)
        await wait_until("shutdown to start", lambda: "shutting down" in relay.log(), 10)
        assert await status_of(relay.base_url + "/readyz") == 503
        # bitHuman would not send it again: it is taken and kept, not refused.
        status, answer = await post(relay, event_body(message="while draining", session="d"))
        assert (status, answer["status"]) == (200, "accepted")

        gated.gate.set()
        assert await relay.wait_exit() == 0
        assert gated.answered == 1
        assert "while draining" not in b"".join(gated.arrived).decode()

        await processes.start(write_config(tmp_path / "relay.yaml", url))  # the next process
        await wait_until("the next process to send it", lambda: gated.answered == 2, 10)
        assert "while draining" in gated.arrived[-1].decode()
    finally:
        await gated.close()


# `relay serve` whose console start waits until a file exists: it listens meanwhile.
_SLOW_START = """
import asyncio, pathlib, sys
from relay import serve
from relay.cli import main

started = serve._start_console

async def _when_told(*args, **kwargs):
    while not pathlib.Path(sys.argv[1]).exists():
        await asyncio.sleep(0.01)
    return await started(*args, **kwargs)

serve._start_console = _when_told
sys.exit(main(["serve", "-c", sys.argv[2]]))
"""


async def test_sigterm_while_still_starting_up_but_listening_drains_and_exits_0(
    tmp_path: Path, discord: FakeDiscord
) -> None:
    """From the moment relay listens, SIGTERM drains it: the signal is not left to its
    default action, which would end relay with requests under way."""
    config = write_config(tmp_path / "relay.yaml", discord.url())
    go = tmp_path / "go"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _SLOW_START, str(go), str(config),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        log = b""
        async with asyncio.timeout(20):
            while b"listening on" not in log:
                log += await process.stderr.readline()
        process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.2)  # the signal is handled as it lands, before the start ends
        go.touch()
        async with asyncio.timeout(20):
            log += await process.stderr.read()
            assert await process.wait() == 0, log.decode()
        assert b"shutting down" in log
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_sighup_while_a_send_is_in_flight_loses_nothing_and_sends_nothing_twice(
    tmp_path: Path, processes: RelayProcesses
) -> None:
    gated = GatedDiscord()
    url = await gated.start()
    try:
        config = write_config(tmp_path / "relay.yaml", url)
        relay = await processes.start(config)
        assert (await post(relay, event_body(message="in flight", session="a")))[0] == 200
        assert (await post(relay, event_body(message="queued", session="b")))[0] == 200
        await wait_until("a send to be in flight", lambda: len(gated.arrived) >= 1, 10)

        write_config(config, url, when="{ role: user }")  # a valid change: reloaded whole
        await reload(relay, "reloaded")
        gated.gate.set()
        await wait_until("both events to be delivered", lambda: gated.answered >= 2, 10)
        await asyncio.sleep(0.5)  # a repeat would come within this
        sent = [json.loads(body)["embeds"][0]["description"] for body in gated.arrived]
        assert sorted(sent) == ["in flight", "queued"]
        assert relay.popen.poll() is None
    finally:
        await gated.close()


async def test_sigterm_with_a_send_hanging_then_the_next_start_sends_what_was_left(
    tmp_path: Path, processes: RelayProcesses, discord: FakeDiscord
) -> None:
    """A send on the wire is not cut off by the shutdown's time (2 s): it ends at its own
    timeout (3 s), a failed attempt to retry, and relay exits; not after the 60 s hang."""
    discord.set_mode("hang")
    config = write_config(tmp_path / "relay.yaml", discord.url(), send_timeout="3s")
    relay = await processes.start(config)
    assert (await post(relay, event_body(message="left over")))[0] == 200
    await discord.wait_for_requests(1)
    assert await relay.terminate() == 0
    assert "timed out after 3s" in relay.log()
    assert discord.delivered == []

    discord.up()
    await processes.start(config)
    delivered = await discord.wait_for_delivered(1)
    assert "left over" in delivered[0].description()


async def test_json_logs_carry_event_id_and_destination(
    tmp_path: Path, processes: RelayProcesses, discord: FakeDiscord, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELAY_LOG_FORMAT", "json")
    monkeypatch.setenv("RELAY_LOG_LEVEL", "debug")
    relay = await processes.start(write_config(tmp_path / "relay.yaml", discord.url()))
    relay.path = "/webhook"  # the port parser reads text logs; in JSON the path ends in `"}`
    body = event_body(message="logged")
    assert (await post(relay, body))[0] == 200
    await discord.wait_for_delivered(1)
    await wait_until("the delivery log line", lambda: "delivered" in relay.log(), 10)
    lines = [json.loads(line) for line in relay.log().splitlines() if line.strip()]
    accepted = [e for e in lines if e["message"].startswith("accepted")]
    delivered = [e for e in lines if e["message"].startswith("delivered")]
    assert accepted[0]["event_id"] == _id(body)
    assert delivered[0]["event_id"] == _id(body)
    assert delivered[0]["destination"] == "team"
    assert {"time", "level", "logger", "message"} <= set(lines[0])


async def test_dead_letters_are_listed_with_their_reason_and_replayed(
    tmp_path: Path, processes: RelayProcesses, discord: FakeDiscord
) -> None:
    config = write_config(tmp_path / "relay.yaml", discord.url())
    relay = await processes.start(config)
    discord.script(unknown_webhook())
    assert (await post(relay, event_body(message="first")))[0] == 200
    await wait_until("the dead letter", lambda: "dead-lettered" in relay.log(), 10)

    status, out = await run_cli("deliveries", "-c", str(config), "--status", "dead")
    assert status == 0
    rows = out.splitlines()
    assert rows[0].split() == ["ID", "DESTINATION", "STATUS", "ATTEMPTS", "AGE", "LAST", "ERROR"]
    assert len(rows) == 2
    assert rows[1].split()[1:4] == ["team", "dead", "1"]
    assert rows[1].endswith("Discord answered 404: Unknown Webhook (code 10015)")

    status, out = await run_cli("replay", "-c", str(config), "--dead")
    assert (status, out) == (0, "requeued 1 dead delivery\n")
    delivered = await discord.wait_for_delivered(1)
    assert "first" in delivered[0].description()

    async def recorded_as_sent() -> bool:
        _, out = await run_cli("deliveries", "-c", str(config), "--status", "sent")
        return len(out.splitlines()) == 2

    await wait_until("the replayed delivery to be recorded as sent", recorded_as_sent, 20)


def _id(body: bytes) -> str:
    import hashlib

    return hashlib.sha256(body).hexdigest()


SECRETS = {
    "webhook secret": "whsec-do-not-log-1",
    "header value": "bearer-do-not-log-2",
    "discord token": "discordtoken-do-not-log-3",
    "slack webhook token": "slackhooktoken-do-not-log-4",
    "slack bot token": "xoxb-do-not-log-5",
    "smtp password": "smtp-do-not-log-6",
}
watch(*SECRETS.values())


async def test_no_secret_reaches_the_log(
    tmp_path: Path, processes: RelayProcesses, discord: FakeDiscord
) -> None:
    discord.down()
    config = tmp_path / "relay.yaml"
    text = f"""
server: {{ port: 0 }}
verify:
  secrets: ["{SECRETS["webhook secret"]}"]
  headers: {{ Authorization: "Bearer {SECRETS["header value"]}" }}
store: {{ url: "sqlite:{tmp_path / "relay.db"}" }}
delivery: {{ max_attempts: 2, backoff: {{ first: 50ms, max: 100ms }} }}
destinations:
  discord: {{ type: discord, webhook_url: "{discord.url(token=SECRETS["discord token"])}" }}
  hook:
    type: slack
    webhook_url: "http://127.0.0.1:9/services/T1/B1/{SECRETS["slack webhook token"]}"
  bot:
    type: slack
    token: "{SECRETS["slack bot token"]}"
    channel: "#c"
    api_url: "http://127.0.0.1:9/api/"
  mail:
    type: email
    smtp: {{ host: 127.0.0.1, port: 9, username: relay, password: "{SECRETS["smtp password"]}" }}
    from: relay@example.com
    to: [ops@example.com]
rules:
  - name: all
    send_to: [discord, hook, bot, mail]
"""
    config.write_text(text)
    relay = await processes.start(config)
    body = event_body(message="secret test")
    headers = signed_headers(body, SECRETS["webhook secret"])
    async with aiohttp.ClientSession() as http:
        good = {**headers, "Authorization": f"Bearer {SECRETS['header value']}"}
        async with http.post(relay.webhook_url, data=body, headers=good) as response:
            assert response.status == 200
        for bad in (headers, {**good, "X-bitHuman-Signature": "sha256=00"}):
            async with http.post(relay.webhook_url, data=body + b" ", headers=bad) as response:
                assert response.status == 401
                answer = await response.text()
                assert all(secret not in answer for secret in SECRETS.values())
    await wait_until(
        "every destination to be dead-lettered",
        lambda: relay.log().count("dead-lettered") >= 4,
        20,
    )
    # An invalid reload that names the secrets in its errors' neighbourhood.
    config.write_text(text.replace("port: 0", "port: -1").replace("send_to", "sendto"))
    await reload(relay, "reload rejected")
    assert await relay.terminate() == 0
    log = relay.log()
    assert "Discord answered 503" in log and "cannot connect to Slack" in log
    leaked = [name for name, secret in SECRETS.items() if secret in log]
    assert leaked == [], log


async def test_relay_serves_https_itself_when_server_tls_is_set(
    tmp_path: Path, processes: RelayProcesses, discord: FakeDiscord
) -> None:
    pair = self_signed_cert(tmp_path)
    assert pair is not None, "openssl is needed to make a test certificate"
    cert, key = pair
    config = write_config(tmp_path / "relay.yaml", discord.url())
    text = config.read_text().replace(
        "server: { port: 0,",
        f'server: {{ tls: {{ cert_file: "{cert}", key_file: "{key}" }}, port: 0,',
    )
    config.write_text(text)
    relay = await processes.start(config)
    assert relay.webhook_url.startswith("https://127.0.0.1:")
    trust = ssl.create_default_context(cafile=str(cert))
    url = relay.webhook_url
    body = event_body(message="over tls")
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, data=body, headers=signed_headers(body), ssl=trust) as response,
    ):
        assert response.status == 200
    delivered = await discord.wait_for_delivered(1)
    assert "over tls" in delivered[0].description()
