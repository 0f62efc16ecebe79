"""The Rules page (SPEC 8.1): how often each rule matched, and which never did.

It reads the counters (relay/activity), never the stored events: the same cost behind a
thousand events or ten million. A rule that no longer is in the config but matched
within the kept figures is shown apart, so that a renamed rule's past is not lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from relay.activity.tally import NO_RULE, RuleHits
from relay.config.model import Rule
from relay.console import answers
from relay.console.keys import STATE
from relay.console.periods import Period, requested_period
from relay.console.present import iso

RULES_PATH = "/rules"


@dataclass(frozen=True)
class RuleFigures:
    """One rule as the page shows it."""

    name: str
    send_to: tuple[str, ...]
    hits: int  # in the period
    last_at: float | None  # its latest match in the kept figures; None: never

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "send_to": list(self.send_to),
            "matched": self.hits,
            "last_matched_at": None if self.last_at is None else iso(self.last_at),
        }


@dataclass(frozen=True)
class RulesFigures:
    period: Period
    rules: list[RuleFigures]  # the config's, in its order
    unmatched_events: int  # in the period: events that matched no rule
    former: list[RuleFigures]  # rules no longer configured that matched within the figures

    @property
    def never_matched(self) -> list[RuleFigures]:
        return [rule for rule in self.rules if rule.last_at is None]

    def as_json(self) -> dict[str, Any]:
        return {
            "period": self.period.name,
            "rules": [rule.as_json() for rule in self.rules],
            "never_matched": [rule.name for rule in self.never_matched],
            "unmatched_events": self.unmatched_events,
            "former_rules": [rule.as_json() for rule in self.former],
        }


def figures(rules: tuple[Rule, ...], hits: list[RuleHits], period: Period) -> RulesFigures:
    """Put the counters beside the configured rules."""
    counted = {h.rule: h for h in hits}
    configured = {rule.name for rule in rules}

    def of(name: str, send_to: tuple[str, ...]) -> RuleFigures:
        found = counted.get(name)
        if found is None:
            return RuleFigures(name, send_to, 0, None)
        return RuleFigures(name, send_to, found.hits, found.last_at)

    unmatched = counted.get(NO_RULE)
    former = sorted(
        (of(h.rule, ()) for h in hits if h.rule != NO_RULE and h.rule not in configured),
        key=lambda rule: rule.name,
    )
    return RulesFigures(
        period=period,
        rules=[of(rule.name, rule.send_to) for rule in rules],
        unmatched_events=0 if unmatched is None else unmatched.hits,
        former=former,
    )


async def rules(request: web.Request) -> web.Response:
    state = request.app[STATE]
    period = requested_period(request)
    shown = figures(state.config.rules, await state.store.rule_hits(period.since_hour), period)
    if answers.wants_json(request):
        return answers.data(shown.as_json())
    context = {"figures": shown, "period": period}
    return answers.page(request, "rules.html", context)
