"""SPEC 8: the console works with several processes. Two relays share one store (a SQLite
file, a redis-server); what one delivered shows in the other's console, attempts and all."""

from __future__ import annotations

from pathlib import Path

from tests.console.conftest import ConsoleFactory
from tests.console.support import console_yaml
from tests.support.fake_receiver import FakeReceiver
from tests.test_delivery import post_event, wait_for_status


async def test_what_one_replica_delivered_shows_in_the_others_console(
    open_console: ConsoleFactory,
    open_quiet_console: ConsoleFactory,
    receiver: FakeReceiver,
    store_section: str,
    tmp_path: Path,
) -> None:
    shared = store_section or f'store: {{ url: "sqlite:{tmp_path / "shared.db"}" }}\n'
    one = await open_console(console_yaml(receiver, shared))
    other = await open_quiet_console(console_yaml(receiver, shared))  # sends nothing itself
    await post_event(one.relay, "a refund please")
    sent = await wait_for_status(one.relay, "sent", 2)
    assert len(receiver.requests) == 1

    listing = await other.json("/deliveries")
    shown = {(d["id"], d["destination"], d["status"], d["attempts"]) for d in listing["deliveries"]}
    assert shown == {(d.id, d.destination, "sent", 1) for d in sent}
    assert listing["counts"]["by_status"] == {"pending": 0, "sent": 2, "failed": 0, "dead": 0}
    crm = next(d for d in sent if d.destination == "crm")
    page = await other.json(f"/deliveries/{crm.id}")
    assert [a["outcome"] for a in page["attempts"]] == ["sent"]
