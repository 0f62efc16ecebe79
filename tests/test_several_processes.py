"""Several `relay serve` processes on one store (SPEC 5): each delivery is sent once, each
conversation in order, and when a process dies the others take over its claims.

Real processes on a real store they share: two on one SQLite file, three on one
redis-server; a fake Discord on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from tests.support.fake_discord import FakeDiscord, wait_until
from tests.support.fake_slack import FakeSlack, rate_limited
from tests.support.processes import RelayProcess, RelayProcesses, write_discord_config
from tests.support.relay import SECRET, event_body, signed_headers

SESSIONS = 50
PER_SESSION = 20  # 1,000 events in all
LEASE_S = 2.0
IDLE_MARGIN_S = 2.0  # the survivor notices an ended lease when its lane next looks


def write_config(tmp_path: Path, discord: FakeDiscord, store_url: str) -> Path:
    return write_discord_config(
        tmp_path, discord, store_url=store_url, shutdown_timeout="5s", lease=f"{LEASE_S:g}s"
    )


def message(session: int, index: int) -> str:
    return f"s{session:02d}m{index:02d}"


async def post(http: aiohttp.ClientSession, relay: RelayProcess, text: str, session: str) -> str:
    """Post one chat message; return the answer's status (accepted or duplicate)."""
    body = event_body(message=text, session=session)
    async with http.post(relay.webhook_url, data=body, headers=signed_headers(body)) as answer:
        document = json.loads(await answer.text())
        assert answer.status == 200, document
        return str(document["status"])


async def post_conversations(relays: list[RelayProcess]) -> Counter[str]:
    """Post SESSIONS conversations at once, each message by message, round-robin over the
    processes: a conversation's messages are accepted in the order they were posted."""
    async with aiohttp.ClientSession() as http:

        async def conversation(session: int) -> list[str]:
            return [
                await post(
                    http, relays[(session + i) % len(relays)], message(session, i), f"c{session}"
                )
                for i in range(PER_SESSION)
            ]

        answers = await asyncio.gather(*(conversation(s) for s in range(SESSIONS)))
    return Counter(a for per_session in answers for a in per_session)


def assert_each_once_in_order(discord: FakeDiscord) -> None:
    texts = discord.delivered_texts()
    counts = Counter(texts)
    assert [t for t, n in counts.items() if n > 1] == [], "sent more than once"
    assert len(counts) == SESSIONS * PER_SESSION
    for session in range(SESSIONS):
        mine = [t for t in texts if t.startswith(f"s{session:02d}m")]
        assert mine == [message(session, i) for i in range(PER_SESSION)], f"session {session}"


@pytest.fixture(params=["sqlite", "redis"])
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, int]:
    """The store the processes share, and how many processes share it."""
    if request.param == "sqlite":
        return f"sqlite:{tmp_path / 'shared.db'}", 2
    return str(request.getfixturevalue("redis_url")), 3


async def test_processes_on_one_store_send_each_event_once_in_order(
    tmp_path: Path, processes: RelayProcesses, discord: FakeDiscord, shared_store: tuple[str, int]
) -> None:
    url, count = shared_store
    config = write_config(tmp_path, discord, url)
    relays = [await processes.start(config) for _ in range(count)]

    answers = await post_conversations(relays)

    assert answers == {"accepted": SESSIONS * PER_SESSION}
    await discord.wait_for_delivered(SESSIONS * PER_SESSION, timeout_s=60.0)
    await asyncio.sleep(0.5)  # a second send would come within this
    assert_each_once_in_order(discord)
    for relay in relays:
        assert await relay.terminate() == 0


async def test_when_a_process_is_killed_another_sends_what_it_held(
    tmp_path: Path, processes: RelayProcesses, discord: FakeDiscord, shared_store: tuple[str, int]
) -> None:
    config = write_config(tmp_path, discord, shared_store[0])
    doomed = await processes.start(config)
    survivor = await processes.start(config)
    discord.set_mode("hang")  # every send stays in flight, held by whoever claimed it
    async with aiohttp.ClientSession() as http:
        for n in range(8):
            relay = (doomed, survivor)[n % 2]
            assert await post(http, relay, f"held{n}", f"k{n}") == "accepted"
    await discord.wait_for_requests(8)  # each process holds 4 sends (its concurrency)

    doomed.kill()
    killed_at = time.monotonic()
    discord.up()  # the hanging requests answer 503: the survivor retries its own at once
    await discord.wait_for_delivered(8, timeout_s=LEASE_S + 10.0)
    taken_over_s = time.monotonic() - killed_at

    assert sorted(set(discord.delivered_texts())) == [f"held{n}" for n in range(8)]
    assert len(discord.delivered) == 8, "a delivery was sent twice"
    print(f"\nsurvivor sent the killed process's deliveries {taken_over_s:.2f} s after the kill")
    assert taken_over_s <= LEASE_S + IDLE_MARGIN_S
    assert await survivor.terminate() == 0


async def test_a_replica_killed_under_load_loses_nothing_and_repeats_only_its_sends(
    tmp_path: Path, processes: RelayProcesses, discord: FakeDiscord, redis_url: str
) -> None:
    """kill -9 one of three replicas on one Redis while events pour in (SPEC 5)."""
    discord.delay_s = 0.2  # each replica has sends in flight when the kill lands
    config = write_config(tmp_path, discord, redis_url)
    replicas = [await processes.start(config) for _ in range(3)]
    doomed = replicas[0]
    events, statuses = 600, Counter[str]()
    answered: list[str] = []

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:

        async def send(n: int) -> None:
            text = f"load{n:04d}"
            relay = replicas[n % 3]
            try:
                statuses[await post(http, relay, text, f"k{n % 40}")] += 1
                answered.append(text)
            except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError):
                statuses["no answer"] += 1  # posted to the killed replica as it died

        async def kill_midway() -> float:
            await wait_until(
                "a third of the events answered", lambda: len(answered) >= events // 3, 30
            )
            doomed.kill()
            return time.monotonic()

        killer = asyncio.create_task(kill_midway())
        for start in range(0, events, 30):  # about 30 at a time, as a burst of traffic
            await asyncio.gather(*(send(n) for n in range(start, min(start + 30, events))))
        killed_at = await killer

    in_flight_at_kill = [r for r in discord.requests if r.at <= killed_at < (r.answered_at or 1e18)]
    await discord.wait_for_delivered(len(set(answered)), timeout_s=60.0)
    await asyncio.sleep(LEASE_S + 1.0)  # a repeat would come within a lease
    counts = Counter(discord.delivered_texts())
    missing = set(answered) - set(counts)
    duplicates = {text: n for text, n in counts.items() if n > 1}
    last_repeat = max(
        (r.at for r in discord.requests if r.description() in duplicates), default=killed_at
    )
    figures = {
        "events": events,
        "answered_200": len(answered),
        "client_saw_no_answer": statuses["no answer"],
        "sends_in_flight_at_kill": len(in_flight_at_kill),
        "duplicates": len(duplicates),
        "repeats_done_after_kill_s": round(last_repeat - killed_at, 2),
        "lease_s": LEASE_S,
    }
    print(f"\nreplica killed under load: {figures}")
    assert missing == set(), f"answered 200 but never delivered: {sorted(missing)[:5]}"
    assert len(duplicates) <= 4, figures  # the killed replica's concurrency
    assert last_repeat - killed_at <= LEASE_S + IDLE_MARGIN_S, figures


def write_slack_config(tmp_path: Path, slack: FakeSlack, store_url: str) -> Path:
    path = tmp_path / "slack.yaml"
    path.write_text(
        f"""\
server: {{ host: 127.0.0.1, port: 0 }}
verify: {{ secrets: ["{SECRET}"] }}
store: {{ url: "{store_url}" }}
delivery: {{ backoff: {{ first: 50ms, max: 200ms }}, lease: {LEASE_S:g}s }}
destinations:
  ops: {{ type: slack, webhook_url: "{slack.webhook_url()}" }}   # 1 a second, bursts of 3
rules: [ {{ name: all, send_to: [ops] }} ]
""",
        encoding="utf-8",
    )
    return path


async def test_replicas_share_one_slack_webhooks_pace_and_its_429_pauses(
    tmp_path: Path, processes: RelayProcesses, slack: FakeSlack, redis_url: str
) -> None:
    replicas = [
        await processes.start(write_slack_config(tmp_path, slack, redis_url)) for _ in range(3)
    ]
    async with aiohttp.ClientSession() as http:
        # A 429 from the webhook pauses every replica's sends to it.
        slack.script(rate_limited("2"))
        assert await post(http, replicas[0], "first", "p0") == "accepted"
        [limited] = await slack.wait_for_requests(1)
        for n in (1, 2):
            assert await post(http, replicas[n], f"paused{n}", f"p{n}") == "accepted"
        await slack.wait_for_delivered(3, timeout_s=10)
        after = slack.requests[1:]
        assert limited.status == 429
        assert all(r.at - limited.at >= 1.9 for r in after), [r.at - limited.at for r in after]

        await asyncio.sleep(3.5)  # the bucket refills: a burst of 3 again
        start = len(slack.requests)
        for n in range(7):
            assert await post(http, replicas[n % 3], f"paced{n}", f"q{n}") == "accepted"
        await slack.wait_for_delivered(10, timeout_s=20)

    paced = slack.requests[start:]
    span_s = paced[-1].at - paced[0].at
    print(f"\n7 sends from 3 replicas to one webhook took {span_s:.2f} s (burst 3, then 1/s)")
    # Each replica alone would send all 7 within a second (its own burst of 3 and more);
    # shared, the 4 after the burst come about a second apart.
    assert span_s >= 3.5, [round(r.at - paced[0].at, 2) for r in paced]
    assert len(paced) == 7
