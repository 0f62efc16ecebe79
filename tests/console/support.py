"""The console in-process beside relay: both on 127.0.0.1, sharing one RelayState, so a test
posts events to relay and reads the console, as an operator would."""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.support.fake_receiver import FakeReceiver
from tests.support.secrets import watch

Client = TestClient[web.Request, web.Application]

USERNAME = "ops"
CONSOLE_PASSWORD = "c0nsole-Pa55-9e1f7d"
URL_TOKEN = "consoleHookTok3n-41b7"
QUERY_TOKEN = "consoleQTok3n-c08e"
BEARER_TOKEN = "consoleBearer-77a2e9f0"
watch(CONSOLE_PASSWORD, URL_TOKEN, QUERY_TOKEN, BEARER_TOKEN)


def basic(username: str, password: str) -> dict[str, str]:
    """The Authorization header of HTTP Basic auth (RFC 7617, UTF-8)."""
    encoded = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {encoded}"}


AUTH = basic(USERNAME, CONSOLE_PASSWORD)
JSON = {"Accept": "application/json"}


def console_yaml(receiver: FakeReceiver, store_section: str = "", *, rules: str = "") -> str:
    """A relay.yaml with a console: messages saying "refund" go to `crm` (the receiver,
    its URL holding tokens), every event to `audit` (stdout); quick retries."""
    url = receiver.url(f"/hooks/{URL_TOKEN}/in?token={QUERY_TOKEN}")
    rules = (
        rules
        or """
  - name: refunds
    when: { message: { contains: refund } }
    send_to: [crm]
  - name: everything
    send_to: [audit]
"""
    )
    return f"""
verify:
  secrets: ["${{SECRET}}"]
delivery:
  max_attempts: 3
  backoff: {{ first: 10ms, max: 20ms }}
destinations:
  crm:
    type: webhook
    url: "{url}"
    headers: {{ Authorization: "Bearer {BEARER_TOKEN}" }}
  audit: {{ type: console }}
rules:{rules}
console:
  listen: 127.0.0.1:0
  username: {USERNAME}
  password: "${{CONSOLE_PASSWORD}}"
{store_section}"""


@dataclass
class Console:
    """relay and its console, in-process."""

    relay: Client
    client: Client

    @property
    def origin(self) -> str:
        return f"http://{self.client.host}:{self.client.port}"

    async def get(
        self, path: str, *, as_json: bool = False, auth: dict[str, str] = AUTH
    ) -> aiohttp.ClientResponse:
        headers = {**auth, **(JSON if as_json else {"Accept": "text/html,*/*;q=0.8"})}
        return await self.client.get(path, headers=headers, allow_redirects=False)

    async def page(self, path: str) -> str:
        """A page's HTML, after checking it answered 200."""
        response = await self.get(path)
        text = await response.text()
        assert response.status == 200, text
        assert response.content_type == "text/html"
        return text

    async def json(self, path: str) -> Any:
        response = await self.get(path, as_json=True)
        assert response.status == 200, await response.text()
        assert response.content_type == "application/json"
        return await response.json()

    async def token(self, delivery_id: int) -> str:
        """The CSRF token of a delivery's Replay form, as a browser would read it."""
        found = re.search(
            r'name="csrf_token" value="([^"]*)"', await self.page(f"/deliveries/{delivery_id}")
        )
        assert found is not None, "the page has no Replay form"
        return html.unescape(found.group(1))

    async def replay(
        self, delivery_id: int, *, token: str | None, headers: dict[str, str] | None = None
    ) -> aiohttp.ClientResponse:
        """POST the Replay form (from the console's own origin unless headers say)."""
        form = {} if token is None else {"csrf_token": token}
        return await self.client.post(
            f"/deliveries/{delivery_id}/replay",
            data=form,
            headers={**AUTH, **({"Origin": self.origin} if headers is None else headers)},
            allow_redirects=False,
        )


def ids_shown(page: str) -> list[int]:
    """The delivery ids a list page links to, in order."""
    return [int(n) for n in re.findall(r'<td><a href="/deliveries/(\d+)">', page)]
