"""Crash loop (SPEC section 5): SIGKILL relay three times during a load of 2,000 events,
restarting it each time on the same store.

Every event relay said it holds (200 `accepted`, or 200 `duplicate` for a resent body whose
first try was stored but not answered) is delivered at least once to each destination. Duplicates
are counted and bounded: see MAX_DUPLICATES_PER_KILL.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.reliability.conftest import Report, StoreStatuses
from tests.support.fake_discord import FakeDiscord, wait_until
from tests.support.fake_slack import FakeSlack
from tests.support.load import NO_ANSWER, Load
from tests.support.processes import RelayProcess, RelayProcesses
from tests.support.relay import SECRET, event_body

pytestmark = pytest.mark.slow

EVENTS = 2_000
CLIENTS = 32
KILL_AT = (0.25, 0.50, 0.75)  # shares of the events answered when each SIGKILL lands
# relay/delivery.py: one Lane per destination has at most delivery.concurrency sends in
# flight, and each send's outcome is committed before its session's next send, so at the
# instant of a kill at most CONCURRENCY sends per destination are unrecorded. Only those
# can go out again after the restart.
CONCURRENCY = 4
MAX_DUPLICATES_PER_KILL = CONCURRENCY  # per destination
# The restarted process sends what the killed one held once its leases have run out.
LEASE = "2s"
LOAD_TIMEOUT_S = 120.0
CLIENT_GIVE_UP_S = 60.0  # a client resends a body this long at most (restarts take ~1-2 s)
DELIVER_TIMEOUT_S = 90.0
GRACE_S = 1.0  # backoff is capped at 200 ms: a late duplicate would arrive within this

MESSAGE = re.compile(r"crash(\d{5})")


def body_of(index: int) -> bytes:
    data = {"role": "user", "message": f"crash{index:05d}", "session_id": f"crash-s{index}"}
    return event_body(data=data)


def write_config(tmp_path: Path, store_path: Path, slack: FakeSlack, discord: FakeDiscord) -> Path:
    path = tmp_path / "relay.yaml"
    path.write_text(
        f"""\
server:
  host: 127.0.0.1
  port: 0
verify:
  secrets: ["{SECRET}"]
store:
  url: "sqlite:{store_path}"
delivery:
  max_attempts: 1000
  backoff: {{ first: 50ms, max: 200ms }}
  timeout: 5s
  concurrency: {CONCURRENCY}
  lease: {LEASE}
destinations:
  slack: {{ type: slack, webhook_url: "{slack.webhook_url()}", max_per_second: 1000 }}
  discord: {{ type: discord, webhook_url: "{discord.url()}" }}
rules:
  - name: everything
    send_to: [slack, discord]
""",
        encoding="utf-8",
    )
    return path


@dataclass
class CrashLoop:
    """Kills relay when the load reaches each share of KILL_AT, and restarts it at once."""

    processes: RelayProcesses
    config: Path
    load: Load
    relay: RelayProcess
    kill_times: list[float] = field(default_factory=list)  # time.monotonic() of each SIGKILL
    restart_s: list[float] = field(default_factory=list)

    async def run(self) -> None:
        for share in KILL_AT:
            await self._wait_answered(int(share * EVENTS))
            self.kill_times.append(time.monotonic())
            self.relay.kill()
            assert await self.relay.wait_exit() == -9
            self.relay = await self.processes.start(self.config)
            self.restart_s.append(time.monotonic() - self.kill_times[-1])
            self.load.url = self.relay.webhook_url

    async def _wait_answered(self, count: int) -> None:
        await wait_until(
            lambda: f"{count} events answered (have {self.load.answered})",
            lambda: self.load.answered >= count,
            LOAD_TIMEOUT_S,
            poll_s=0.005,
        )


def arrivals(
    fake: FakeSlack | FakeDiscord, text_of: Callable[[int], str]
) -> dict[int, list[float]]:
    """Return, per event, when each of its 2xx-answered sends reached the fake."""
    found: dict[int, list[float]] = {}
    for i in range(len(fake.delivered)):
        match = MESSAGE.search(text_of(i))
        assert match is not None, f"a message without an event's text: {fake.delivered[i].body}"
        found.setdefault(int(match.group(1)), []).append(fake.delivered[i].at)
    return found


def slack_arrivals(slack: FakeSlack) -> dict[int, list[float]]:
    return arrivals(slack, lambda i: str(slack.delivered[i].body.get("text", "")))


def discord_arrivals(discord: FakeDiscord) -> dict[int, list[float]]:
    return arrivals(discord, lambda i: discord.delivered[i].description())


def nearest_kill(at: float, kill_times: Sequence[float]) -> int:
    """Return the index of the kill nearest to `at`.

    The fake reads a request a little after relay wrote it, so a send relay started just
    before a kill may arrive just after it.
    """
    return min(range(len(kill_times)), key=lambda k: abs(at - kill_times[k]))


def duplicates_by_kill(
    arrivals: dict[int, list[float]], kill_times: Sequence[float]
) -> tuple[list[int], list[str]]:
    """Return the duplicates per kill (by the first send's arrival) and a line for each."""
    per_kill = [0] * len(kill_times)
    shown = []
    for index, times in sorted(arrivals.items()):
        if len(times) > 1:
            kill = nearest_kill(times[0], kill_times)
            per_kill[kill] += len(times) - 1
            offset_ms = (times[0] - kill_times[kill]) * 1000
            where = f"first {offset_ms:+.0f} ms from kill {kill + 1}"
            shown.append(f"crash{index:05d}: {len(times)} sends, {where}")
    return per_kill, shown


async def test_sigkill_three_times_under_load_loses_nothing_and_bounds_duplicates(
    tmp_path: Path,
    store_path: Path,
    slack: FakeSlack,
    discord: FakeDiscord,
    processes: RelayProcesses,
    store_statuses: StoreStatuses,
    report: Report,
) -> None:
    started = time.monotonic()
    config = write_config(tmp_path, store_path, slack, discord)
    relay = await processes.start(config)
    bodies = [body_of(i) for i in range(EVENTS)]
    load = Load(relay.webhook_url, bodies, concurrency=CLIENTS, give_up_s=CLIENT_GIVE_UP_S)
    crash = CrashLoop(processes, config, load, relay)
    await asyncio.wait_for(asyncio.gather(load.run(), crash.run()), LOAD_TIMEOUT_S)
    load_s = time.monotonic() - started

    not_stored = load.not_stored()
    assert not not_stored, (
        f"{len(not_stored)} event(s) never answered 2xx, e.g. {not_stored[0].attempts[-3:]}"
    )
    stored = set(range(EVENTS))

    def all_delivered() -> bool:
        return stored <= set(slack_arrivals(slack)) and stored <= set(discord_arrivals(discord))

    await wait_until(
        lambda: (
            f"each of {EVENTS} events delivered to both: Slack has"
            f" {len(set(slack_arrivals(slack)))}, Discord {len(set(discord_arrivals(discord)))};"
            f" relay log tail:\n{crash.relay.log()[-3000:]}"
        ),
        all_delivered,
        DELIVER_TIMEOUT_S,
        poll_s=0.2,
    )
    await asyncio.sleep(GRACE_S)
    duration_s = time.monotonic() - started

    kills = crash.kill_times
    slack_per_kill, slack_dupes_shown = duplicates_by_kill(slack_arrivals(slack), kills)
    discord_per_kill, discord_dupes_shown = duplicates_by_kill(discord_arrivals(discord), kills)
    statuses, answers = load.all_statuses(), load.all_answers()
    accepted_twice = [
        s.index for s in load.sent if sum(a.answer == "accepted" for a in s.attempts) > 1
    ]
    figures = {
        "events": EVENTS,
        "clients": CLIENTS,
        "kills": len(crash.kill_times),
        "restart_s": [round(s, 2) for s in crash.restart_s],
        "client_attempts_unanswered": statuses[NO_ANSWER],
        "client_5xx": sum(n for status, n in statuses.items() if status >= 500),
        "answered_accepted": answers["accepted"],
        "answered_duplicate": answers["duplicate"],
        "duplicates": {"slack": sum(slack_per_kill), "discord": sum(discord_per_kill)},
        "duplicates_per_kill": {"slack": slack_per_kill, "discord": discord_per_kill},
        "duplicate_sends": {"slack": slack_dupes_shown, "discord": discord_dupes_shown},
        "load_s": round(load_s, 1),
        "duration_s": round(duration_s, 1),
    }
    report("crash_loop", figures)
    print(f"\ncrash loop: {figures}")

    assert len(crash.kill_times) == len(KILL_AT)
    # Each event stored once: a resent body that was stored answers 200 and makes no second
    # event, so the store holds exactly one delivery per event and destination, all sent.
    assert not accepted_twice, f"answered accepted more than once: {accepted_twice[:10]}"
    assert await store_statuses() == {"sent": 2 * EVENTS}
    assert max(slack_per_kill + discord_per_kill) <= MAX_DUPLICATES_PER_KILL, (
        f"a kill caused more than {MAX_DUPLICATES_PER_KILL} duplicate(s) on one destination:"
        f" {figures}"
    )
