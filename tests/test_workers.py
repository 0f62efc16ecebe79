"""`server.workers`: several processes serving one port (relay/workers.py).

Real `relay serve` processes with two workers each, on a SQLite file; a real fake Discord.
Each event must be delivered exactly once whichever worker took it, and signals, reload,
drain and /readyz must behave as they do for one process.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
from collections import Counter
from pathlib import Path

import aiohttp

from tests.support.fake_discord import FakeDiscord, wait_until
from tests.support.processes import RelayProcess, RelayProcesses, write_discord_config
from tests.support.relay import event_body, signed_headers
from tests.support.smtp import free_port

WORKERS = 2
SERVING = re.compile(r"(\d+) workers serving, pids ([\d, ]+)")


def write_config(
    tmp_path: Path, discord: FakeDiscord, *, drain_grace: str = "0s", lease: str = "10s"
) -> Path:
    return write_discord_config(
        tmp_path, discord, port=free_port(), workers=WORKERS, drain_grace=drain_grace, lease=lease
    )


async def start(
    processes: RelayProcesses, config: Path, env: dict[str, str] | None = None
) -> RelayProcess:
    """Start relay and wait until every worker listens, not only the first."""
    relay = await processes.start(config, env=env)
    await wait_until(
        lambda: f"{WORKERS} workers to serve:\n{relay.log()}",
        lambda: SERVING.search(relay.log()) is not None,
        20,
    )
    return relay


async def post_each_on_its_own_connection(
    relay: RelayProcess, bodies: list[bytes]
) -> list[tuple[int, dict[str, object]]]:
    """POST each body on a new connection: the kernel picks a worker per connection."""
    connector = aiohttp.TCPConnector(force_close=True)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

        async def post(body: bytes) -> tuple[int, dict[str, object]]:
            headers = signed_headers(body)
            async with http.post(relay.webhook_url, data=body, headers=headers) as answer:
                return answer.status, await answer.json()

        return await asyncio.gather(*(post(body) for body in bodies))


async def readyz_statuses(relay: RelayProcess, count: int) -> set[int]:
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def status() -> int:
            async with http.get(relay.base_url + "/readyz") as answer:
                return answer.status

        return set(await asyncio.gather(*(status() for _ in range(count))))


def worker_pids(relay: RelayProcess) -> list[int]:
    match = SERVING.search(relay.log())
    assert match is not None, relay.log()
    assert int(match.group(1)) == WORKERS
    return [int(pid) for pid in match.group(2).split(", ")]


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


async def test_two_workers_share_the_port_and_deliver_each_event_exactly_once(
    tmp_path: Path, processes: RelayProcesses, discord: FakeDiscord
) -> None:
    relay = await start(processes, write_config(tmp_path, discord), {"RELAY_LOG_LEVEL": "debug"})
    texts = [f"message {n:02d}" for n in range(60)]
    bodies = [event_body(message=text, session=f"s{n % 9}") for n, text in enumerate(texts)]
    answers = await post_each_on_its_own_connection(relay, bodies)
    assert [(status, answer["status"]) for status, answer in answers] == [(200, "accepted")] * 60

    await discord.wait_for_delivered(60)
    await asyncio.sleep(0.5)  # a second delivery of any of them would come within this
    assert Counter(discord.delivered_texts()) == Counter(texts)
    accepted_by = Counter(re.findall(r"accepted chat\.push .*worker=(\d)\]", relay.log()))
    assert sorted(accepted_by) == ["1", "2"], accepted_by  # both workers took requests
    assert sum(accepted_by.values()) == 60


async def test_metrics_count_every_worker_whichever_answers(
    tmp_path: Path, processes: RelayProcesses, discord: FakeDiscord
) -> None:
    relay = await start(processes, write_config(tmp_path, discord))
    bodies = [event_body(message=f"m{n}", session=f"s{n}") for n in range(20)]
    await post_each_on_its_own_connection(relay, bodies)
    await discord.wait_for_delivered(20)
    line = 'relay_events_total{event_type="chat.push",outcome="accepted"} 20.0'
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:
        for _ in range(6):  # each scrape on a new connection, so both workers answer some
            async with http.get(relay.base_url + "/metrics") as answer:
                assert line in (await answer.text()).splitlines()


async def test_sighup_reloads_every_worker(
    tmp_path: Path, processes: RelayProcesses, discord: FakeDiscord
) -> None:
    config = write_config(tmp_path, discord)
    relay = await start(processes, config)
    config.write_text(
        config.read_text().replace(
            "    send_to: [community]", "    when: { role: agent }\n    send_to: [community]"
        )
    )
    relay.popen.send_signal(signal.SIGHUP)
    await wait_until(
        lambda: f"both workers to reload:\n{relay.log()}",
        lambda: relay.log().count("reloaded") == WORKERS,
        10,
    )
    bodies = [event_body(message=f"visitor {n}", session=f"s{n}") for n in range(20)]
    answers = await post_each_on_its_own_connection(relay, bodies)
    assert {(status, answer["deliveries"]) for status, answer in answers} == {(200, 0)}
    agent = json.dumps(
        {
            "agent_id": "agent_abc123",
            "event_type": "chat.push",
            "data": {"role": "agent", "message": "the agent", "session_id": "s1"},
            "timestamp": 1705312285.0,
        }
    ).encode()
    assert (await post_each_on_its_own_connection(relay, [agent]))[0][1]["deliveries"] == 1
    await discord.wait_for_delivered(1)
    assert discord.delivered_texts() == ["the agent"]


async def test_sigterm_drains_every_worker_then_exits_0_and_loses_nothing(
    tmp_path: Path, processes: RelayProcesses, discord: FakeDiscord
) -> None:
    config = write_config(tmp_path, discord, drain_grace="3s", lease="2s")
    relay = await start(processes, config)
    discord.down()  # what is accepted now stays pending
    relay.popen.send_signal(signal.SIGTERM)
    await wait_until(
        lambda: f"both workers to start draining:\n{relay.log()}",
        lambda: relay.log().count("shutting down") == WORKERS,
        10,
    )
    # Every worker answers /readyz 503 at once, and still takes and stores events.
    assert await readyz_statuses(relay, 10) == {503}
    bodies = [event_body(message=f"while draining {n}", session=f"d{n}") for n in range(10)]
    answers = await post_each_on_its_own_connection(relay, bodies)
    assert {(status, answer["status"]) for status, answer in answers} == {(200, "accepted")}
    assert await relay.wait_exit() == 0
    assert "stopping 2 workers" in relay.log()

    discord.up()
    await processes.start(config)  # the next relay sends what was left
    await discord.wait_for_delivered(10)
    await asyncio.sleep(0.5)
    assert sorted(discord.delivered_texts()) == sorted(f"while draining {n}" for n in range(10))


async def test_a_worker_that_dies_is_started_again(
    tmp_path: Path, processes: RelayProcesses, discord: FakeDiscord
) -> None:
    relay = await start(processes, write_config(tmp_path, discord))
    first, second = worker_pids(relay)
    os.kill(first, signal.SIGKILL)
    await wait_until(
        lambda: f"worker 1 to be started again:\n{relay.log()}",
        lambda: "worker 1 started again" in relay.log(),
        15,
    )
    assert f"worker 1 (pid {first}) exited with -9; starting another in 1 s" in relay.log()
    assert running(second)
    bodies = [event_body(message=f"after {n}", session=f"s{n}") for n in range(20)]
    answers = await post_each_on_its_own_connection(relay, bodies)
    assert {status for status, _ in answers} == {200}
    await discord.wait_for_delivered(20)
    assert sorted(discord.delivered_texts()) == sorted(f"after {n}" for n in range(20))


async def test_workers_stop_when_their_supervisor_is_killed(
    tmp_path: Path, processes: RelayProcesses, discord: FakeDiscord
) -> None:
    config = write_config(tmp_path, discord)
    relay = await start(processes, config)
    pids = worker_pids(relay)
    relay.kill()
    await wait_until(
        lambda: f"workers {pids} to stop:\n{relay.log()}",
        lambda: not any(running(pid) for pid in pids),
        15,
    )
    assert relay.log().count("relay.serve: stopped") == WORKERS  # each drained, not killed
    # The port is free for the next relay, and no old worker serves beside it.
    await processes.start(config)
