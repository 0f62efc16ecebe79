"""`relay test`: rule unit tests, offline; exact report lines and exact file errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from relay.cli import main

CONFIG = """\
destinations:
  mail: { type: console }
  support: { type: console }
  ops: { type: console }
  archive: { type: console }
rules:
  - name: refunds
    when: { event: chat.push, role: user, message: { contains: refund } }
    send_to: [mail, support]
    template: refund
  - name: joins
    when: { event: room.join }
    send_to: [ops]
    template: refund            # reads data.message, which a join does not have
  - name: catch-all
    when: { event: chat.push }
    send_to: [support, ops]
  - name: transcripts
    when: { event: chat.push }
    send_to: [archive]
    digest: 10m
  - name: ready
    when: { event: agent.ready }
    send_to: [ops]
    stop: true
templates:
  refund:
    title: "Refund request from {{ agent_id }}"
    text: "{{ data.message }} (session {{ data.session_id }})"
"""

REFUND = (
    "{agent_id: A80HVD8577, event_type: chat.push, timestamp: 1790607268.9,"
    ' data: {role: user, message: "I want a refund", session_id: s1}}'
)
HELLO = (
    "{agent_id: A80HVD8577, event_type: chat.push, timestamp: 1790607268.9,"
    ' data: {role: user, message: "Hello, I need help with my order", session_id: s1}}'
)


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run in tmp_path, so errors name `tests.yaml` and the config's store would land here."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "relay.yaml").write_text(CONFIG)


def relay_test(capsys: pytest.CaptureFixture[str], tests: str) -> tuple[int, str, str]:
    """Write tests.yaml, run `relay test tests.yaml -c relay.yaml`; return status, out, err."""
    Path("tests.yaml").write_text(tests)
    status = main(["test", "tests.yaml", "-c", "relay.yaml"])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_passing_cases_print_a_line_each_and_the_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = relay_test(
        capsys,
        f"""\
tests:
  - name: a refund reaches mail and support
    event: {REFUND}
    expect:
      destinations: [support, mail, ops, archive]   # order does not matter
      notifications:
        support: {{rule: refunds, template: refund, text_contains: "refund"}}
        mail: {{title: "Refund request from A80HVD8577", text: "I want a refund (session s1)"}}
        ops: {{rule: catch-all, template: null, title_contains: "from user"}}
        archive: {{rule: transcripts, text_contains: "user: I want a refund"}}
  - name: an agent being ready stops at ops
    event: {{id: evt_1, event: agent.ready, created: 1780417371, data: {{agent_id: A1}}}}
    expect: {{destinations: [ops], notifications: {{ops: {{title: "Agent A1 is ready"}}}}}}
  - name: a test event reaches nothing
    event: {{agent_id: test_agent_123, event_type: test}}
    expect: {{destinations: []}}
""",
    )
    assert (status, err) == (0, "")
    assert out == (
        "PASS  a refund reaches mail and support\n"
        "PASS  an agent being ready stops at ops\n"
        "PASS  a test event reaches nothing\n"
        "3 passed, 0 failed\n"
    )
    assert not (tmp_path / "relay-data").exists()  # offline: no store was opened


def test_failing_cases_print_a_diff_each(capsys: pytest.CaptureFixture[str]) -> None:
    long_message = "Hello, " + "very " * 30 + "long"
    status, out, err = relay_test(
        capsys,
        f"""\
tests:
  - name: a hello is no refund
    event: {HELLO}
    expect:
      destinations: [mail, support]
      notifications:
        support: {{rule: refunds, template: refund, text_contains: "refund"}}
  - name: a test event reaches ops
    event: {{agent_id: test_agent_123, event_type: test}}
    expect: {{destinations: [ops]}}
  - name: what ops says
    event: {{agent_id: A1, event_type: chat.push, data: {{role: user, message: "{long_message}"}}}}
    expect:
      destinations: [support, ops, archive]
      notifications:
        ops: {{template: refund, title: "Chat message", text_contains: "refund"}}
  - name: a refund passes
    event: {REFUND}
    expect: {{destinations: [mail, support, ops, archive]}}
""",
    )
    assert (status, err) == (1, "")
    shown = json.dumps(long_message[:87] + "… [truncated]", ensure_ascii=False)
    assert out == (
        "FAIL  a hello is no refund\n"
        "    - destinations: [mail, support]\n"
        "    + destinations: [archive, ops, support]\n"
        "      rules matched: catch-all, transcripts\n"
        '      support.rule: expected "refunds", got "catch-all"\n'
        '      support.template: expected "refund", got no template\n'
        '      support.text_contains: expected text containing "refund",'
        ' got "Hello, I need help with my order"\n'
        "FAIL  a test event reaches ops\n"
        "    - destinations: [ops]\n"
        "    + destinations: []\n"
        "      rules matched: none\n"
        "FAIL  what ops says\n"
        '      ops.template: expected "refund", got no template\n'
        '      ops.title: expected "Chat message", got "New chat message from user"\n'
        f'      ops.text_contains: expected text containing "refund", got {shown}\n'
        "PASS  a refund passes\n"
        "1 passed, 3 failed\n"
    )


def test_the_rule_that_stopped_the_rest_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = relay_test(
        capsys,
        """\
tests:
  - name: a failed agent reaches ops
    event: {id: evt_2, event: agent.failed, created: 1780417371, data: {agent_id: A1}}
    expect: {destinations: [ops]}
  - name: a ready agent reaches support too
    event: {id: evt_1, event: agent.ready, created: 1780417371, data: {agent_id: A1}}
    expect: {destinations: [ops, support]}
""",
    )
    assert status == 1
    assert out == (
        "FAIL  a failed agent reaches ops\n"
        "    - destinations: [ops]\n"
        "    + destinations: []\n"
        "      rules matched: none\n"
        "FAIL  a ready agent reaches support too\n"
        "    - destinations: [ops, support]\n"
        "    + destinations: [ops]\n"
        "      rules matched: ready (stop)\n"
        "0 passed, 2 failed\n"
    )


def test_a_template_that_fails_on_the_event_fails_the_case(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, _ = relay_test(
        capsys,
        """\
tests:
  - name: a join reaches ops
    event: {agent_id: A1, event_type: room.join, data: {room_name: r1, session_id: s1}}
    expect:
      destinations: [ops]
      notifications: {ops: {rule: joins, text_contains: "joined"}}
""",
    )
    assert status == 1
    assert out == (
        "FAIL  a join reaches ops\n"
        "      ops: template refund failed: 'dict object' has no attribute 'message';"
        " the default layout would be sent\n"
        "0 passed, 1 failed\n"
    )


def test_event_file_is_read_from_the_test_files_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = tmp_path / "ci" / "events"
    events.mkdir(parents=True)
    (events / "refund.json").write_text(
        json.dumps(
            {
                "agent_id": "A80HVD8577",
                "event_type": "chat_push",  # the dashboard's spelling routes alike
                "data": {"role": "user", "message": "A refund, please", "session_id": "s1"},
            }
        )
    )
    (events / "ready.json").write_text(
        json.dumps({"id": "evt_1", "event": "agent.ready", "created": 1, "data": {"code": "A1"}})
    )
    (tmp_path / "ci" / "tests.yaml").write_text(
        """\
tests:
  - name: a refund from a file
    event_file: events/refund.json
    expect:
      destinations: [mail, support, ops, archive]
      notifications: {mail: {text: "A refund, please (session s1)"}}
  - name: an account webhook from a file
    event_file: events/ready.json
    expect: {destinations: [ops], notifications: {ops: {title: "Agent A1 is ready"}}}
"""
    )
    assert main(["test", "ci/tests.yaml", "-c", "relay.yaml"]) == 0
    assert capsys.readouterr().out == (
        "PASS  a refund from a file\nPASS  an account webhook from a file\n2 passed, 0 failed\n"
    )


# A bad test file: every problem on stderr, as file:line: key.path: message; no case runs.

ONE_CASE = """\
tests:
  - name: one
    event: {agent_id: A1, event_type: chat.push}
"""

FILE_ERRORS = {
    "unknown key": (
        ONE_CASE + "    expct: {destinations: []}\n",
        'tests.yaml:4: tests[0]: unknown key "expct" (did you mean "expect"?)',
    ),
    "wrong type": (
        ONE_CASE + "    expect: {destinations: mail}\n",
        "tests.yaml:4: tests[0].expect.destinations: expected a list, got a string",
    ),
    "missing expect": (ONE_CASE, 'tests.yaml:2: tests[0]: missing required key "expect"'),
    "missing destinations": (
        ONE_CASE + "    expect: {notifications: {}}\n",
        'tests.yaml:4: tests[0].expect: missing required key "destinations"',
    ),
    "unknown destination": (
        ONE_CASE + "    expect: {destinations: [mail, supprt]}\n",
        'tests.yaml:4: tests[0].expect.destinations[1]: unknown destination "supprt"'
        ' (did you mean "support"?)',
    ),
    "a notification where the event is not expected": (
        ONE_CASE + "    expect: {destinations: [mail], notifications: {ops: {rule: refunds}}}\n",
        "tests.yaml:4: tests[0].expect.notifications.ops: not in expect.destinations [mail]",
    ),
    "unknown rule": (
        ONE_CASE + "    expect: {destinations: [mail], notifications: {mail: {rule: refund}}}\n",
        'tests.yaml:4: tests[0].expect.notifications.mail.rule: unknown rule "refund"'
        ' (did you mean "refunds"?)',
    ),
    "unknown template": (
        ONE_CASE + "    expect: {destinations: [mail], notifications: {mail: {template: refnd}}}\n",
        "tests.yaml:4: tests[0].expect.notifications.mail.template: unknown template"
        ' "refnd" (did you mean "refund"?)',
    ),
    "an empty notification": (
        ONE_CASE + "    expect: {destinations: [mail], notifications: {mail: {}}}\n",
        "tests.yaml:4: tests[0].expect.notifications.mail: needs at least one of rule,"
        " template, title, text, title_contains, text_contains",
    ),
    "both event and event_file": (
        ONE_CASE + "    event_file: e.json\n    expect: {destinations: []}\n",
        "tests.yaml:4: tests[0].event_file: give event or event_file, not both",
    ),
    "neither event nor event_file": (
        "tests:\n  - name: one\n    expect: {destinations: []}\n",
        'tests.yaml:2: tests[0]: missing required key "event" (or "event_file")',
    ),
    "an event missing agent_id": (
        "tests:\n  - name: one\n    event: {event_type: chat.push}\n"
        "    expect: {destinations: []}\n",
        "tests.yaml:3: tests[0].event: missing required field 'agent_id'",
    ),
    "an account event missing created": (
        "tests:\n  - name: one\n    event: {id: evt_1, event: ping, data: {}}\n"
        "    expect: {destinations: []}\n",
        "tests.yaml:3: tests[0].event: missing required field 'created'",
    ),
    "a value JSON cannot hold": (
        "tests:\n  - name: one\n    event:\n      agent_id: A1\n      event_type: chat.push\n"
        "      data: {day: 2026-06-02}\n    expect: {destinations: []}\n",
        "tests.yaml:6: tests[0].event.data.day: expected a string, number, boolean or null,"
        " got a date",
    ),
    "an event file that is missing": (
        "tests:\n  - name: one\n    event_file: events/gone.json\n    expect: {destinations: []}\n",
        "tests.yaml:3: tests[0].event_file: cannot read events/gone.json: No such file or"
        " directory",
    ),
    "no tests": ("tests: []\n", "tests.yaml:1: tests: must not be empty"),
    "an empty file": ("", 'tests.yaml: missing required key "tests"'),
    "a duplicate name": (
        ONE_CASE
        + "    expect: {destinations: []}\n"
        + ONE_CASE.removeprefix("tests:\n")
        + "    expect: {destinations: []}\n",
        'tests.yaml:5: tests[1].name: duplicate test name "one" (also tests[0])',
    ),
}


@pytest.mark.parametrize("tests, error", FILE_ERRORS.values(), ids=FILE_ERRORS.keys())
def test_a_bad_test_file_is_reported_and_nothing_runs(
    capsys: pytest.CaptureFixture[str], tests: str, error: str
) -> None:
    status, out, err = relay_test(capsys, tests)
    assert (status, out) == (1, "")
    assert err == error + "\n"  # that problem alone: no second, misleading one


def test_every_problem_of_a_test_file_is_reported_at_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, err = relay_test(
        capsys,
        """\
tests:
  - name: fine
    event: {agent_id: A1, event_type: test}
    expect: {destinations: []}
  - name: misspelt
    event: {agent_id: A1, event_type: chat.push}
    expct: {destinations: [mail]}
  - name: no agent
    event: {event_type: chat.push}
    expect: {destinations: [mial]}
""",
    )
    assert (status, out) == (1, "")
    assert err == (
        'tests.yaml:7: tests[1]: unknown key "expct" (did you mean "expect"?)\n'
        "tests.yaml:9: tests[2].event: missing required field 'agent_id'\n"
        'tests.yaml:10: tests[2].expect.destinations[0]: unknown destination "mial"'
        ' (did you mean "mail"?)\n'
    )


def test_a_test_file_that_cannot_be_read(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["test", "missing.yaml", "-c", "relay.yaml"]) == 1
    assert capsys.readouterr().err == "missing.yaml: cannot read: No such file or directory\n"


def test_a_config_that_fails_to_load_runs_no_case(capsys: pytest.CaptureFixture[str]) -> None:
    Path("relay.yaml").write_text("rules:\n  - {name: r, send_to: [nowhere]}\n")
    Path("tests.yaml").write_text(ONE_CASE + "    expect: {destinations: []}\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["test", "tests.yaml", "-c", "relay.yaml"])
    assert exit_info.value.code == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        'relay.yaml:2: rules[0].send_to[0]: unknown destination "nowhere"'
        " (no destinations are defined)\n"
    )


def test_environment_references_read_as_in_relay_yaml(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELAY_TEST_AGENT", "A80HVD8577")
    status, out, _ = relay_test(
        capsys,
        """\
tests:
  - name: the agent comes from the environment
    event:
      agent_id: "${RELAY_TEST_AGENT}"
      event_type: chat.push
      data: {role: user, message: "refund $${literal}", session_id: s1}
    expect:
      destinations: [mail, support, ops, archive]
      notifications:
        mail: {title: "Refund request from A80HVD8577", text_contains: "refund $${literal}"}
""",
    )
    assert (status, out) == (0, "PASS  the agent comes from the environment\n1 passed, 0 failed\n")


def test_a_conversation_signal_is_a_case_like_any_event(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rule = """\
  - name: no-answer
    when: { event: conversation.unanswered }
    send_to: [support]
"""
    config = CONFIG.replace("templates:", rule + "templates:")
    (tmp_path / "relay.yaml").write_text(config + "conversations:\n  unanswered_after: 2m\n")
    status, out, err = relay_test(
        capsys,
        """\
tests:
  - name: no answer reaches support
    event:
      agent_id: A80HVD8577
      event_type: conversation.unanswered
      timestamp: 1790607400
      data: {session_id: s1, message: "Hello, I need help with my order", waited_s: 120}
    expect:
      destinations: [support]
      notifications:
        support:
          rule: no-answer
          title: "No answer for 2m from agent A80HVD8577"
          text: "'Hello, I need help with my order'"
""",
    )
    assert (status, err, out) == (0, "", "PASS  no answer reaches support\n1 passed, 0 failed\n")
