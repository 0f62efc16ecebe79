"""Secrets the suite configures, watched for in every log the suite produces.

At the end of the session (tests/conftest.py) every captured log record of the test
process and every `relay serve` log file is searched for these values; one found fails
the run. Register a secret where a test makes one up: `watch("s3cret")`.
"""

from __future__ import annotations

from pathlib import Path

WATCHED: set[str] = set()
LOG_FILES: list[Path] = []


def watch(*secrets: str) -> None:
    """Fail the session if any of these values ever reaches a log."""
    WATCHED.update(secret for secret in secrets if len(secret) >= 8)


def leaks(text: str) -> list[str]:
    """Return the watched secrets that appear in a text."""
    return sorted(secret for secret in WATCHED if secret in text)
