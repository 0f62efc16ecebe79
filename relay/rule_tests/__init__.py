"""`relay test TESTS.yaml`: rule unit tests, offline (SPEC 6).

Each case is an event and what it must reach: the exact set of destinations, and for
some of them the rule, template and words of the notification. Cases run through the
same route() and summarize() as `relay route`, with no store and no network.
"""

from relay.rule_tests.cases import Case, ExpectedNotification, load_cases
from relay.rule_tests.run import check_case, run_cases

__all__ = ["Case", "ExpectedNotification", "check_case", "load_cases", "run_cases"]
