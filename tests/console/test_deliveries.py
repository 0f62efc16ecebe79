"""SPEC 8, Deliveries: newest first, pages of 50, filters in the URL, counts, dead letters,
and the JSON twin; on both stores."""

from __future__ import annotations

import re
import time

import pytest

from relay.app import STATE
from tests.console.conftest import ConsoleFactory
from tests.console.support import Console, console_yaml, ids_shown
from tests.support.fake_receiver import FakeReceiver
from tests.test_delivery import post_event, wait_for_status


async def refund_and_hello(
    open_console: ConsoleFactory, receiver: FakeReceiver, store: str
) -> Console:
    """Two events: "a refund please" to crm (dead: 400) and audit (sent), "hello" to audit."""
    receiver.script(400)
    console = await open_console(console_yaml(receiver, store))
    await post_event(console.relay, "a refund please", session="s1")
    await post_event(console.relay, "hello", session="s2")
    await wait_for_status(console.relay, "dead")
    await wait_for_status(console.relay, "sent", 2)
    return console


async def test_filters_by_status_and_destination_and_echoes_them(
    open_console: ConsoleFactory, receiver: FakeReceiver, store_section: str
) -> None:
    console = await refund_and_hello(open_console, receiver, store_section)
    everything = await console.json("/deliveries")
    [dead] = [d for d in everything["deliveries"] if d["status"] == "dead"]
    assert dead["destination"] == "crm"
    assert dead["last_error"].startswith("webhook answered 400")

    page = await console.page("/deliveries?status=dead")
    assert ids_shown(page) == [dead["id"]]
    assert '<option value="dead" selected>dead</option>' in page
    assert "<h1>Dead letters</h1>" in page and "<title>Dead letters" in page
    assert "webhook answered 400" in page

    page = await console.page("/deliveries?destination=audit")
    audit = [d["id"] for d in everything["deliveries"] if d["destination"] == "audit"]
    assert ids_shown(page) == audit and len(audit) == 2
    assert '<option value="audit" selected>audit</option>' in page
    assert '<option value="crm">crm</option>' in page

    page = await console.page("/deliveries?destination=crm&status=sent")
    assert ids_shown(page) == []
    assert "No delivery matches these filters." in page


async def test_newest_first_with_every_column(
    open_console: ConsoleFactory, receiver: FakeReceiver, store_section: str
) -> None:
    console = await refund_and_hello(open_console, receiver, store_section)
    page = await console.page("/deliveries")
    rows = (await console.json("/deliveries"))["deliveries"]
    assert [row["id"] for row in rows] == sorted((row["id"] for row in rows), reverse=True)
    assert ids_shown(page) == [row["id"] for row in rows]
    headings = re.findall(r'<th scope="col"[^>]*>([^<]+)</th>', page.split('class="deliveries"')[1])
    assert headings == [
        "Id", "Time", "Destination", "Event type", "Agent", "Status", "Attempts", "Last error"
    ]  # fmt: skip
    assert {row["event_type"] for row in rows} == {"chat.push"}
    assert {row["agent_id"] for row in rows} == {"agent_abc123"}
    assert re.search(
        r'<time datetime="\d{4}-\d\d-\d\dT[\d:.]+Z">\d{4}-\d\d-\d\d [\d:]+ UTC</time>', page
    )


async def test_counts_by_status_and_destination_link_to_their_filter(
    open_console: ConsoleFactory, receiver: FakeReceiver, store_section: str
) -> None:
    console = await refund_and_hello(open_console, receiver, store_section)
    counts = (await console.json("/deliveries"))["counts"]
    assert counts == {
        "by_status": {"pending": 0, "failed": 0, "dead": 1, "sent": 2},
        "by_destination": {"audit": {"sent": 2}, "crm": {"dead": 1}},
    }
    page = await console.page("/deliveries?text=nothing-matches-this")
    assert (
        '<a class="status status-dead" href="/deliveries?status=dead">dead <strong>1</strong></a>'
        in page
    )
    assert (
        '<a class="status status-sent" href="/deliveries?status=sent">sent <strong>2</strong></a>'
        in page
    )
    assert '<a href="/deliveries?destination=crm">crm</a>' in page
    assert 'href="/deliveries?status=dead&amp;destination=crm">dead 1</a>' in page


async def test_pages_of_fifty_with_an_older_link_that_keeps_the_filters(
    open_console: ConsoleFactory, receiver: FakeReceiver, store_section: str
) -> None:
    console = await open_console(console_yaml(receiver, store_section))
    for n in range(55):
        await post_event(console.relay, f"message {n}", session=f"s{n}")
    await wait_for_status(console.relay, "sent", 55)

    first = await console.page("/deliveries?destination=audit")
    shown = ids_shown(first)
    assert len(shown) == 50 and shown == sorted(shown, reverse=True)
    older = re.search(r'<a rel="next" href="([^"]+)">Older</a>', first)
    assert older is not None
    link = older.group(1).replace("&amp;", "&")
    assert link == f"/deliveries?destination=audit&before={shown[-1]}"
    assert ">Newest</a>" not in first

    second = await console.page(link)
    rest = ids_shown(second)
    assert len(rest) == 5 and max(rest) < min(shown)
    assert 'rel="next"' not in second
    assert '<a href="/deliveries?destination=audit">Newest</a>' in second
    assert '<option value="audit" selected>audit</option>' in second

    twin = await console.json("/deliveries?destination=audit")
    assert [d["id"] for d in twin["deliveries"]] == shown
    assert twin["next"] == link and twin["next_before"] == shown[-1]
    assert twin["filter"] == {"destination": "audit"}
    last = await console.json(twin["next"])
    assert [d["id"] for d in last["deliveries"]] == rest and last["next"] is None


async def test_text_event_type_and_time_filters(
    open_console: ConsoleFactory, receiver: FakeReceiver, store_section: str
) -> None:
    console = await refund_and_hello(open_console, receiver, store_section)
    now = time.time()

    async def count(query: str) -> int:
        return len((await console.json(f"/deliveries?{query}"))["deliveries"])

    assert await count("text=REFUND") == 2  # case-insensitive, in the event's body
    assert await count("text=hello") == 1
    assert await count("event_type=chat_push") == 3  # either spelling
    assert await count("event_type=room.join") == 0
    assert await count(f"since={now - 60:.0f}") == 3
    assert await count(f"since={now + 60:.0f}") == 0
    assert await count(f"until={now - 60:.0f}") == 0
    hour_ago = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(now - 3600))
    assert await count(f"since={hour_ago}&text=refund&destination=crm") == 1

    page = await console.page(f"/deliveries?since={hour_ago}&text=Refund&event_type=chat_push")
    assert f'name="since" type="datetime-local" step="1" value="{hour_ago}:00"' in page
    assert 'name="text" type="search" value="Refund"' in page
    assert 'name="event_type" list="event-types" value="chat_push"' in page


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("status=lost", "status: expected one of pending, failed, dead, sent, got 'lost'"),
        ("since=yesterday", "since: expected a time like 2025-01-31T14:30 (UTC) or Unix"),
        ("until=2025-13-01", "until: expected a time like"),
        ("since=nan", "since: expected a time"),
        ("since=2025-02-01&until=2025-01-01", "until: must be later than since"),
        ("before=abc", "before: expected a delivery id, got 'abc'"),
        ("before=0", "before: expected a delivery id"),
        ("text=" + "x" * 501, "text: at most 500 characters"),
    ],
)
async def test_a_bad_filter_is_a_400_naming_its_parameter(
    open_console: ConsoleFactory, receiver: FakeReceiver, query: str, message: str
) -> None:
    console = await open_console(console_yaml(receiver))
    response = await console.get(f"/deliveries?{query}")
    assert response.status == 400
    assert message.replace("'", "&#39;") in await response.text()
    response = await console.get(f"/deliveries?{query}", as_json=True)
    assert response.status == 400
    assert (await response.json())["error"].startswith(message)


async def test_the_root_opens_the_deliveries_with_its_query(
    open_console: ConsoleFactory, receiver: FakeReceiver
) -> None:
    console = await open_console(console_yaml(receiver))
    response = await console.get("/?status=dead&text=a%26b%20c")
    assert response.status == 302
    assert response.headers["Location"] == "/deliveries?status=dead&text=a%26b%20c"
    response = await console.get("/")
    assert response.headers["Location"] == "/deliveries"


async def test_a_store_that_does_not_answer_is_a_503_saying_so(
    open_console: ConsoleFactory, receiver: FakeReceiver
) -> None:
    console = await open_console(console_yaml(receiver))
    await console.relay.app[STATE].store.close()  # every call now raises StoreUnavailable
    for path in ("/deliveries", "/deliveries/1"):
        response = await console.get(path)
        assert response.status == 503
        assert "store unavailable: sqlite store" in await response.text()
        response = await console.get(path, as_json=True)
        assert (await response.json())["error"].startswith("store unavailable")
