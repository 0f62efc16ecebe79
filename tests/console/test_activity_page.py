"""SPEC 8.1, Activity: per agent, conversations started, messages, the median and 90th
percentile time to first answer and the unanswered conversations, and a chart of
conversations started; from the counters, on both stores."""

from __future__ import annotations

import re

from relay.app import STATE
from tests.console.conftest import ConsoleFactory
from tests.console.support import Client, console_yaml
from tests.support.fake_receiver import FakeReceiver
from tests.support.relay import event_body, signed_headers
from tests.test_signals import Clock

WATCHING = "\nconversations:\n  unanswered_after: 2m\n  ended_after: 10m\n"
T = 1_765_000_000.0  # the events' own times


async def say(
    relay: Client, agent: str, session: str, role: str, at: float, message: str = "hi"
) -> None:
    body = event_body(
        agent_id=agent,
        timestamp=T + at,
        data={"role": role, "message": message, "session_id": session},
    )
    response = await relay.post("/webhook", data=body, headers=signed_headers(body))
    assert response.status == 200, await response.text()


def clock_early_in_an_hour() -> Clock:
    """relay's clock a minute into the current hour, so that the crafted conversations and
    their raising 121 s later fall in one hour, whenever the test runs: from a minute
    before an hour they fell in two, and the chart's last bar was empty."""
    clock = Clock()
    clock.start = clock.now = clock.start // 3600 * 3600 + 60
    return clock


async def crafted(relay: Client, clock: Clock) -> None:
    """Two of A1's conversations answered after 4 s and 12 s (the events' own times), and
    one of A2's left unanswered until relay raises it."""
    await say(relay, "A1", "s1", "user", 0)
    await say(relay, "A1", "s1", "assistant", 4)
    await say(relay, "A1", "s2", "user", 100)
    await say(relay, "A1", "s2", "assistant", 112)
    await say(relay, "A1", "s2", "user", 120)
    await say(relay, "A2", "s3", "user", 0, "anyone there?")
    clock.at(121)
    raiser = relay.app[STATE].raiser
    assert raiser is not None
    assert await raiser.raise_due() == 2  # s2's second question and s3's


async def test_the_figures_of_crafted_conversations(
    open_console: ConsoleFactory, receiver: FakeReceiver, store_section: str
) -> None:
    clock = clock_early_in_an_hour()
    console = await open_console(console_yaml(receiver, store_section + WATCHING), clock=clock)
    await crafted(console.relay, clock)

    twin = await console.json("/activity")
    assert twin["period"] == "24h" and twin["conversations_watched"]
    by_agent = {row["agent_id"]: row for row in twin["agents"]}
    assert list(by_agent) == ["A1", "A2"]
    assert by_agent["A1"] == {
        "agent_id": "A1",
        "conversations": 2,
        "visitor_messages": 3,
        "agent_messages": 2,
        # 4 s and 12 s: the median to its bucket's bound, within that range.
        "first_answer_median": {"at_most_s": 5, "over_s": None},
        "first_answer_p90": {"at_most_s": 15, "over_s": None},
        "unanswered": 1,
    }
    assert by_agent["A2"]["conversations"] == 1
    assert by_agent["A2"]["first_answer_median"] is None
    assert by_agent["A2"]["unanswered"] == 1
    assert twin["all_agents"]["conversations"] == 3
    chart = twin["chart"]
    assert chart["unit"] == "hour"
    assert len(chart["bars"]) == 25  # the hour 24 hours ago, whole, to this one
    assert sum(bar["conversations"] for bar in chart["bars"]) == 3
    assert chart["bars"][-1]["conversations"] == 3

    page = await console.page("/activity")
    row = re.search(r'<th scope="row">A1</th>(.*?)</tr>', page, re.S)
    assert row is not None
    cells = re.findall(r'<td class="number">(.*?)</td>', row.group(1))
    assert cells == ["2", "3", "2", "≤ 5 s", "≤ 15 s", "1"]
    assert page.count('<rect class="bar"') == 25
    assert "3 conversations started</title>" in page

    week = await console.json("/activity?period=7d")
    assert week["chart"]["unit"] == "day"
    assert len(week["chart"]["bars"]) in (7, 8)  # the first day whole, to today
    assert sum(bar["conversations"] for bar in week["chart"]["bars"]) == 3


async def test_without_conversations_the_page_counts_messages_and_says_what_is_missing(
    open_console: ConsoleFactory, receiver: FakeReceiver
) -> None:
    console = await open_console(console_yaml(receiver))
    await say(console.relay, "A1", "s1", "user", 0)
    await say(console.relay, "A1", "s1", "assistant", 4)
    twin = await console.json("/activity")
    assert twin["conversations_watched"] is False
    [row] = twin["agents"]
    assert (row["visitor_messages"], row["agent_messages"]) == (1, 1)
    assert (row["conversations"], row["first_answer_median"]) == (0, None)
    page = await console.page("/activity")
    assert "set <code>conversations:</code> in relay.yaml to count them" in page


async def test_markup_in_an_agent_id_is_text(
    open_console: ConsoleFactory, receiver: FakeReceiver
) -> None:
    console = await open_console(console_yaml(receiver, WATCHING))
    await say(console.relay, "<script>alert(1)</script>", "s1", "user", 0)
    page = await console.page("/activity")
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
