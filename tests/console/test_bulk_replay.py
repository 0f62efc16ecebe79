"""SPEC 8, bulk replay: every dead delivery the filters select, after a page that says how
many; the POST acts on what was counted and on nothing else (not on a delivery that arrives
or dies after the count, nor on another destination's), and needs the CSRF token."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterable

import aiohttp
import pytest

from relay.console import bulk
from relay.store import Store
from relay.store.base import DeliveryStatus
from tests.console.conftest import ConsoleFactory
from tests.console.support import AUTH, USERNAME, Console, hidden_fields
from tests.support.fake_receiver import FakeReceiver
from tests.test_delivery import deliveries, post_event, wait_for_status

OWNER = "bulk-replay-test"


def two_destinations(receiver: FakeReceiver, store_section: str = "") -> str:
    """Messages saying "refund" go to crm, every event to support: two webhooks, both at
    the receiver, told apart by their paths."""
    return f"""
verify:
  secrets: ["${{SECRET}}"]
delivery:
  max_attempts: 3
  backoff: {{ first: 10ms, max: 20ms }}
destinations:
  crm: {{ type: webhook, url: "{receiver.url("/crm")}" }}
  support: {{ type: webhook, url: "{receiver.url("/support")}" }}
rules:
  - name: refunds
    when: {{ message: {{ contains: refund }} }}
    send_to: [crm]
  - name: everything
    send_to: [support]
console:
  listen: 127.0.0.1:0
  username: {USERNAME}
  password: "${{CONSOLE_PASSWORD}}"
{store_section}"""


async def post_bulk(
    console: Console, fields: dict[str, str], headers: dict[str, str] | None = None
) -> aiohttp.ClientResponse:
    """POST the confirmation page's form (from the console's own origin unless told)."""
    return await console.client.post(
        bulk.CONFIRM_PATH,
        data=fields,
        headers={**AUTH, **({"Origin": console.origin} if headers is None else headers)},
        allow_redirects=False,
    )


async def statuses(console: Console) -> dict[int, tuple[str, DeliveryStatus]]:
    return {d.id: (d.destination, d.status) for d in await deliveries(console.relay)}


def store_of(console: Console) -> Store:
    from relay.app import STATE

    return console.relay.app[STATE].store


async def kill(console: Console, destination: str, ids: Iterable[int] | None = None) -> list[int]:
    """Dead-letter a worker-less relay's pending deliveries of a destination (those of
    `ids`, or all), as the worker does after a permanent failure; return their ids."""
    store, now, wanted = store_of(console), time.time(), None if ids is None else set(ids)
    claimed = await store.claim(destination, now, 100, owner=OWNER, lease_s=60)
    killed = []
    for delivery in claimed:
        if wanted is None or delivery.id in wanted:
            failed = await store.record_failure(
                delivery.id, "webhook answered 400", retry_at=None, now=now, owner=OWNER
            )
            assert failed
            killed.append(delivery.id)
    await store.release(OWNER)
    return killed


def heading(page: str) -> str:
    found = re.search(r"<h1>(.*?)</h1>", page, re.S)
    assert found is not None
    return html.unescape(found.group(1)).strip()


async def test_only_the_filtered_destinations_dead_deliveries_go_out_again(
    open_console: ConsoleFactory, receiver: FakeReceiver, store_section: str
) -> None:
    receiver.script(*[400] * 5)  # a permanent failure: each is dead at once
    console = await open_console(two_destinations(receiver, store_section))
    await post_event(console.relay, "a refund please", session="s1")
    await post_event(console.relay, "another refund", session="s2")
    await post_event(console.relay, "hello", session="s3")
    await wait_for_status(console.relay, "dead", 5)

    listing = await console.page("/deliveries?destination=crm")
    assert '<a id="bulk-replay" href="/deliveries/replay?destination=crm">' in listing
    assert "Replay all 2 dead…" in listing
    assert "Replay all 5 dead…" in await console.page("/deliveries?status=dead")
    assert "Replay all 4 dead…" in await console.page("/deliveries?text=REFUND")  # both
    assert "bulk-replay" not in await console.page("/deliveries?status=sent")

    page = await console.page("/deliveries/replay?destination=crm")
    assert heading(page) == "Replay 2 dead deliveries to crm?"
    assert "<title>Replay 2 dead deliveries to crm? · relay console</title>" in page
    assert "<dt>Destination</dt>\n  <dd>crm</dd>" in page
    fields = hidden_fields(page, "replay-all")
    crm_dead = sorted(i for i, (d, s) in (await statuses(console)).items() if d == "crm")
    assert fields["destination"] == "crm"
    assert (fields["upto"], fields["downto"], fields["count"]) == (
        str(crm_dead[-1]),
        str(crm_dead[0]),
        "2",
    )

    # A refund that dies after the count: newer than what was counted, not replayed.
    receiver.script(400, 400)
    await post_event(console.relay, "a late refund", session="s4")
    await wait_for_status(console.relay, "dead", 7)
    before = await statuses(console)

    response = await post_bulk(console, fields)
    assert response.status == 303, await response.text()
    location = response.headers["Location"]
    assert location.startswith("/deliveries?destination=crm&notice=")
    after = await statuses(console)
    replayed = {i for i in before if before[i][1] == "dead" and after[i][1] != "dead"}
    assert replayed == set(crm_dead)  # exactly the two counted: not the late one
    assert '<p class="notice" id="notice" role="status">Replayed 2 dead deliveries.</p>' in (
        await console.page(location)
    )

    await wait_for_status(console.relay, "sent", 2)
    await receiver.wait_for_requests(9)
    assert [r.path for r in receiver.requests[7:]] == ["/crm", "/crm"]
    assert [r.status for r in receiver.requests[7:]] == [200, 200]
    final = await statuses(console)
    assert sorted(s for d, s in final.values() if d == "support") == ["dead"] * 4
    assert sorted(s for d, s in final.values() if d == "crm") == ["dead", "sent", "sent"]


async def test_a_delivery_that_dies_within_the_count_shows_the_count_again(
    open_quiet_console: ConsoleFactory, receiver: FakeReceiver, store_section: str
) -> None:
    console = await open_quiet_console(two_destinations(receiver, store_section))
    for session in ("a", "b", "c"):
        await post_event(console.relay, "a refund please", session=session)
    first, second, third = sorted(
        i for i, (d, _) in (await statuses(console)).items() if d == "crm"
    )
    await kill(console, "crm", [first, third])  # the second is still being retried

    fields = hidden_fields(await console.page("/deliveries/replay?destination=crm"), "replay-all")
    assert (fields["upto"], fields["downto"], fields["count"]) == (str(third), str(first), "2")
    await kill(console, "crm", [second])  # it dies after the count, inside what it spans
    response = await post_bulk(console, fields)
    page = await response.text()
    assert response.status == 409, page
    assert "1 dead delivery more matches since the count: nothing was replayed" in page
    assert heading(page) == "Replay 3 dead deliveries to crm?"
    assert [s for d, s in (await statuses(console)).values() if d == "crm"] == ["dead"] * 3

    response = await post_bulk(console, hidden_fields(page, "replay-all"))
    assert response.status == 303
    assert [s for d, s in (await statuses(console)).values() if d == "crm"] == ["pending"] * 3
    assert [s for d, s in (await statuses(console)).values() if d == "support"] == ["pending"] * 3


async def test_one_bulk_replay_is_bounded_and_says_so(
    open_quiet_console: ConsoleFactory, receiver: FakeReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bulk, "MAX_BULK", 2)
    console = await open_quiet_console(two_destinations(receiver))
    for session in ("a", "b", "c"):
        await post_event(console.relay, "a refund please", session=session)
    oldest, middle, newest = sorted(await kill(console, "crm"))

    page = await console.page("/deliveries/replay?destination=crm")
    assert heading(page) == "Replay 2 dead deliveries to crm?"
    assert "More than 2 dead deliveries match: this replays the newest 2" in page
    twin = await console.json("/deliveries/replay?destination=crm")
    assert twin == {
        "count": 2,
        "more": True,
        "limit": 2,
        "filter": {"destination": "crm"},
        "upto": newest,
        "downto": middle,
    }
    response = await post_bulk(console, hidden_fields(page, "replay-all"))
    assert response.status == 303
    now = await statuses(console)
    assert [now[i][1] for i in (oldest, middle, newest)] == ["dead", "pending", "pending"]
    again = await console.page("/deliveries/replay?destination=crm")
    assert heading(again) == "Replay 1 dead delivery to crm?"
    assert "More than" not in again


async def test_the_links_count_reads_the_newest_deliveries_the_confirmation_counts_all(
    open_quiet_console: ConsoleFactory,
    receiver: FakeReceiver,
    store_section: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """For a filter the kept counts cannot answer, the link counts the dead ones among the
    newest LINK_SCAN deliveries ("N+" or no number when older ones may match); the
    confirmation page counts them all, however many stretches that takes."""
    monkeypatch.setattr(bulk, "LINK_SCAN", 2)
    monkeypatch.setattr(bulk, "COUNT_SCAN", 1)
    console = await open_quiet_console(two_destinations(receiver, store_section))
    await post_event(console.relay, "a refund please", session="a")  # crm 1, support 2
    await post_event(console.relay, "hello", session="b")  # support 3
    await post_event(console.relay, "hello again", session="c")  # support 4
    assert await kill(console, "crm") == [1]

    # No dead refund among the newest two (3 and 4): a link all the same, with no number.
    listing = await console.page("/deliveries?text=refund")
    assert '<a id="bulk-replay" href="/deliveries/replay?text=refund">Replay all dead…</a>' in (
        listing
    )
    assert (await console.json("/deliveries?text=refund"))["dead"] == {
        "count": 0,
        "more": True,
        "replay": "/deliveries/replay?text=refund",
    }
    assert heading(await console.page("/deliveries/replay?text=refund")) == (
        "Replay 1 dead delivery matching 'refund'?"
    )

    assert sorted(await kill(console, "support")) == [2, 3, 4]
    listing = await console.page("/deliveries?event_type=chat.push")
    assert ">Replay all 2+ dead…</a>" in listing  # 3 and 4, and maybe older ones
    page = await console.page("/deliveries/replay?event_type=chat.push")
    assert heading(page) == "Replay 4 dead deliveries of type chat.push?"
    fields = hidden_fields(page, "replay-all")
    assert (fields["upto"], fields["downto"], fields["count"]) == ("4", "1", "4")
    response = await post_bulk(console, fields)
    assert response.status == 303, await response.text()
    assert sorted(s for _, s in (await statuses(console)).values()) == ["pending"] * 4


async def test_a_count_of_nothing_acts_on_nothing(
    open_quiet_console: ConsoleFactory, receiver: FakeReceiver
) -> None:
    console = await open_quiet_console(two_destinations(receiver))
    await post_event(console.relay, "a refund please")
    await kill(console, "crm")
    await kill(console, "support")
    for path in (
        "/deliveries/replay?status=sent",
        "/deliveries/replay?destination=crm&text=no+such+words",
    ):
        page = await console.page(path)
        assert heading(page) == "No dead delivery to replay"
        assert 'id="replay-all"' not in page
    assert (await console.json("/deliveries/replay?status=pending"))["count"] == 0

    zero = {"csrf_token": await token(console), "upto": "0", "downto": "0", "count": "0"}
    for fields in (zero, {**zero, "status": "sent"}, {**zero, "upto": "999", "downto": "1"}):
        response = await post_bulk(console, fields)
        assert response.status == 303
        assert "Replayed 0 dead deliveries." in await console.page(response.headers["Location"])
    assert [s for _, s in (await statuses(console)).values()] == ["dead", "dead"]


async def token(console: Console) -> str:
    """The CSRF token a page of the console gives its forms."""
    return hidden_fields(await console.page("/deliveries"), "send-test")["csrf_token"]


@pytest.mark.parametrize(
    "case", ["no token", "a wrong token", "another site's origin", "no origin"]
)
async def test_a_bulk_replay_without_the_token_or_from_elsewhere_changes_nothing(
    open_quiet_console: ConsoleFactory, receiver: FakeReceiver, case: str
) -> None:
    console = await open_quiet_console(two_destinations(receiver))
    await post_event(console.relay, "a refund please")
    await kill(console, "crm")
    fields = hidden_fields(await console.page("/deliveries/replay"), "replay-all")
    assert fields["count"] == "1"
    own = {"Origin": console.origin}
    presented, headers = {
        "no token": ({k: v for k, v in fields.items() if k != "csrf_token"}, own),
        "a wrong token": ({**fields, "csrf_token": "0" * 64}, own),
        "another site's origin": (fields, {"Origin": "http://evil.example"}),
        "no origin": (fields, {}),
    }[case]
    response = await post_bulk(console, presented, headers)
    assert response.status == 403
    assert "<h1>403 Forbidden</h1>" in await response.text()
    assert sorted(s for _, s in (await statuses(console)).values()) == ["dead", "pending"]


async def test_bad_fields_are_refused_naming_them(
    open_quiet_console: ConsoleFactory, receiver: FakeReceiver
) -> None:
    console = await open_quiet_console(two_destinations(receiver))
    fields = {"csrf_token": await token(console), "upto": "5", "downto": "1", "count": "1"}
    for bad, named in (
        ({"upto": "-1"}, "upto"),
        ({"count": "many"}, "count"),
        ({"downto": ""}, "downto"),
        ({"status": "lost"}, "status"),
        ({"since": "yesterday"}, "since"),
    ):
        response = await post_bulk(console, {**fields, **bad})
        assert response.status == 400
        assert f"{named}: " in html.unescape(await response.text())
    response = await console.get("/deliveries/replay?until=soon")
    assert response.status == 400


async def test_the_json_twins_of_bulk_replay(
    open_quiet_console: ConsoleFactory, receiver: FakeReceiver
) -> None:
    console = await open_quiet_console(two_destinations(receiver))
    await post_event(console.relay, "a refund please")
    [dead] = await kill(console, "crm")
    listing = await console.json("/deliveries?destination=crm")
    assert listing["dead"] == {
        "count": 1,
        "more": False,
        "replay": "/deliveries/replay?destination=crm",
    }
    twin = await console.json("/deliveries/replay?destination=crm")
    assert (twin["count"], twin["upto"], twin["downto"]) == (1, dead, dead)
    fields = {"csrf_token": await token(console), "destination": "crm", "upto": str(dead)}
    response = await console.client.post(
        bulk.CONFIRM_PATH,
        data={**fields, "downto": str(dead), "count": "1"},
        headers={**AUTH, "Origin": console.origin, "Accept": "application/json"},
    )
    assert response.status == 200
    assert await response.json() == {"replayed": 1, "counted": 1}
