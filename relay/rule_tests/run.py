"""Run `relay test` cases: route each event, compare, print a line a case and a diff."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from typing import TextIO

from relay.config.model import Config
from relay.formatting import Summary, summarize, truncate
from relay.notification import Notification, as_digest, build_notification
from relay.rule_tests.cases import Case, ExpectedNotification
from relay.rules import Dispatch, explain, route

# How much of an actual title or text a failure shows.
SHOWN_CHARS = 100


def run_cases(config: Config, cases: Sequence[Case], out: TextIO) -> int:
    """Run every case and print the report; return the exit status (1 if any failed)."""
    failed = 0
    for case in cases:
        diff = check_case(config, case)
        out.write(f"{'FAIL' if diff else 'PASS'}  {case.name}\n")
        out.writelines(f"    {line}\n" for line in diff)
        failed += bool(diff)
    out.write(f"{len(cases) - failed} passed, {failed} failed\n")
    return 1 if failed else 0


def check_case(config: Config, case: Case) -> list[str]:
    """Return what differs from the case's expectations, a line each; empty: it passes."""
    dispatches = {d.destination: d for d in route(config.rules, case.event)}
    diff = _destinations_diff(config, case, dispatches)
    for destination, dispatch in dispatches.items():
        notification = _notification(config, case, dispatch)
        # relay would send the default layout instead and log the error: the case fails.
        if notification.template_error is not None:
            error = notification.template_error
            diff.append(f"  {destination}: {error}; the default layout would be sent")
        expected = case.notifications.get(destination)
        if expected is not None:
            diff.extend(_notification_diff(expected, dispatch, notification))
    return diff


def _notification(config: Config, case: Case, dispatch: Dispatch) -> Notification:
    """Build the notification as `relay route` previews it."""
    template = config.templates.get(dispatch.template) if dispatch.template else None
    notification = build_notification(case.event, dispatch.rule, template)
    if dispatch.digest_s is not None:  # a digest is a transcript; here, of this event alone
        notification = as_digest(notification, (case.event,), template)
    return notification


def _destinations_diff(config: Config, case: Case, reached: Collection[str]) -> list[str]:
    if set(reached) == case.destinations:
        return []
    # Which rules decided it, for the reader to start from (`relay route` says why).
    matched = [
        f"{verdict.rule.name} (stop)" if verdict.rule.stop else verdict.rule.name
        for verdict in explain(config.rules, case.event)
        if verdict.outcome.matched and not verdict.skipped
    ]
    return [
        f"- destinations: {_names(case.destinations)}",
        f"+ destinations: {_names(reached)}",
        f"  rules matched: {', '.join(matched) or 'none'}",
    ]


def _notification_diff(
    expected: ExpectedNotification, dispatch: Dispatch, notification: Notification
) -> list[str]:
    where = expected.destination
    diff = []
    if expected.rule is not None and expected.rule != dispatch.rule:
        diff.append(
            f"  {where}.rule: expected {_quote(expected.rule)}, got {_quote(dispatch.rule)}"
        )
    if expected.template_checked and expected.template != dispatch.template:
        wanted, got = _template_name(expected.template), _template_name(dispatch.template)
        diff.append(f"  {where}.template: expected {wanted}, got {got}")
    if notification.template_error is None:  # else the layout is not the one that was meant
        summary = summarize(notification)
        for key, wanted_text in expected.texts:
            problem = _text_problem(key, wanted_text, summary)
            if problem is not None:
                diff.append(f"  {where}.{key}: {problem}")
    return diff


def _text_problem(key: str, wanted: str, summary: Summary) -> str | None:
    """Say how the title or text differs from `key`'s expectation, or None if it holds."""
    part = key.removesuffix("_contains")
    actual = summary.title if part == "title" else summary.text
    shown = _quote(truncate(actual, SHOWN_CHARS))
    if key == part:
        return None if actual == wanted else f"expected {_quote(wanted)}, got {shown}"
    return None if wanted in actual else f"expected {part} containing {_quote(wanted)}, got {shown}"


def _names(destinations: Collection[str]) -> str:
    return f"[{', '.join(sorted(destinations))}]"


def _template_name(name: str | None) -> str:
    return _quote(name) if name is not None else "no template"


def _quote(text: str) -> str:
    # JSON's quoting: one line whatever the text holds (a transcript's newlines show as \n).
    return json.dumps(text, ensure_ascii=False)
