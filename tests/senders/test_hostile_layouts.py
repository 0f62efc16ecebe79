"""Layouts under event content that strains their limits: a notification that a service's
own schema or limits would refuse would be retried as an internal error, then lost."""

from __future__ import annotations

from typing import Any

from relay.events import event_from_payload
from relay.formatting import TRUNCATION_MARKER, fit_lines, summarize
from relay.notification import Notification
from relay.senders import discord, slack
from tests.senders.test_slack import assert_valid_blocks, texts
from tests.support.bithuman import ACCOUNT_DATA
from tests.support.fake_discord import discord_validator
from tests.support.notifications import notification


def video_completed(video_url: str) -> Notification:
    data = {**ACCOUNT_DATA["video.completed"], "video_url": video_url}
    payload = {"id": "evt_1", "event": "video.completed", "created": 1780417371, "data": data}
    event = event_from_payload(payload, event_id="evt_1", received_at=1780417371.0)
    return Notification(event=event, rule="agents")


def discord_errors(payload: dict[str, Any]) -> list[str]:
    return [e.message for e in discord_validator().iter_errors(payload)]


def test_a_slack_link_that_escaping_makes_too_long_is_shown_as_text() -> None:
    url = "https://x.io/?" + "&a" * 993  # 2,000 characters, 4,000 more once escaped
    blocks = slack.build_message(video_completed(url))["blocks"]
    assert_valid_blocks(blocks)
    [shown] = [t for t in texts(blocks, "section") if t.startswith("Watch the video: ")]
    assert shown.endswith(TRUNCATION_MARKER) and len(shown) <= slack.SECTION_LIMIT
    assert "<https://" not in shown


def test_a_slack_link_that_fits_stays_a_link() -> None:
    url = "https://x.io/v.mp4?a=1&b=2"
    blocks = slack.build_message(video_completed(url))["blocks"]
    assert "<https://x.io/v.mp4?a=1&amp;b=2|Watch the video>" in texts(blocks, "section")


def test_a_discord_link_is_sent_as_a_strict_uri() -> None:
    payload = discord.build_payload(
        summarize(video_completed("https://cdn.example.com/vidéo|a{b}.mp4")), "video", 1.7e9
    )
    assert payload["embeds"][0]["url"] == "https://cdn.example.com/vid%C3%A9o%7Ca%7Bb%7D.mp4"
    assert discord_errors(payload) == []


def test_discord_fields_are_never_blank() -> None:
    """Discord trims a field's name and value and refuses an empty one (50035, permanent)."""
    payload = discord.build_payload(
        summarize(notification("custom.event", **{"": "v", "note": " ", "  ": "\t"})), "x", 1.7e9
    )
    fields = payload["embeds"][0]["fields"]
    assert fields and all(f["name"].strip() and f["value"].strip() for f in fields), fields
    assert discord_errors(payload) == []


def test_a_transcript_line_longer_than_the_room_shows_its_start() -> None:
    lines = ["user: " + "x" * 5000, "assistant: short answer", "user: thanks"]
    shown = fit_lines(lines, 4096)
    assert len(shown) <= 4096
    assert shown.startswith("user: xxx") and shown.endswith(f"{TRUNCATION_MARKER}\n… and 2 more")
    assert fit_lines(["a", "b"], 10) == "a\nb"
    assert fit_lines(["a" * 20, "b"], 40) == "a" * 20 + "\nb"
