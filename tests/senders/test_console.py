"""The console destination's text: what an untrusted message may not do to a terminal."""

from __future__ import annotations

import pytest

from relay.senders.console import printable


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("== Join ==\n  agent:\tA80HVD8577\n", "== Join ==\n  agent:\tA80HVD8577\n"),
        ("esc\x1b[31m red\n", "esc\ufffd[31m red\n"),
        ("bell\x07 nul\x00\n", "bell\ufffd nul\ufffd\n"),
        ("overwritten\r\n", "overwritten\ufffd\n"),
        ("form\x0cfeed\tline\x0bend", "form\ufffdfeed\tline\ufffdend"),
        ("abc\u202edcba\u2066x\u2069\n", "abc\ufffddcba\ufffdx\ufffd\n"),
        ("lone \ud800 surrogate", "lone \ufffd surrogate"),
        # Joiners, non-breaking spaces and other scripts are kept as they are.
        ("family \U0001f468\u200d\U0001f469\u200d\U0001f467\n", None),
        ("caf\u00e9\u00a0\u0645\u0631\u062d\u0628\u0627\n\u4f60\u597d", None),
    ],
)
def test_printable_replaces_control_characters_and_keeps_the_rest(
    text: str, shown: str | None
) -> None:
    assert printable(text) == (text if shown is None else shown)
