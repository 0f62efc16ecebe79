"""Redis dies under relay (SPEC 5): events get 503 at once, /readyz says why, and once
Redis is back on its data directory relay carries on by itself, losing nothing it answered
200 for.

A real redis-server (AOF, appendfsync always) killed with SIGKILL and restarted; a real
`relay serve` process; a fake Discord.
"""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp

from tests.support.fake_discord import FakeDiscord, wait_until
from tests.support.processes import RelayProcess, RelayProcesses
from tests.support.redis_server import RedisServer
from tests.support.relay import event_body, signed_headers
from tests.test_several_processes import write_config

ANSWER_WITHIN_S = 3.0  # a 503 while Redis is down must come this fast, never hang


async def post(http: aiohttp.ClientSession, relay: RelayProcess, text: str) -> tuple[int, str]:
    body = event_body(message=text, session=text)
    async with http.post(relay.webhook_url, data=body, headers=signed_headers(body)) as answer:
        return answer.status, await answer.text()


async def test_redis_killed_gives_503_then_relay_recovers_by_itself(
    tmp_path: Path, processes: RelayProcesses, discord: FakeDiscord, redis_server: RedisServer
) -> None:
    relay = await processes.start(write_config(tmp_path, discord, redis_server.url))
    timeout = aiohttp.ClientTimeout(total=ANSWER_WITHIN_S + 5)
    accepted: list[str] = []
    async with aiohttp.ClientSession(timeout=timeout) as http:
        for n in range(5):
            assert (await post(http, relay, f"before{n}"))[0] == 200
            accepted.append(f"before{n}")

        redis_server.kill()
        for n in range(5):
            started = time.monotonic()
            status, text = await post(http, relay, f"down{n}")
            took_s = time.monotonic() - started
            assert status == 503, text
            assert text == '{"error": "store unavailable, retry later"}'
            assert took_s < ANSWER_WITHIN_S, f"a 503 took {took_s:.2f} s"
        async with http.get(relay.base_url + "/readyz") as ready:
            reason = await ready.json()
        assert ready.status == 503
        assert reason["status"] == "store unavailable"
        assert f"127.0.0.1:{redis_server.port}" in reason["error"]

        redis_server.start()  # the same port and data directory

        async def accepted_again() -> bool:
            return (await post(http, relay, "after0"))[0] == 200

        await wait_until("relay to accept events again", accepted_again, 10.0)
        accepted.append("after0")
        for n in range(1, 5):
            assert (await post(http, relay, f"after{n}"))[0] == 200
            accepted.append(f"after{n}")

    await discord.wait_for_delivered(len(accepted), timeout_s=30.0)
    assert set(discord.delivered_texts()) == set(accepted)
    assert relay.popen.poll() is None, "relay restarted or died"
