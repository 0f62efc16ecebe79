"""Issue 17: the deliveries page costs the same at any size of the store, and never holds up
a webhook. A filter no index answers (event type, text, time) reads SEARCH_ROWS deliveries
a request: when those hold less than a page, the page says how far it searched and links
to the next stretch (both stores). On SQLite, a page still being read waits on the store's
reader, never the writer."""

from __future__ import annotations

import asyncio

import pytest

from relay.app import STATE
from relay.console import listing
from relay.store.sqlite import SqliteStore
from tests.console.conftest import ConsoleFactory
from tests.console.support import Console, console_yaml, ids_shown
from tests.console.test_live import live_url_of, stream
from tests.store.test_sqlite import HeldRead
from tests.support.fake_receiver import FakeReceiver
from tests.test_delivery import post_event


async def refund_then_hellos(open_quiet_console: ConsoleFactory, yaml_text: str) -> Console:
    """A refund (to crm, then audit: ids 1 and 2), then four hellos (to audit: 3 to 6);
    no worker, so they stay pending."""
    console = await open_quiet_console(yaml_text)
    await post_event(console.relay, "a refund please", session="s0")
    for n in range(4):
        await post_event(console.relay, f"hello {n}", session=f"s{n + 1}")
    everything = [d["id"] for d in (await console.json("/deliveries"))["deliveries"]]
    assert everything == [6, 5, 4, 3, 2, 1]
    return console


async def test_a_search_says_how_far_it_read_and_goes_on_below(
    open_quiet_console: ConsoleFactory,
    receiver: FakeReceiver,
    store_section: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(listing, "SEARCH_ROWS", 3)
    console = await refund_then_hellos(open_quiet_console, console_yaml(receiver, store_section))

    # The newest three (4 to 6) hold no refund: the page says so, and offers what is older.
    page = await console.page("/deliveries?text=refund")
    assert ids_shown(page) == []
    assert '<p class="empty">No delivery matches these filters down to id 4.</p>' in page
    assert (
        '<p class="searched" id="searched">A search reads 3 deliveries at a time:'
        ' <a rel="next" href="/deliveries?text=refund&amp;before=4">Search older</a></p>'
    ) in page
    assert ">Older</a>" not in page
    twin = await console.json("/deliveries?text=refund")
    assert (twin["deliveries"], twin["searched_to"]) == ([], 4)
    assert (twin["next"], twin["next_before"]) == ("/deliveries?text=refund&before=4", 4)

    # Below: the refund's two, and nothing older to search.
    older = await console.page("/deliveries?text=refund&before=4")
    assert ids_shown(older) == [2, 1]
    assert 'id="searched"' not in older and 'rel="next"' not in older
    assert '<a href="/deliveries?text=refund">Newest</a>' in older
    twin = await console.json("/deliveries?text=refund&before=4")
    assert (twin["searched_to"], twin["next"], twin["next_before"]) == (None, None, None)

    # Fewer than a page found in the stretch: they show, and the page says there is more
    # to search.
    page = await console.page("/deliveries?text=hello")
    assert ids_shown(page) == [6, 5, 4]
    assert (
        '<p class="searched" id="searched">No more matches down to id 4. A search reads 3'
        ' deliveries at a time: <a rel="next" href="/deliveries?text=hello&amp;before=4">'
        "Search older</a></p>"
    ) in page
    assert ids_shown(await console.page("/deliveries?text=hello&before=4")) == [3]
    # A destination: every match, on one page where the store has an index for it (SQLite),
    # or a stretch at a time where it has none (Redis), the page saying so.
    shown, path = [], "/deliveries?destination=audit"
    for _ in range(5):
        twin = await console.json(path)
        shown += [d["id"] for d in twin["deliveries"]]
        if twin["next"] is None:
            break
        path = twin["next"]
    assert shown == [6, 5, 4, 3, 2]


async def test_the_live_stream_of_a_search_follows_its_stretch(
    open_quiet_console: ConsoleFactory,
    receiver: FakeReceiver,
    store_section: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(listing, "SEARCH_ROWS", 3)
    console = await refund_then_hellos(open_quiet_console, console_yaml(receiver, store_section))
    page = await console.page("/deliveries?text=hello")
    async with stream(console, live_url_of(page)) as events:
        await post_event(console.relay, "hello again", session="s9")  # id 7, to audit
        fragments = await events.update(
            "the new hello", lambda f: ids_shown(f["results"]) == [7, 6, 5]
        )
    assert "No more matches down to id 5." in fragments["results"]
    assert 'href="/deliveries?text=hello&amp;before=5">Search older</a>' in fragments["results"]


async def test_a_page_still_being_read_holds_up_no_webhook(
    open_quiet_console: ConsoleFactory, receiver: FakeReceiver
) -> None:
    """While the console's reads wait on the store's reader (held here, as by a long
    search), a webhook goes through: nothing on its path waits on the reader."""
    console = await open_quiet_console(console_yaml(receiver))  # SQLite
    store = console.relay.app[STATE].store
    assert isinstance(store, SqliteStore)
    await post_event(console.relay, "hello", session="s0")
    held = HeldRead()
    holding = await held.hold(store)  # a long search, say
    page = asyncio.ensure_future(console.page("/deliveries"))
    # bitHuman does not retry: the webhook's 200 must not wait for the page.
    await asyncio.wait_for(post_event(console.relay, "a refund please", session="s1"), 10)
    assert not page.done()  # the page waits for the reader
    held.release.set()
    assert await holding == (1, 1)
    assert ids_shown(await asyncio.wait_for(page, 10)) == [3, 2, 1]
