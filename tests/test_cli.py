"""The command line: check, route, sign, send-test."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web

from relay.cli import main
from relay.send_test import EVENTS
from tests.conftest import RelayClientFactory
from tests.support.bithuman import (
    ACCOUNT_DATA,
    ACCOUNT_SECRET,
    DASHBOARD_HEADER_VALUE,
    TEST_BUTTON,
    account_body,
    bithuman_signature,
    bithuman_verify,
)
from tests.support.fake_discord import wait_until
from tests.support.local_server import serve_locally
from tests.support.processes import RelayProcesses, run_cli
from tests.support.relay import CHAT_PUSH, SECRET, Output

READY = account_body("agent.ready", ACCOUNT_DATA["agent.ready"], created=1780417371)

ROOT = Path(__file__).resolve().parents[1]


def test_check_example_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-c", str(ROOT / "relay.yaml.example")]) == 0
    captured = capsys.readouterr()
    assert captured.out == "OK: 5 rules, 1 destinations\n"
    assert captured.err == ""  # session events are authenticated: no warning


def test_check_prints_every_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as exit_info:
        main(["check", "-c", "config/testdata/three-errors.yaml"])
    assert exit_info.value.code == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    errors = captured.err.splitlines()
    assert len(errors) == 3
    assert all(line.startswith("config/testdata/three-errors.yaml:") for line in errors)


def test_check_uses_relay_config_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELAY_CONFIG", str(ROOT / "relay.yaml.example"))
    assert main(["check"]) == 0
    assert capsys.readouterr().out.startswith("OK:")


def test_sign_reproduces_githubs_test_vector(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = tmp_path / "body.txt"
    body.write_bytes(b"Hello, World!")
    assert main(["sign", str(body), "--secret", "It's a Secret to Everybody"]) == 0
    assert capsys.readouterr().out == (
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17\n"
    )


def test_sign_with_a_timestamp_gives_the_account_signature(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = tmp_path / "ready.json"
    body.write_bytes(READY)
    assert main(["sign", str(body), "--secret", ACCOUNT_SECRET, "--timestamp", "1780417371"]) == 0
    signature = capsys.readouterr().out.strip()
    assert signature == bithuman_signature(ACCOUNT_SECRET, "1780417371", READY)
    assert bithuman_verify(ACCOUNT_SECRET, "1780417371", READY, signature)


def test_sign_refuses_a_timestamp_that_is_not_unix_seconds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = tmp_path / "ready.json"
    body.write_bytes(READY)
    assert main(["sign", str(body), "--secret", "s", "--timestamp", "2026-06-02"]) == 2
    assert capsys.readouterr().err == (
        "relay sign: --timestamp takes Unix seconds, e.g. 1780417371\n"
    )


def test_sign_says_which_file_it_cannot_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.json"
    assert main(["sign", str(missing), "--secret", "s"]) == 1
    assert capsys.readouterr().err == f"{missing}: cannot read: No such file or directory\n"


async def test_sign_reads_stdin() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "relay.cli",
        "sign",
        "--secret",
        "It's a Secret to Everybody",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(process.communicate(b"Hello, World!"), 30)
    assert out.decode().strip() == (
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    )


def test_route_explains_and_sends_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    event = tmp_path / "event.json"
    event.write_bytes(CHAT_PUSH.replace(b"Hello, I need help with my order", b"I want a REFUND"))
    monkeypatch.chdir(tmp_path)  # the example's relative store path must not be created
    assert main(["route", str(event), "-c", str(ROOT / "relay.yaml.example")]) == 0
    out = capsys.readouterr().out
    assert "rule joins: no match\n    event 'chat.push' does not match room.join\n" in out
    assert "rule refunds: MATCHED -> stdout, stop\n" in out
    assert "rule unhappy: skipped (an earlier matching rule has stop: true)\n" in out
    assert "--- stdout (rule refunds, template refund) ---\n" in out
    assert (
        "== Refund request from agent_abc123 ==\nI want a REFUND (session session_xyz789)\n" in out
    )
    assert not (tmp_path / "relay-data").exists()


def test_route_reports_a_bad_event(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"agent_id": "a", "data": {}}))
    assert main(["route", str(event), "-c", str(ROOT / "relay.yaml.example")]) == 1
    assert capsys.readouterr().out == f"{event}: missing required field 'event_type'\n"


def test_route_explains_the_test_buttons_data_less_event(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    event = tmp_path / "test.json"
    event.write_bytes(TEST_BUTTON)
    assert main(["route", str(event), "-c", str(ROOT / "relay.yaml.example")]) == 0
    out = capsys.readouterr().out
    event_id = hashlib.sha256(TEST_BUTTON).hexdigest()
    assert out.startswith(f"session event test from test_agent_123 (event_id {event_id})\n\n")
    assert "rule tests: MATCHED -> stdout\n    event 'test' matches 'test'\n" in out
    assert "rule refunds: no match\n    event 'test' does not match chat.push\n" in out
    assert "--- stdout (rule tests) ---\n== Test event from bitHuman ==\nThis is a test" in out


def test_route_reads_an_account_webhook_body_as_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    event = tmp_path / "video.json"
    event.write_bytes(
        account_body("video.completed", ACCOUNT_DATA["video.completed"], created=1780417371)
    )
    assert main(["route", str(event), "-c", str(ROOT / "relay.yaml.example")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("account webhook video.completed from A80HVD8577 (event_id evt_a1b2c3)")
    assert "rule agents: MATCHED -> stdout\n    event 'video.completed' matches 'video.*'\n" in out
    assert "rule joins: no match\n" in out
    assert "== Video completed for agent A80HVD8577 ==\nA 12.5 s video is ready.\n" in out
    assert "  Watch the video: https://videos.example.com/job_7d2f0c1a9b.mp4" in out


def route_chat_push(tmp_path: Path, capsys: pytest.CaptureFixture[str], config_text: str) -> str:
    """Run `relay route` on the seed chat.push with this config; return what it printed."""
    config = tmp_path / "relay.yaml"
    config.write_text(config_text)
    event = tmp_path / "chat.json"
    event.write_bytes(CHAT_PUSH)
    assert main(["route", str(event), "-c", str(config)]) == 0
    return capsys.readouterr().out


def test_route_says_what_a_threaded_rule_would_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = route_chat_push(
        tmp_path,
        capsys,
        "destinations:\n"
        '  forum: { type: discord, webhook_url: "https://discord.com/api/webhooks/1/t",'
        " forum: true }\n"
        "rules:\n  - { name: conversations, send_to: [forum], thread: session }\n",
    )
    assert (
        "--- forum (rule conversations) ---\n"
        "thread: session: in the thread of conversation session_xyz789; the conversation's"
        " first notification starts it (shown below), later ones reply in it\n"
        "POST https://discord.com/<secret>?wait=true\n"
    ) in out
    assert '"thread_name": "Conversation session_xyz789 · agent_abc123"' in out


def test_route_says_what_a_digested_rule_would_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = route_chat_push(
        tmp_path,
        capsys,
        "destinations: { stdout: { type: console } }\n"
        "rules:\n  - { name: transcripts, send_to: [stdout], digest: 10m }\n",
    )
    assert (
        "--- stdout (rule transcripts) ---\n"
        "digest: 600s: the conversation's events of that window go out together, as one"
        " transcript, when it closes (this event alone shown below)\n"
        "== Conversation with agent_abc123: 1 event ==\n"
        "09:51:25 user: Hello, I need help with my order\n"
    ) in out


def test_route_names_the_missing_field_of_an_account_body(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    event = tmp_path / "ready.json"
    event.write_text(json.dumps({"id": "evt_1", "event": "agent.ready", "data": {}}))
    assert main(["route", str(event), "-c", str(ROOT / "relay.yaml.example")]) == 1
    assert capsys.readouterr().out == f"{event}: missing required field 'created'\n"


async def test_send_test_gets_200_for_every_event_against_the_example_config(
    processes: RelayProcesses, tmp_path: Path
) -> None:
    env = {"RELAY_PORT": "0", "RELAY_DATA": str(tmp_path / "data")}
    example = str(ROOT / "relay.yaml.example")
    relay = await processes.start(Path(example), env=env)
    for event in EVENTS:
        args = ("--url", relay.webhook_url, "--event", event, "--message", "I want a refund")
        status, out = await run_cli("send-test", "-c", example, *args, env=env)
        assert status == 0, (event, out)
        assert out.startswith("200 OK\n"), (event, out)
        assert '"status": "accepted"' in out and '"deliveries": 1' in out, (event, out)
    await wait_until(
        "every send-test event delivered",
        lambda: run_cli_sync_sent(example, env) == len(EVENTS),
        10.0,
    )
    assert await relay.terminate() == 0


def run_cli_sync_sent(config: str, env: dict[str, str]) -> int:
    """Count the `sent` lines of `relay deliveries`."""
    result = subprocess.run(
        [sys.executable, "-m", "relay.cli", "deliveries", "-c", config, "--status", "sent"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=30,
        check=True,
    )
    return sum(" sent " in line for line in result.stdout.splitlines())


DASHBOARD_CONFIG = """
verify:
  headers: { X-Webhook-Secret: "${DASHBOARD}" }
destinations:
  stdout: { type: console }
rules:
  - name: tests
    when: { event: test }
    send_to: [stdout]
"""


async def test_send_test_event_test_authenticates_with_the_configs_headers(
    relay_client: RelayClientFactory, tmp_path: Path, output: Output
) -> None:
    client = await relay_client(DASHBOARD_CONFIG, DASHBOARD=DASHBOARD_HEADER_VALUE)
    config = tmp_path / "relay.yaml"
    config.write_text(DASHBOARD_CONFIG.replace("${DASHBOARD}", DASHBOARD_HEADER_VALUE))
    url = str(client.make_url("/webhook"))
    for _ in range(2):  # each run is a new event, not a duplicate of the last
        status, out = await send_test("-c", str(config), "--url", url, "--event", "test")
        assert status == 0, out
        assert '"status": "accepted"' in out and '"deliveries": 1' in out
    await wait_until("two test notifications", lambda: len(output.blocks()) == 2, 5.0)
    assert output.blocks()[0].startswith("== Test event from bitHuman ==")


async def test_send_test_account_event_without_an_account_secret_says_how(
    tmp_path: Path,
) -> None:
    config = tmp_path / "relay.yaml"
    config.write_text("destinations: { stdout: { type: console } }\n")
    status, out = await send_test("-c", str(config), "--event", "agent.ready")
    assert status == 1
    assert out == (
        "relay send-test: agent.ready is an account webhook, signed with the account secret: "
        "set verify.account.secrets in the config, or give --secret\n"
    )


async def test_send_test_account_event_with_a_wrong_secret_is_refused(
    relay_client: RelayClientFactory,
) -> None:
    client = await relay_client(
        CONFIG.replace("verify:\n", "verify:\n  account: { secrets: [whsec_a] }\n")
    )
    url = str(client.make_url("/webhook"))
    status, out = await send_test("--url", url, "--secret", "whsec_b", "--event", "video.failed")
    assert status == 1
    assert out == '401 Unauthorized\n{"error": "invalid signature"}\n'
    status, out = await send_test("--url", url, "--secret", "whsec_a", "--event", "video.failed")
    assert status == 0, out


CONFIG = """
verify:
  secrets: ["${SECRET}"]
destinations:
  stdout: { type: console }
rules:
  - name: all
    send_to: [stdout]
"""


async def send_test(*args: str) -> tuple[int, str]:
    return await run_cli("send-test", *args)


async def test_send_test_twice_is_accepted_twice(relay_client: RelayClientFactory) -> None:
    client = await relay_client(CONFIG)
    url = str(client.make_url("/webhook"))
    for event in ("room.join", "chat.push"):
        status, out = await send_test("--url", url, "--secret", SECRET, "--event", event)
        assert status == 0, out
        assert out.startswith("200 OK\n")
        assert '"deliveries": 1' in out


async def test_send_test_with_wrong_secret_exits_1(relay_client: RelayClientFactory) -> None:
    client = await relay_client(CONFIG)
    status, out = await send_test("--url", str(client.make_url("/webhook")), "--secret", "nope")
    assert status == 1
    assert out == '401 Unauthorized\n{"error": "invalid signature"}\n'


async def test_send_test_unreachable_exits_1() -> None:
    status, out = await send_test("--url", "http://127.0.0.1:9/webhook", "--secret", "s")
    assert status == 1
    assert out.startswith("relay send-test: cannot reach http://127.0.0.1:9/webhook")


async def test_send_test_follows_no_redirect_and_reads_any_answer() -> None:
    """A redirect is not followed: the secret would go to another server, whose answer
    would pass for relay's. An answer that is not UTF-8 is shown, not a traceback."""
    elsewhere: list[str] = []

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect("/elsewhere")

    async def other(request: web.Request) -> web.Response:
        elsewhere.append(request.headers.get("X-bitHuman-Signature", ""))
        return web.Response(text="taken")

    async def garbled(request: web.Request) -> web.Response:
        return web.Response(body=b"\xff\xfe ok", content_type="text/plain")

    app = web.Application()
    app.router.add_post("/webhook", redirect)
    app.router.add_post("/elsewhere", other)
    app.router.add_post("/garbled", garbled)
    runner, port = await serve_locally(app)
    try:
        status, out = await send_test("--url", f"http://127.0.0.1:{port}/webhook", "--secret", "s")
        assert (status, out.splitlines()[0]) == (1, "307 Temporary Redirect")
        assert elsewhere == []
        status, out = await send_test("--url", f"http://127.0.0.1:{port}/garbled", "--secret", "s")
        assert (status, out) == (0, "200 OK\n\ufffd\ufffd ok\n")
    finally:
        await runner.cleanup()


async def test_serve_that_cannot_start_says_why_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "relay.yaml"
    config.write_text('server: { port: 0 }\nstore: { url: "sqlite:/proc/no/such/dir/relay.db" }\n')
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "relay.cli",
        "serve",
        "-c",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 1
    assert err.decode().splitlines()[-1] == (
        "relay serve: cannot start: cannot open sqlite store /proc/no/such/dir/relay.db: "
        "[Errno 2] No such file or directory: '/proc/no'"
    )


SIGNAL_RULES = """\
destinations:
  out: { type: console }
rules:
  - name: no-answer
    when: { event: conversation_unanswered }
    send_to: [out]
  - name: logged
    when: { event: [chat.push, conversation.ended] }
    send_to: [out]
"""


def test_check_says_what_is_watched_and_warns_of_signals_never_raised(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "relay.yaml"
    config.write_text(SIGNAL_RULES + "conversations:\n  ended_after: 0\n")
    assert main(["check", "-c", str(config)]) == 0
    out = capsys.readouterr().out
    assert out == "OK: 2 rules, 1 destinations; conversations watched (unanswered after 2m)\n"

    config.write_text(SIGNAL_RULES)
    assert main(["check", "-c", str(config)]) == 0
    captured = capsys.readouterr()
    assert captured.out == "OK: 2 rules, 1 destinations\n"
    # Only the rule that can never match: `logged` matches chat.push too.
    warnings = [line for line in captured.err.splitlines() if "conversation" in line]
    assert warnings == [
        "warning: rule no-answer matches conversation.unanswered, which relay raises only"
        " when the conversations section is set: add `conversations:` to turn them on"
    ]


def test_route_previews_a_conversation_signal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "relay.yaml"
    config.write_text(SIGNAL_RULES + "conversations:\n")
    event = tmp_path / "ended.json"
    data = {
        "session_id": "s1",
        "room_name": "support-room",
        "started_at": 1790607000,
        "last_event_at": 1790607240,
        "duration_s": 240,
        "visitor_messages": 5,
        "agent_messages": 4,
        "first_answer_s": 3,
        "unanswered": False,
    }
    event.write_text(
        json.dumps(
            {
                "agent_id": "A80HVD8577",
                "event_type": "conversation.ended",
                "timestamp": 1790607840,
                "data": data,
            }
        )
    )
    assert main(["route", str(event), "-c", str(config)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("conversation signal conversation.ended from A80HVD8577 (event_id ")
    assert "rule no-answer: no match\n" in out
    assert "rule logged: MATCHED -> out\n" in out
    assert (
        "== Conversation with A80HVD8577 ended after 4m ==\n"
        "5 visitor messages, 4 answers, first answer after 3s\n"
    ) in out


def test_check_is_quiet_about_several_workers_on_either_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Workers on one SQLite file take turns at its write lock (README, Several workers):
    nothing to warn of since they no longer starve each other."""
    config = tmp_path / "relay.yaml"
    body = "destinations:\n  out: { type: console }\nrules:\n  - name: all\n    send_to: [out]\n"
    for store in ("", "store: { url: redis://127.0.0.1/0 }\n"):
        config.write_text("server: { port: 8080, workers: 2 }\n" + store + body)
        assert main(["check", "-c", str(config)]) == 0
        assert "workers" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "env", "error"),
    [
        (("serve",), {"RELAY_LOG_LEVEL": "loud"},
         "relay: error: $RELAY_LOG_LEVEL is 'loud': choose from debug, info, warning, error"),
        (("serve",), {"RELAY_LOG_FORMAT": "xml"},
         "relay: error: $RELAY_LOG_FORMAT is 'xml': choose from text, json"),
        (("replay", "99999999999999999999"), {},
         "relay replay: error: argument ID: not a delivery id: 99999999999999999999"
         " (ids run from 1 to 9223372036854775807)"),
    ],
)  # fmt: skip
async def test_a_bad_setting_or_id_is_a_usage_error_not_a_traceback(
    args: tuple[str, ...], env: dict[str, str], error: str
) -> None:
    status, out = await run_cli(*args, "-c", str(ROOT / "relay.yaml.example"), env=env)
    assert (status, out.splitlines()[-1]) == (2, error)
