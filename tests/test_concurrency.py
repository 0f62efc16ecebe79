"""delivery.concurrency: several conversations sent at once to one destination, each
conversation still one send at a time and in order.

The destination is a fake Discord on 127.0.0.1 that takes 100 ms per answer, so the drain
time is the destination's, not relay's CPU: the ratio of the two runs below is a property
of the design, stable on a busy machine.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

from tests.conftest import RelayClientFactory
from tests.support.fake_discord import FakeDiscord, Received
from tests.test_delivery import discord_config, post_event

SEND_S = 0.1
SESSIONS = 16


async def drain_time(
    relay_client: RelayClientFactory, discord: FakeDiscord, tmp_path: Path, concurrency: int
) -> float:
    """Post one event for each of SESSIONS conversations; return how long until all arrived."""
    config = discord_config(discord, concurrency=concurrency)
    config += f"store:\n  url: sqlite:{tmp_path / f'concurrency-{concurrency}.db'}\n"
    client = await relay_client(config)
    # Counted before posting: the first sends may arrive while the rest are posted.
    before = len(discord.delivered)
    started = time.monotonic()
    for n in range(SESSIONS):
        await post_event(client, message=f"c{concurrency}-m{n}", session=f"c{concurrency}-s{n}")
    await discord.wait_for_delivered(before + SESSIONS, timeout_s=30.0)
    elapsed = time.monotonic() - started
    await client.close()  # its worker stops before the next run starts
    return elapsed


async def test_four_at_once_drain_about_four_times_faster_than_one(
    relay_client: RelayClientFactory, discord: FakeDiscord, tmp_path: Path
) -> None:
    discord.delay_s = SEND_S
    one = await drain_time(relay_client, discord, tmp_path, concurrency=1)
    assert discord.max_in_flight == 1
    discord.max_in_flight = 0
    four = await drain_time(relay_client, discord, tmp_path, concurrency=4)
    assert discord.max_in_flight == 4
    print(f"\ndrain of {SESSIONS} sends at {SEND_S * 1000:.0f} ms each:"
          f" concurrency 1 {one:.2f} s, 4 {four:.2f} s, ratio {one / four:.2f}")  # fmt: skip
    assert one >= SESSIONS * SEND_S  # one at a time: no send overlapped another
    assert one / four >= 2.5, (one, four)  # 4 in the ideal; posting and commits take some


def by_session(received: list[Received]) -> dict[str, list[Received]]:
    sessions: dict[str, list[Received]] = {}
    for request in received:
        session = request.description()[0]  # messages are "a0", "b3": session, then index
        sessions.setdefault(session, []).append(request)
    return sessions


async def test_each_conversation_stays_in_order_and_one_send_at_a_time(
    relay_client: RelayClientFactory, discord: FakeDiscord
) -> None:
    discord.delay_s = 0.05
    client = await relay_client(discord_config(discord, concurrency=4))
    for n in range(6):  # interleaved: a0 b0 c0 d0 a1 b1 ...
        for session in "abcd":
            await post_event(client, message=f"{session}{n}", session=session)
    delivered = await discord.wait_for_delivered(24, timeout_s=30.0)

    assert discord.max_in_flight == 4
    for session, requests in by_session(delivered).items():
        assert [r.description() for r in requests] == [f"{session}{n}" for n in range(6)]
        for earlier, later in itertools.pairwise(requests):
            assert later.at >= earlier.answered_at, f"{session}: two sends overlapped"
