"""The command line: check, route, sign, send-test."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from relay.cli import main
from tests.conftest import RelayClientFactory
from tests.support.processes import run_cli
from tests.support.relay import CHAT_PUSH, SECRET

ROOT = Path(__file__).resolve().parents[1]


def test_check_example_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-c", str(ROOT / "relay.yaml.example")]) == 0
    assert capsys.readouterr().out == "OK: 3 rules, 1 destinations\n"


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
