"""SPEC 8, safety: every route behind Basic auth, the console's headers on every answer,
event content shown as text, and no secret (SPEC 7) on any page or in any JSON twin."""

from __future__ import annotations

import base64
import re
from urllib.parse import quote

import aiohttp

from relay.console.auth import CHALLENGE
from relay.console.keys import CSRF
from relay.console.security import CONTENT_SECURITY_POLICY
from tests.console.conftest import ConsoleFactory
from tests.console.support import (
    AUTH,
    BEARER_TOKEN,
    CONSOLE_PASSWORD,
    HEADER_SECRET,
    JSON,
    QUERY_TOKEN,
    SENDER_API_KEY,
    SENDER_TOKEN,
    URL_TOKEN,
    USERNAME,
    Console,
    console_yaml,
    ids_shown,
    post_with_credentials,
    request_shown,
)
from tests.support.fake_receiver import Answer, FakeReceiver
from tests.support.relay import SECRET
from tests.test_delivery import deliveries, post_event, wait_for_status

ROUTES = [
    ("GET", "/"),
    ("GET", "/deliveries"),
    ("GET", "/deliveries?status=dead"),
    ("GET", "/deliveries/1"),
    ("GET", "/deliveries/999999"),
    ("GET", "/static/console.css"),
    ("GET", "/static/favicon.svg"),
    ("GET", "/static/nothing-here.js"),
    ("GET", "/nowhere"),
    ("HEAD", "/deliveries"),
    ("POST", "/deliveries/1/replay"),
    ("POST", "/deliveries"),
    ("GET", "/deliveries/replay"),
    ("GET", "/deliveries/replay?destination=crm"),
    ("POST", "/deliveries/replay"),
    ("POST", "/deliveries/test"),
    ("GET", "/deliveries/live"),
    ("GET", "/deliveries/live?status=dead"),
    ("HEAD", "/deliveries/live"),
    ("GET", "/static/live.js"),
    ("GET", "/rules"),
    ("GET", "/activity"),
    ("GET", "/conversation?id=s1"),
    ("GET", "/conversation"),
    ("GET", "/conversations"),
    ("GET", "/conversation/live?id=s1"),
    ("GET", "/conversations?agent=A1"),
    ("GET", "/activity?period=30d"),
    ("GET", "/rules?period=7d"),
    ("HEAD", "/rules"),
]


def _basic(value: str) -> str:
    return "Basic " + base64.b64encode(value.encode()).decode()


WRONG = {
    "no credentials": None,
    "a wrong password": _basic(f"{USERNAME}:not-the-password"),
    "a wrong username": _basic(f"relay:{CONSOLE_PASSWORD}"),
    "the password with a suffix": _basic(f"{USERNAME}:{CONSOLE_PASSWORD}x"),
    "no colon": _basic(USERNAME + CONSOLE_PASSWORD),
    "not base64": "Basic !!!not-base64!!!",
    "another scheme": f"Bearer {CONSOLE_PASSWORD}",
    "empty": "",
}


def assert_console_headers(response: aiohttp.ClientResponse) -> None:
    headers = response.headers
    assert headers["Cache-Control"] == "no-store", response.url
    assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY, response.url
    assert headers["X-Content-Type-Options"] == "nosniff", response.url
    assert headers["Referrer-Policy"] == "same-origin", response.url


async def started(open_console: ConsoleFactory, receiver: FakeReceiver) -> Console:
    console = await open_console(console_yaml(receiver))
    await post_event(console.relay, "a refund please")
    await wait_for_status(console.relay, "sent", 2)
    return console


async def test_every_route_needs_the_credentials(
    open_console: ConsoleFactory, receiver: FakeReceiver
) -> None:
    assert CHALLENGE == 'Basic realm="relay console", charset="UTF-8"'
    console = await started(open_console, receiver)
    for method, path in ROUTES:
        for what, authorization in WRONG.items():
            headers = {} if authorization is None else {"Authorization": authorization}
            response = await console.client.request(
                method, path, headers=headers, allow_redirects=False
            )
            assert response.status == 401, f"{method} {path} with {what}"
            assert response.headers["WWW-Authenticate"] == CHALLENGE
            assert_console_headers(response)
            assert CONSOLE_PASSWORD not in await response.text()
        response = await console.client.request(method, path, headers=AUTH, allow_redirects=False)
        assert response.status != 401, f"{method} {path} with the credentials"
        response.close()  # a live stream goes on until it is closed
    assert len(receiver.requests) == 1  # the one event; no replay got through
    assert len(await deliveries(console.relay)) == 2  # and no test event


async def test_every_answer_carries_the_consoles_headers(
    open_console: ConsoleFactory, receiver: FakeReceiver
) -> None:
    console = await started(open_console, receiver)
    sent = (await wait_for_status(console.relay, "sent", 2))[0]
    own = {"Origin": console.origin, **AUTH}
    answers = [
        (await console.get("/"), 302),
        (await console.get("/deliveries"), 200),
        (await console.get("/deliveries", as_json=True), 200),
        (await console.get(f"/deliveries/{sent.id}"), 200),
        (await console.get(f"/deliveries/{sent.id}", as_json=True), 200),
        (await console.get("/deliveries/424242"), 404),
        (await console.get("/deliveries?status=lost"), 400),
        (await console.get("/deliveries?since=yesterday", as_json=True), 400),
        (await console.get("/static/console.css"), 200),
        (await console.get("/static/../auth.py"), 404),
        (await console.get("/nowhere"), 404),
        (await console.get("/deliveries", auth={}), 401),
        (await console.replay(sent.id, token=None), 403),
        (await console.replay(sent.id, token=console.client.app[CSRF].token(USERNAME)), 303),
        (await console.client.put("/deliveries", headers=own), 405),
        (await console.get("/deliveries/replay?destination=crm"), 200),
        (await console.get("/deliveries/replay?since=never"), 400),
        (await console.client.post("/deliveries/replay", headers=AUTH), 403),
        (await console.client.post("/deliveries/test", headers=AUTH), 403),
        (await console.get("/deliveries/live"), 200),
        (await console.get("/deliveries/live?status=lost"), 400),
        (await console.get("/static/live.js"), 200),
    ]
    for response, status in answers:
        assert response.status == status, (response.url, await response.text())
        assert_console_headers(response)
    css = answers[8][0]
    assert css.content_type == "text/css"
    assert answers[-3][0].content_type == "text/event-stream"
    answers[-3][0].close()


async def test_pages_have_a_title_a_main_and_labelled_controls(
    open_console: ConsoleFactory, receiver: FakeReceiver
) -> None:
    console = await started(open_console, receiver)
    sent = (await wait_for_status(console.relay, "sent", 2))[0]
    for path in ("/deliveries", f"/deliveries/{sent.id}", "/deliveries/424242"):
        page = await (await console.get(path)).text()
        assert re.search(r"<title>[^<]+</title>", page), path
        assert page.count("<main") == 1, path
        assert '<a class="skip" href="#main">' in page
        # Scripts only from the console's own files, never inline; no inline style.
        scripts = re.findall(r"<script\b[^>]*>(.*?)</script>", page, re.S)
        assert page.count("<script") == len(scripts), path
        assert all(not body.strip() for body in scripts), path
        assert re.findall(r"<script\b([^>]*)>", page) in ([], [' src="/static/live.js" defer'])
        assert " style=" not in page and "<style" not in page
        controls = re.findall(r'<(?:input|select)\b[^>]*\bid="([^"]+)"', page)
        for control in controls:
            assert f'<label for="{control}">' in page, f"{path}: #{control} has no label"
    visible = r'<(?:input|select)\b(?![^>]*type="hidden")'
    # The six filters, and the Test button's event type and message.
    assert len(re.findall(visible, await console.page("/deliveries"))) == 8


HOSTILE = "<script>alert(1)</script> <img src=x onerror=alert(1)> {{7*7}} refund"


async def test_hostile_event_content_is_shown_as_text(
    open_console: ConsoleFactory, receiver: FakeReceiver, store_section: str
) -> None:
    console = await open_console(console_yaml(receiver, store_section))
    await post_event(console.relay, HOSTILE)
    await wait_for_status(console.relay, "sent", 2)

    listing = await console.page("/deliveries?text=" + quote("<script>alert(1)</script> <img"))
    rows = (await console.json("/deliveries"))["deliveries"]
    assert len(rows) == 2  # to crm and to audit
    delivery_id = rows[0]["id"]
    shown = await console.page(f"/deliveries/{delivery_id}")
    assert len(ids_shown(listing)) == 2  # the text search found them, hostile as it is
    for page in (listing, shown):
        # The one script is the console's own file: the event's never becomes one.
        assert page.count("<script") == page.count('<script src="/static/live.js" defer>')
        assert "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in shown
    assert "&lt;img src=x onerror=alert(1)&gt;" in shown
    assert "{{7*7}}" in shown
    # The filter is echoed into its field as text too.
    assert 'value="&lt;script&gt;alert(1)&lt;/script&gt; &lt;img"' in listing
    event = (await console.json(f"/deliveries/{delivery_id}"))["event"]
    assert event["data"]["message"] == HOSTILE  # the JSON twin gives the data as it is


async def test_no_secret_on_any_page_or_in_any_json(
    open_console: ConsoleFactory, receiver: FakeReceiver, store_section: str
) -> None:
    url = receiver.url(f"/hooks/{URL_TOKEN}/in?token={QUERY_TOKEN}")
    # The receiver echoes what relay sent it: the URL and the bearer token.
    receiver.script(
        Answer(503, f"busy: {url} with Bearer {BEARER_TOKEN}"),
        Answer(400, f"no hook /hooks/{URL_TOKEN}/in, token={QUERY_TOKEN}"),
    )
    # The event comes with the dashboard's secret header, signed, and with credentials
    # relay does not check: its page shows the request, and none of them.
    watching = store_section + "\nconversations:\n  unanswered_after: 1h\n"
    console = await open_console(console_yaml(receiver, watching, required_header=True))
    _, sent = await post_with_credentials(console.relay, "a refund please")
    signature = sent["X-bitHuman-Signature"].removeprefix("sha256=")
    [dead] = await wait_for_status(console.relay, "dead")
    [audited] = await wait_for_status(console.relay, "sent")

    texts = []
    for path in (
        "/deliveries",
        "/deliveries?destination=crm",
        "/deliveries?status=dead",
        f"/deliveries/{dead.id}",
        f"/deliveries/{audited.id}",
        "/deliveries/424242",
        "/deliveries?status=lost",
        "/deliveries/replay?destination=crm",
        "/deliveries/replay?status=dead&text=refund",
        "/conversations",
        "/conversation?id=s-credentials",
        "/activity",
        "/activity?period=30d",
        "/rules",
    ):
        for as_json in (False, True):
            response = await console.get(path, as_json=as_json)
            assert response.status in (200, 400, 404), path
            texts.append(await response.text())
    # What the Test button says relay answered.
    token = console.client.app[CSRF].token(USERNAME)
    own = {"Origin": console.origin, **AUTH}
    pressed = await console.client.post(
        "/deliveries/test", data={"csrf_token": token}, headers=own, allow_redirects=False
    )
    texts.append(await console.page(pressed.headers["Location"]))
    assert "relay accepted the test event" in texts[-1]
    # The test event's own page: it was sent with the configured secrets, as relay sends it.
    tested = max(await deliveries(console.relay), key=lambda d: d.id)
    assert tested.id > audited.id
    for as_json in (False, True):
        texts.append(await (await console.get(f"/deliveries/{tested.id}", as_json=as_json)).text())
    assert "webhook answered 400" in texts[6]  # the dead delivery's page shows its errors
    for shown in (texts[6], texts[8], texts[-2]):  # the delivery pages show their requests
        assert dict(request_shown(shown))["X-Webhook-Secret"] == "(verified, not shown)"
    assert dict(request_shown(texts[6]))["Authorization"] == "(not shown)"
    for text in texts:
        for secret in (URL_TOKEN, QUERY_TOKEN, BEARER_TOKEN, CONSOLE_PASSWORD, SECRET):
            assert secret not in text
        for secret in (HEADER_SECRET, SENDER_TOKEN, SENDER_API_KEY, signature):
            assert secret not in text
        assert receiver.url("/hooks") not in text


async def test_a_json_twin_is_json_only_when_asked(
    open_console: ConsoleFactory, receiver: FakeReceiver
) -> None:
    console = await started(open_console, receiver)
    browser = {"Accept": "text/html,application/xhtml+xml,application/json;q=0.9,*/*;q=0.8"}
    for headers, kind in ((browser, "text/html"), ({}, "text/html"), (JSON, "application/json")):
        response = await console.client.get("/deliveries", headers={**headers, **AUTH})
        assert response.content_type == kind
        assert response.headers["Vary"] == "Accept"
