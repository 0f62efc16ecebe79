"""Sends in flight (SPEC 5 and 7): one is never repeated because its lease ran out while
it went on, and a shutdown leaves nothing of them running.

The worker runs in the test's loop on a real SQLite file, sending to a real fake Discord
whose answers are slow on purpose; a second worker on the same file plays another relay
process.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from relay.config import Config, load_text
from relay.delivery import DeliveryWorker
from relay.delivery import lane as lanes
from relay.delivery import worker as workers
from relay.senders import SenderContext, build_senders
from relay.store import Delivery, NewDelivery, NewEvent, SentRecord, StoreUnavailable
from relay.store.base import Claimed
from relay.store.sqlite import SqliteStore
from tests.support.fake_discord import FakeDiscord, Reply, wait_until
from tests.support.fake_slack import BOT_TOKEN, FakeSlack
from tests.support.relay import event_body

LEASE_S = 1.0


class JumpingClock:
    """The wall clock, which the test can move forward at once, as an NTP step does."""

    def __init__(self) -> None:
        self.ahead_s = 0.0

    def __call__(self) -> float:
        return time.time() + self.ahead_s


def config(discord: FakeDiscord, timeout_s: float = 30.0) -> Config:
    return load_text(
        f"""
delivery: {{ lease: {LEASE_S:g}s, concurrency: 4, timeout: {timeout_s:g}s }}
destinations:
  community: {{ type: discord, webhook_url: "{discord.url()}" }}
rules:
  - {{ name: all, send_to: [community] }}
""",
        "relay.yaml",
        {},
    )


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def open_store(path: Path) -> SqliteStore:
    store = SqliteStore(str(path))
    await store.open()
    return store


async def accept(
    store: SqliteStore, message: str, session: str = "s1", to: str = "community", rule: str = "all"
) -> None:
    body = event_body(message=message, session=session)
    await store.accept(
        NewEvent(f"e-{message}", body, time.time()),
        [NewDelivery(to, rule, None, session)],
        dedupe_window_s=60,
    )


def worker(
    store: SqliteStore,
    discord: FakeDiscord,
    http: aiohttp.ClientSession,
    clock: JumpingClock | None = None,
    timeout_s: float = 30.0,
) -> DeliveryWorker:
    settings = config(discord, timeout_s)
    senders = build_senders(settings.destinations, SenderContext(http=http))
    return DeliveryWorker(store, settings, senders, clock=clock or time.time)


@dataclass
class Process:
    store: SqliteStore
    relay: DeliveryWorker


@contextlib.asynccontextmanager
async def two_processes(
    tmp_path: Path,
    discord: FakeDiscord,
    http: aiohttp.ClientSession,
    second_clock: JumpingClock | None = None,
) -> AsyncIterator[tuple[Process, Process]]:
    """Two relay workers on one SQLite file, not started; both stopped and closed after."""
    processes = []
    for clock in (None, second_clock):
        store = await open_store(tmp_path / "shared.db")
        processes.append(Process(store, worker(store, discord, http, clock)))
    try:
        yield processes[0], processes[1]
    finally:
        for process in processes:
            await process.relay.stop(5.0)
            await process.store.close()


@contextlib.asynccontextmanager
async def serving(
    store: SqliteStore, relay: DeliveryWorker, stop_s: float = 5.0
) -> AsyncIterator[None]:
    """Stop the worker, then close its store, however the block ends."""
    try:
        yield
    finally:
        await relay.stop(stop_s)
        await store.close()


async def test_a_send_whose_lease_ran_out_is_not_claimed_and_sent_again_by_its_own_process(
    tmp_path: Path, discord: FakeDiscord, http: aiohttp.ClientSession
) -> None:
    discord.delay_s = 2.0
    store = await open_store(tmp_path / "relay.db")
    clock = JumpingClock()
    relay = worker(store, discord, http, clock)
    async with serving(store, relay):
        await accept(store, "hello")
        relay.start()
        await wait_until("the send to be under way", lambda: discord.in_flight == 1, 5)
        clock.ahead_s = 5 * LEASE_S  # the lease has run out in relay's time...
        relay.wake(["community"])  # ...and the lane claims again before it is renewed
        await discord.wait_for_delivered(1)
        await asyncio.sleep(0.5)
        assert len(discord.requests) == 1
        [delivery] = await store.list_deliveries()
        assert (delivery.status, delivery.attempts) == ("sent", 1)


async def test_a_send_still_going_at_shutdown_keeps_its_lease_so_no_other_process_repeats_it(
    tmp_path: Path, discord: FakeDiscord, http: aiohttp.ClientSession
) -> None:
    discord.delay_s = 3 * LEASE_S
    async with two_processes(tmp_path, discord, http) as (stopping, other):
        await accept(stopping.store, "hello")
        stopping.relay.start()
        await wait_until("the send to be under way", lambda: discord.in_flight == 1, 5)
        other.relay.start()
        await stopping.relay.stop(10.0)  # SIGTERM: the send in flight may finish
        await asyncio.sleep(2 * LEASE_S)  # time for the other process to take it, if it could
        assert len(discord.requests) == 1
        [delivery] = await other.store.list_deliveries()
        assert (delivery.status, delivery.attempts) == ("sent", 1)


async def test_a_send_waiting_its_turn_does_not_go_out_once_another_process_took_its_claim(
    tmp_path: Path,
    discord: FakeDiscord,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The first answer empties Discord's bucket for a while: the next send waits its turn.
    empty = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset-After": str(4 * LEASE_S)}
    discord.script(Reply(200, {"id": "1"}, empty))
    # The other process's clock is ahead: to it, the first one's lease has run out.
    ahead = JumpingClock()
    ahead.ahead_s = 5 * LEASE_S
    async with two_processes(tmp_path, discord, http, ahead) as (waiting, other):
        await accept(waiting.store, "first", session="s1")
        waiting.relay.start()
        await discord.wait_for_delivered(1)
        await accept(waiting.store, "second", session="s2")
        waiting.relay.wake(["community"])
        await wait_until("the first process to claim it", lambda: waiting.relay.in_flight == 1, 5)
        other.relay.start()
        await discord.wait_for_delivered(2)
        await asyncio.sleep(4 * LEASE_S)  # the bucket refilled: the first one's turn came
        assert discord.delivered_texts() == ["first", "second"]
        assert len(discord.requests) == 2
    assert "lost the claim on deliveries [2] to another process" in caplog.messages


class AnswersClaims(SqliteStore):
    """A SQLite store that runs `claimed_some` before it answers a claim that took some."""

    async def claim_or_next_due(
        self, destination: str, now: float, limit: int, *, owner: str, lease_s: float
    ) -> Claimed:
        claimed = await super().claim_or_next_due(
            destination, now, limit, owner=owner, lease_s=lease_s
        )
        if claimed.deliveries:
            await self.claimed_some()
        return claimed

    async def claimed_some(self) -> None:
        pass


class SlowToAnswerClaims(AnswersClaims):
    """A SQLite store that commits a lane's claim at once but answers it only when the
    test says, as a store slow to answer does: meanwhile the claim's lease runs."""

    def __init__(self, path: str, discord: FakeDiscord) -> None:
        super().__init__(path)
        self.claimed = asyncio.Event()
        self.answer = asyncio.Event()
        self._discord = discord
        # Renewals that reached the store after the claim's answer and before its send.
        self.renewed_before_the_send = 0

    async def renew(self, owner: str, ids: Sequence[int], until: float) -> set[int]:
        if self.answer.is_set() and not self._discord.requests:
            self.renewed_before_the_send += 1
        return await super().renew(owner, ids, until)

    async def claimed_some(self) -> None:
        self.claimed.set()
        await self.answer.wait()


async def test_a_claim_answered_after_its_lease_ran_out_is_not_sent_if_another_process_took_it(
    tmp_path: Path,
    discord: FakeDiscord,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A claim whose answer came late has had no renewal: before it is sent, it is renewed,
    and what another process claimed meanwhile is not sent again."""
    slow = SlowToAnswerClaims(str(tmp_path / "shared.db"), discord)
    await slow.open()
    other_store = await open_store(tmp_path / "shared.db")
    clock, ahead = JumpingClock(), JumpingClock()
    ahead.ahead_s = 5 * LEASE_S  # to the other process, the first one's lease has run out
    late, other = worker(slow, discord, http, clock), worker(other_store, discord, http, ahead)
    async with serving(other_store, other), serving(slow, late):
        await accept(slow, "hello")
        late.start()
        await wait_until("the first process's claim", slow.claimed.is_set, 5)
        other.start()
        await discord.wait_for_delivered(1)
        clock.ahead_s = 5 * LEASE_S  # the first process hears of its claim that late
        slow.answer.set()
        await wait_until(
            "the first process to give it up",
            lambda: (
                "delivery 1 was claimed by another process while it waited its turn here;"
                " it is sent from there"
                in caplog.messages
                and late.in_flight == 0
            ),
            5,
        )
    assert len(discord.requests) == 1
    [delivery] = await open_and_list(tmp_path / "shared.db")
    assert (delivery.status, delivery.attempts) == ("sent", 1)


async def test_a_claim_answered_after_its_lease_ran_out_is_renewed_and_sent_if_still_held(
    tmp_path: Path,
    discord: FakeDiscord,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    slow = SlowToAnswerClaims(str(tmp_path / "relay.db"), discord)
    await slow.open()
    clock = JumpingClock()
    relay = worker(slow, discord, http, clock)
    async with serving(slow, relay):
        await accept(slow, "hello")
        relay.start()
        await wait_until("the claim", slow.claimed.is_set, 5)
        clock.ahead_s = 5 * LEASE_S
        slow.answer.set()
        await discord.wait_for_delivered(1)
        await wait_until("the send's record", lambda: relay.in_flight == 0, 5)
    assert discord.delivered_texts() == ["hello"]
    assert slow.renewed_before_the_send >= 1
    assert [m for m in caplog.messages if "claimed by another process" in m] == []
    [delivery] = await open_and_list(tmp_path / "relay.db")
    assert (delivery.status, delivery.attempts) == ("sent", 1)


class LateAnswers(AnswersClaims):
    """A SQLite store whose claims and renewals are answered a lease late by relay's
    clock while `late` is set, as a store that slow would: none leaves half a lease to
    send on."""

    def __init__(self, path: str, clock: JumpingClock) -> None:
        super().__init__(path)
        self.clock = clock
        self.late = True
        self.late_answers = 0

    async def claimed_some(self) -> None:
        self._answer_late()

    async def renew(self, owner: str, ids: Sequence[int], until: float) -> set[int]:
        held = await super().renew(owner, ids, until)
        self._answer_late()
        return held

    def _answer_late(self) -> None:
        if self.late:
            self.clock.ahead_s += LEASE_S
            self.late_answers += 1


async def test_a_claim_whose_renewals_all_come_late_is_not_sent_until_one_comes_in_time(
    tmp_path: Path,
    discord: FakeDiscord,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = JumpingClock()
    slow = LateAnswers(str(tmp_path / "relay.db"), clock)
    await slow.open()
    relay = worker(slow, discord, http, clock)
    async with serving(slow, relay):
        await accept(slow, "hello")
        relay.start()
        # A claim and three renewals, answered late, then the same again after its lease.
        await wait_until("two claims and their renewals", lambda: slow.late_answers >= 8, 10)
        assert [m for m in caplog.messages if "too late to send on it" in m] != []
        assert discord.requests == []
        slow.late = False
        await discord.wait_for_delivered(1)
        await wait_until("the send's record", lambda: relay.in_flight == 0, 5)
    assert discord.delivered_texts() == ["hello"]


async def open_and_list(path: Path) -> list[Delivery]:
    store = await open_store(path)
    try:
        return await store.list_deliveries()
    finally:
        await store.close()


class SlowToAnswerRecords(SqliteStore):
    """A SQLite store that commits a send's record at once but answers it only when the
    test says: meanwhile the send is still its lane's, and its lease is renewed."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.recorded = asyncio.Event()
        self.answer = asyncio.Event()
        self.renewals_since_recorded = 0

    async def record_sent(
        self,
        delivery_id: int,
        now: float,
        note: str | None = None,
        *,
        owner: str,
        started_at: float | None = None,
    ) -> SentRecord:
        record = await super().record_sent(
            delivery_id, now, note, owner=owner, started_at=started_at
        )
        self.recorded.set()
        await self.answer.wait()
        return record

    async def renew(self, owner: str, ids: Sequence[int], until: float) -> set[int]:
        held = await super().renew(owner, ids, until)
        if self.recorded.is_set():
            self.renewals_since_recorded += 1
        return held


async def test_a_renewal_that_finds_a_send_recorded_does_not_call_its_claim_lost(
    tmp_path: Path,
    discord: FakeDiscord,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Under load a renewal often reaches the store just after a send's record: the
    delivery is sent, no longer held, and its lane has not heard yet. That is no lost
    claim, and no warning."""
    store = SlowToAnswerRecords(str(tmp_path / "relay.db"))
    await store.open()
    relay = worker(store, discord, http)
    async with serving(store, relay):
        await accept(store, "hello")
        relay.start()
        await wait_until("the send's record", store.recorded.is_set, 5)
        await wait_until("a renewal after it", lambda: store.renewals_since_recorded > 0, 5)
        store.answer.set()
        await wait_until("the lane to hear", lambda: relay.in_flight == 0, 5)
    assert len(discord.requests) == 1
    assert [m for m in caplog.messages if "lost the claim" in m] == []


def slack_config(slack: FakeSlack) -> Config:
    return load_text(
        f"""
destinations:
  support:
    {{ type: slack, token: "{BOT_TOKEN}", channel: "#support", api_url: "{slack.api_url}",
      max_per_second: 1000 }}
delivery: {{ timeout: 1s }}
rules:
  - {{ name: conversations, send_to: [support], thread: session }}
""",
        "relay.yaml",
        {},
    )


@contextlib.asynccontextmanager
async def parent_update_hanging(
    tmp_path: Path, slack: FakeSlack, http: aiohttp.ClientSession
) -> AsyncIterator[tuple[SqliteStore, DeliveryWorker]]:
    """A worker whose Slack conversation's parent update hangs, under way; stopped (with
    a short shutdown time) and its store closed after."""
    settings = slack_config(slack)
    store = await open_store(tmp_path / "relay.db")
    relay = DeliveryWorker(
        store, settings, build_senders(settings.destinations, SenderContext(http=http))
    )
    slack.update_delay_s = 30.0
    async with serving(store, relay, stop_s=0.5):
        for message in ("hello", "are you there?"):
            await accept(store, message, session="c1", to="support", rule="conversations")
        relay.start()
        await wait_until("the parent's update", lambda: len(slack.updates) == 1, 10)
        yield store, relay


async def test_a_shutdown_leaves_no_parent_update_running(
    tmp_path: Path, slack: FakeSlack, http: aiohttp.ClientSession
) -> None:
    """A Slack parent's count is being updated, and another conversation's send hangs past
    the shutdown's time, until its own timeout: stopping cancels the update, waits for the
    send, and returns with neither still running."""
    async with parent_update_hanging(tmp_path, slack, http) as (store, relay):
        slack.delay_next(30.0)
        await accept(store, "hang", session="c2", to="support", rule="conversations")
        relay.wake(["support"])
        await wait_until("the hanging send", lambda: len(slack.requests) == 3, 5)
    running = [t for t in asyncio.all_tasks() if t.get_name().startswith("relay-") and not t.done()]
    assert running == []


async def test_a_lane_with_a_parent_update_under_way_does_not_retire(
    tmp_path: Path, slack: FakeSlack, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lane idle long enough to retire, while its conversation's parent is being
    updated, stays: its updates stay the worker's to stop, and none outlives a shutdown."""
    monkeypatch.setattr(lanes, "RETIRE_AFTER_S", 0.05)
    async with parent_update_hanging(tmp_path, slack, http) as (_, relay):
        await asyncio.sleep(10 * lanes.RETIRE_AFTER_S)  # time enough to retire, if it could
        assert relay.lanes == 1
    running = [t for t in asyncio.all_tasks() if t.get_name().startswith("relay-") and not t.done()]
    assert running == []


async def test_a_send_on_the_wire_when_the_shutdown_time_ends_finishes_and_is_not_repeated(
    tmp_path: Path, discord: FakeDiscord, http: aiohttp.ClientSession
) -> None:
    """SIGTERM with a shutdown_timeout shorter than a send under way: the destination may
    have it, so the send is let finish and recorded, not cut off and released for another
    process to send again."""
    discord.delay_s = 1.5 * LEASE_S
    async with two_processes(tmp_path, discord, http) as (stopping, other):
        await accept(stopping.store, "hello")
        stopping.relay.start()
        await wait_until("the send to be on the wire", lambda: discord.in_flight == 1, 5)
        other.relay.start()
        await stopping.relay.stop(0.1)
        [delivery] = await other.store.list_deliveries()
        assert (delivery.status, delivery.attempts) == ("sent", 1)
        assert len(discord.requests) == 1


class FindsThreadsWhenTold(SqliteStore):
    """A SQLite store that answers a lookup of a conversation's thread only when the test
    says: a notification is being built, not yet sent."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.asked = asyncio.Event()
        self.answer = asyncio.Event()

    async def thread(self, destination: str, conversation: str) -> str | None:
        self.asked.set()
        await self.answer.wait()
        return await super().thread(destination, conversation)


async def test_a_send_not_yet_on_the_wire_when_the_stop_begins_does_not_go_out(
    tmp_path: Path, discord: FakeDiscord, http: aiohttp.ClientSession
) -> None:
    settings = load_text(
        f"""
delivery: {{ lease: {LEASE_S:g}s }}
destinations:
  forum: {{ type: discord, webhook_url: "{discord.url()}", forum: true }}
rules:
  - {{ name: threaded, send_to: [forum], thread: session }}
""",
        "relay.yaml",
        {},
    )
    store = FindsThreadsWhenTold(str(tmp_path / "relay.db"))
    await store.open()
    relay = DeliveryWorker(
        store, settings, build_senders(settings.destinations, SenderContext(http=http))
    )
    try:
        await accept(store, "hello", to="forum", rule="threaded")
        relay.start()
        await wait_until("the notification's thread asked for", store.asked.is_set, 5)
        stopping = asyncio.create_task(relay.stop(5.0))
        await wait_until("the stop to begin", lambda: relay.stopping, 5)
        store.answer.set()
        await stopping
        [delivery] = await store.list_deliveries()
    finally:
        await relay.stop(5.0)
        await store.close()
    assert discord.requests == []
    assert (delivery.status, delivery.attempts) == ("pending", 0)


class FailsRecords(SqliteStore):
    """A SQLite store that cannot record a send's outcome the first `failures` times it is
    asked, as one whose write lock another process holds too long cannot."""

    def __init__(self, path: str, failures: int) -> None:
        super().__init__(path)
        self.failures = failures
        self.asked = 0

    async def record_sent(
        self,
        delivery_id: int,
        now: float,
        note: str | None = None,
        *,
        owner: str,
        started_at: float | None = None,
    ) -> SentRecord:
        self.asked += 1
        if self.asked <= self.failures:
            raise StoreUnavailable("sqlite: database is locked")
        return await super().record_sent(delivery_id, now, note, owner=owner, started_at=started_at)


async def test_a_send_whose_record_fails_is_recorded_when_the_store_answers_not_sent_again(
    tmp_path: Path,
    discord: FakeDiscord,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FailsRecords(str(tmp_path / "relay.db"), failures=3)
    await store.open()
    relay = worker(store, discord, http)
    async with serving(store, relay):
        await accept(store, "hello")
        relay.start()
        await discord.wait_for_delivered(1)
        await wait_until("the send's record", lambda: relay.in_flight == 0, 10)
        [delivery] = await store.list_deliveries()
    assert (delivery.status, delivery.attempts) == ("sent", 1)
    assert len(discord.requests) == 1
    assert store.asked == 4
    assert [m for m in caplog.messages if m.startswith("cannot record delivery 1 yet")] == [
        "cannot record delivery 1 yet, trying again until the store answers:"
        " sqlite: database is locked"
    ]
    assert "recorded delivery 1 after 4 tries" in caplog.messages


async def test_a_send_whose_record_outlasts_the_shutdown_keeps_its_claim(
    tmp_path: Path,
    discord: FakeDiscord,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A send that went out and that the store never records, stopped: the stop ends after
    the send's timeout and the record's grace, and leaves the claims to their leases
    rather than release one that the destination has."""
    monkeypatch.setattr(workers, "RECORD_GRACE_S", 0.2)
    store = FailsRecords(str(tmp_path / "relay.db"), failures=1_000_000)
    await store.open()
    relay = worker(store, discord, http, timeout_s=0.3)
    async with serving(store, relay):
        await accept(store, "hello")
        relay.start()
        await discord.wait_for_delivered(1)
        await wait_until("a try at its record", lambda: store.asked > 0, 5)
        await relay.stop(0.1)
        with sqlite3.connect(tmp_path / "relay.db") as db:
            [(status, claimed_by, lease_until)] = db.execute(
                "SELECT status, claimed_by, lease_until FROM deliveries"
            ).fetchall()
    assert (status, claimed_by) == ("pending", relay.owner)
    assert lease_until > 0
    assert (
        "1 send(s) on the wire did not finish by the shutdown's end; this process's claims"
        " are left to their leases, so those sends may be repeated"
    ) in caplog.messages
