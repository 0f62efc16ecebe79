"""The console in-process beside relay: both on 127.0.0.1, sharing one RelayState, so a test
posts events to relay and reads the console, as an operator would."""

from __future__ import annotations

import asyncio
import base64
import html
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.support.fake_receiver import FakeReceiver
from tests.support.relay import event_body, signed_headers
from tests.support.secrets import watch

Client = TestClient[web.Request, web.Application]

USERNAME = "ops"
CONSOLE_PASSWORD = "c0nsole-Pa55-9e1f7d"
URL_TOKEN = "consoleHookTok3n-41b7"
QUERY_TOKEN = "consoleQTok3n-c08e"
BEARER_TOKEN = "consoleBearer-77a2e9f0"
# The dashboard's header (verify.headers, with `required_header`), and credentials a sender
# may add that relay does not check.
HEADER_SECRET = "consoleHdrSecr3t-5d2c"
SENDER_TOKEN = "consoleSenderTok-0b6e"
SENDER_API_KEY = "consoleSenderKey-a93d"
watch(CONSOLE_PASSWORD, URL_TOKEN, QUERY_TOKEN, BEARER_TOKEN)
watch(HEADER_SECRET, SENDER_TOKEN, SENDER_API_KEY)


def basic(username: str, password: str) -> dict[str, str]:
    """The Authorization header of HTTP Basic auth (RFC 7617, UTF-8)."""
    encoded = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {encoded}"}


AUTH = basic(USERNAME, CONSOLE_PASSWORD)
JSON = {"Accept": "application/json"}


def console_yaml(
    receiver: FakeReceiver,
    store_section: str = "",
    *,
    rules: str = "",
    required_header: bool = False,
) -> str:
    """A relay.yaml with a console: messages saying "refund" go to `crm` (the receiver,
    its URL holding tokens), every event to `audit` (stdout); quick retries. Events are
    signed, and with `required_header` must also carry X-Webhook-Secret: HEADER_SECRET
    (post them with post_with_credentials)."""
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
    required = f'\n  headers: {{ X-Webhook-Secret: "{HEADER_SECRET}" }}' if required_header else ""
    return f"""
verify:
  secrets: ["${{SECRET}}"]{required}
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


async def post_with_credentials(
    relay: Client, message: str = "a refund please", **headers: str
) -> tuple[str, dict[str, str]]:
    """Post a chat.push as a bitHuman dashboard set up with the X-Webhook-Secret header
    sends it, signed, with credentials relay does not check beside it; return its event id
    and the headers it was sent with (`headers` adds or replaces some)."""
    body = event_body(message=message, session="s-credentials")
    sent = signed_headers(
        body,
        **{
            "X-Webhook-Secret": HEADER_SECRET,
            "Authorization": f"Bearer {SENDER_TOKEN}",
            "X-API-Key": SENDER_API_KEY,
            **headers,
        },
    )
    response = await relay.post("/webhook", data=body, headers=sent)
    answer = await response.json()
    assert response.status == 200, answer
    return str(answer["event_id"]), {**sent, "Content-Length": str(len(body))}


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


def request_shown(page: str) -> list[tuple[str, str]]:
    """The request's headers a delivery's page lists, as (name, value) text, in order."""
    section = re.search(r'<dl class="headers">(.*?)</dl>', page, re.S)
    assert section is not None, "the page lists no request headers"
    pairs = re.findall(r"<dt>(.*?)</dt>\s*<dd>(.*?)</dd>", section.group(1), re.S)
    return [(html.unescape(re.sub(r"</?code>", "", name)), html.unescape(v)) for name, v in pairs]


def hidden_fields(page: str, form_id: str) -> dict[str, str]:
    """The hidden fields of a form on a page, as a browser would post them."""
    found = re.search(rf'<form\b[^>]*\bid="{form_id}"[^>]*>(.*?)</form>', page, re.S)
    assert found is not None, f"no form #{form_id}"
    return {
        html.unescape(name): html.unescape(value)
        for name, value in re.findall(
            r'<input type="hidden" name="([^"]*)" value="([^"]*)">', found.group(1)
        )
    }


@dataclass(frozen=True)
class Sent:
    """One Server-Sent Event: its type, id and data; or a comment (`comment` set)."""

    event: str = "message"
    id: str | None = None
    data: str = ""
    comment: str | None = None


class EventStream:
    """Reads a text/event-stream answer an event at a time, each read bounded."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def next(self, timeout_s: float = 10.0) -> Sent | None:
        """The next event or comment; None at the end of the stream."""
        fields: dict[str, str] = {}
        data: list[str] = []
        async with asyncio.timeout(timeout_s):
            while True:
                raw = await self.response.content.readline()
                if not raw:
                    return None
                line = raw.decode().rstrip("\n")
                if line.startswith(":"):
                    return Sent(comment=line[1:].strip())
                if not line:
                    if data or fields.get("event"):
                        return Sent(
                            fields.get("event", "message"), fields.get("id"), "\n".join(data)
                        )
                    continue  # the end of a `retry:` block
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "data":
                    data.append(value)
                else:
                    fields[name] = value

    async def until(
        self, what: str, predicate: Callable[[Sent], bool], timeout_s: float = 10.0
    ) -> Sent:
        """Read until an event satisfies `predicate`; fail, naming `what`, at the deadline or
        at the end of the stream."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            left = deadline - asyncio.get_running_loop().time()
            try:
                sent = await self.next(max(left, 0.001))
            except TimeoutError:
                raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}") from None
            assert sent is not None, f"the stream ended before {what}"
            if predicate(sent):
                return sent

    async def update(
        self, what: str, predicate: Callable[[dict[str, str]], bool]
    ) -> dict[str, str]:
        """Read until an `update` event whose fragments satisfy `predicate`; return them."""
        sent = await self.until(
            what, lambda s: s.event == "update" and predicate(json.loads(s.data))
        )
        fragments: dict[str, str] = json.loads(sent.data)
        return fragments
