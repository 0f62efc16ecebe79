"""SPEC 8, Live: while the deliveries page is open, new deliveries and status changes appear
without a reload, over one Server-Sent Events stream per page; the stream is bounded (a cap
on open streams, heartbeats) and ends when the browser goes, when the credentials change,
and when relay shuts down, without holding the shutdown up."""

from __future__ import annotations

import asyncio
import html
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

from relay.app import STATE
from relay.console.keys import CSRF, STREAMS
from relay.console.live import LIVE_PATH
from relay.secrets import Secret
from tests.console.conftest import TEST_LIVE, ConsoleFactory
from tests.console.support import (
    AUTH,
    BEARER_TOKEN,
    CONSOLE_PASSWORD,
    QUERY_TOKEN,
    URL_TOKEN,
    USERNAME,
    Console,
    EventStream,
    console_yaml,
    ids_shown,
)
from tests.support.fake_discord import wait_until
from tests.support.fake_receiver import FakeReceiver
from tests.support.relay import SECRET
from tests.test_delivery import post_event, wait_for_status


@asynccontextmanager
async def stream(
    console: Console, path: str = LIVE_PATH, headers: dict[str, str] | None = None
) -> AsyncIterator[EventStream]:
    """Open a live stream as the page's EventSource would; close it on the way out."""
    response = await console.client.get(
        path, headers={"Accept": "text/event-stream", **AUTH, **(headers or {})}
    )
    try:
        assert response.status == 200, await response.text()
        assert response.content_type == "text/event-stream"
        yield EventStream(response)
    finally:
        response.close()


async def ends(events: EventStream, timeout_s: float = 5.0) -> None:
    """Read the stream to its end, which must come within the timeout."""
    async with asyncio.timeout(timeout_s):
        while await events.next() is not None:
            pass


def shows(delivery_id: int, status: str) -> re.Pattern[str]:
    """A row of the results fragment: the delivery, with its status."""
    return re.compile(
        rf'<td><a href="/deliveries/{delivery_id}">{delivery_id}</a></td>.*?'
        rf'<span class="status status-{status}">{status}</span>',
        re.S,
    )


def live_url_of(page: str) -> str:
    found = re.search(r'<div id="results" data-region="results" data-live="([^"]+)"', page)
    assert found is not None, "the page has no live region"
    return html.unescape(found.group(1))


async def test_a_new_delivery_and_its_status_change_arrive_on_the_stream(
    open_console: ConsoleFactory, receiver: FakeReceiver, store_section: str
) -> None:
    receiver.script(400)  # crm's first delivery dies: a status that then changes
    console = await open_console(console_yaml(receiver, store_section))
    page = await console.page("/deliveries")
    assert '<script src="/static/live.js" defer></script>' in page
    assert '<p class="hint live-status" id="live-status" role="status"></p>' in page
    url = live_url_of(page)
    assert url.startswith(f"{LIVE_PATH}?seen=")

    async with stream(console, url) as events:
        # The page is up to date: the first update is the one with the new delivery.
        await post_event(console.relay, "a refund please")
        [dead] = await wait_for_status(console.relay, "dead")
        first = await events.until("the first update", lambda s: s.event == "update")
        assert first.id is not None
        assert ids_shown(json.loads(first.data)["results"])  # not "No delivery."
        # A lane sends at once: the first update may show the delivery dead already.
        if not shows(dead.id, "dead").search(json.loads(first.data)["results"]):
            await events.update(
                f"delivery {dead.id} dead",
                lambda f: bool(shows(dead.id, "dead").search(f["results"])),
            )

        # Replayed, it is sent: the stream says so, and the counts follow.
        token = console.client.app[CSRF].token(USERNAME)
        await console.replay(dead.id, token=token)
        update = await events.update(
            f"delivery {dead.id} sent", lambda f: bool(shows(dead.id, "sent").search(f["results"]))
        )
    assert "dead <strong>0</strong>" in update["counts"]


async def test_the_stream_keeps_to_the_pages_filters(
    open_console: ConsoleFactory, receiver: FakeReceiver
) -> None:
    console = await open_console(console_yaml(receiver))
    page = await console.page("/deliveries?destination=crm&text=refund")
    url = live_url_of(page)
    assert url.startswith(f"{LIVE_PATH}?destination=crm&text=refund&seen=")
    async with stream(console, url) as events:
        await post_event(console.relay, "hello", session="s1")  # to audit only
        await post_event(console.relay, "a refund please", session="s2")
        await wait_for_status(console.relay, "sent", 3)
        fragments = await events.update(
            "crm's delivery, sent", lambda f: "status-sent" in f["results"]
        )
    shown = ids_shown(fragments["results"])
    assert len(shown) == 1
    assert "No delivery matches these filters" not in fragments["results"]


async def test_an_older_page_is_not_live(
    open_console: ConsoleFactory, receiver: FakeReceiver
) -> None:
    console = await open_console(console_yaml(receiver))
    page = await console.page("/deliveries?before=5")
    assert "data-live" not in page
    assert "live.js" not in page


async def test_a_quiet_stream_sends_heartbeats(
    open_console: ConsoleFactory, receiver: FakeReceiver
) -> None:
    console = await open_console(console_yaml(receiver))
    async with stream(console) as events:
        update = await events.until("the first update", lambda s: s.event == "update")
        assert "No delivery." in update.data  # no `seen`: it starts with the page as it is
        heartbeat = await events.until(
            "a heartbeat", lambda s: s.comment is not None, timeout_s=TEST_LIVE.heartbeat_s * 10
        )
        assert heartbeat.comment == "still here"


async def test_the_stream_ends_when_relay_starts_shutting_down(
    open_console: ConsoleFactory, receiver: FakeReceiver
) -> None:
    console = await open_console(console_yaml(receiver))
    async with stream(console) as events:
        await events.until("the first update", lambda s: s.event == "update")
        console.relay.app[STATE].draining = True
        await ends(events)
    response = await console.get(LIVE_PATH)
    assert response.status == 503
    assert "relay is shutting down" in await response.text()


async def test_closing_the_console_ends_its_streams_at_once(
    open_console: ConsoleFactory, receiver: FakeReceiver
) -> None:
    console = await open_console(console_yaml(receiver))
    async with stream(console) as events:
        await events.until("the first update", lambda s: s.event == "update")
        # aiohttp would wait up to its shutdown timeout (60 s) for a handler still running.
        await asyncio.wait_for(console.client.server.close(), timeout=5)
        await ends(events)


async def test_a_new_password_ends_the_stream(
    open_console: ConsoleFactory, receiver: FakeReceiver
) -> None:
    console = await open_console(console_yaml(receiver))
    state = console.relay.app[STATE]
    async with stream(console) as events:
        await events.until("the first update", lambda s: s.event == "update")
        assert state.config.console is not None
        rotated = replace(state.config.console, password=Secret("a-new-password-8c1d"))
        state.use_config(replace(state.config, console=rotated))
        await ends(events)


async def test_open_streams_are_capped(
    open_console: ConsoleFactory, receiver: FakeReceiver
) -> None:
    console = await open_console(console_yaml(receiver))
    streams = console.client.app[STREAMS]
    opened = [
        await console.client.get(LIVE_PATH, headers=AUTH) for _ in range(TEST_LIVE.max_streams)
    ]
    assert [r.status for r in opened] == [200] * TEST_LIVE.max_streams
    refused = await console.get(LIVE_PATH)
    assert refused.status == 503
    assert refused.headers["Retry-After"] == "30"
    assert f"{TEST_LIVE.max_streams} live streams are open" in await refused.text()

    opened.pop().close()  # a tab closed: its stream ends, and its place is free
    await wait_until("a stream to end", lambda: streams.open < TEST_LIVE.max_streams, 5)
    async with stream(console) as events:
        await events.until("the first update", lambda s: s.event == "update")
    for response in opened:
        response.close()
    await wait_until("every stream to end", lambda: streams.open == 0, 5)


async def test_the_stream_needs_the_credentials_and_good_filters(
    open_console: ConsoleFactory, receiver: FakeReceiver
) -> None:
    console = await open_console(console_yaml(receiver))
    for auth in ({}, {"Authorization": "Basic b3BzOm5vcGU="}):
        response = await console.client.get(LIVE_PATH, headers=auth)
        assert response.status == 401
        assert response.content_type != "text/event-stream"
    response = await console.get(f"{LIVE_PATH}?status=lost")
    assert response.status == 400
    assert "status: expected one of" in await response.text()


async def test_no_secret_on_the_stream(
    open_console: ConsoleFactory, receiver: FakeReceiver, store_section: str
) -> None:
    receiver.script(400)
    console = await open_console(console_yaml(receiver, store_section))
    async with stream(console) as events:
        await post_event(console.relay, "a refund please")
        await wait_for_status(console.relay, "dead")
        update = await events.update("the dead delivery", lambda f: "status-dead" in f["results"])
        raw = events.response
        assert raw.headers["Cache-Control"] == "no-store"
    text = str(update)
    assert "webhook answered 400" in text
    for secret in (URL_TOKEN, QUERY_TOKEN, BEARER_TOKEN, CONSOLE_PASSWORD, SECRET):
        assert secret not in text
    assert receiver.url("/hooks") not in text


def test_the_script_is_a_file_of_the_console() -> None:
    from relay.console.app import STATIC

    script = (STATIC / "live.js").read_text(encoding="utf-8")
    assert "EventSource" in script
    assert "eval(" not in script and "new Function" not in script
    assert "regions[i].innerHTML = part" in script  # only what the console rendered


async def test_the_script_is_served_behind_the_login(
    open_console: ConsoleFactory, receiver: FakeReceiver
) -> None:
    console = await open_console(console_yaml(receiver))
    served = await console.get("/static/live.js")
    assert served.status == 200
    assert served.content_type in ("application/javascript", "text/javascript")
    response = await console.client.get("/static/live.js")
    assert response.status == 401
