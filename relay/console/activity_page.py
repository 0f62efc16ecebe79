"""The Activity page (SPEC 8.1): what each agent's conversations did in a period.

It reads the counters (relay/activity), never the stored events: the same cost behind a
thousand events or ten million. Conversations started, first answers and unanswered
conversations are counted from the conversation watches, so only while `conversations`
is set; the page says so when it is not.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from relay.activity.figures import DAY_S, bars, by_agent
from relay.activity.tally import CONVERSATIONS, HOUR_S
from relay.console import answers
from relay.console.chart import bar_chart
from relay.console.keys import STATE
from relay.console.periods import requested_period
from relay.console.present import iso

ACTIVITY_PATH = "/activity"


async def activity(request: web.Request) -> web.Response:
    state = request.app[STATE]
    period = requested_period(request)
    store = state.store
    counts = await store.activity_counts(period.since_hour, CONVERSATIONS)
    agents, everyone = by_agent(counts.agents)
    # Per hour over a day, per day (UTC) beyond.
    unit, step_s = ("hour", HOUR_S) if period.seconds <= DAY_S else ("day", DAY_S)
    shown = bars(counts.hours, period.since_hour, period.now, step_s)
    watched = state.config.conversations is not None
    if answers.wants_json(request):
        payload: dict[str, Any] = {
            "period": period.name,
            "conversations_watched": watched,
            "agents": [figures.as_json() for figures in agents],
            "all_agents": everyone.as_json(),
            "chart": {
                "unit": unit,
                "bars": [
                    {"start": iso(bar.start), "conversations": bar.conversations} for bar in shown
                ],
            },
        }
        return answers.data(payload)
    context = {
        "period": period,
        "agents": agents,
        "everyone": everyone,
        "watched": watched,
        "chart": bar_chart(shown, unit),
        "unit": unit,
    }
    return answers.page(request, "activity.html", context)
