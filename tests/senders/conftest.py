"""Fixtures for the sender tests: every kind of fake destination at once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from tests.support.fake_discord import FakeDiscord
from tests.support.fake_slack import FakeSlack
from tests.support.smtp import Handler, SmtpServer


@dataclass
class Fakes:
    slack: FakeSlack
    discord: FakeDiscord
    smtp: SmtpServer
    handler: Handler


@pytest.fixture
async def fakes() -> AsyncIterator[Fakes]:
    """A fake Slack, a fake Discord and an aiosmtpd server, all on 127.0.0.1."""
    slack = await FakeSlack().start()
    discord = await FakeDiscord().start()
    handler = Handler()
    smtp = SmtpServer(handler).start()
    yield Fakes(slack, discord, smtp, handler)
    smtp.stop()
    await discord.close()
    await slack.close()
