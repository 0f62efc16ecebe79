"""ConfigError: every problem found in relay.yaml, each with file, line and key path."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ConfigIssue:
    """One problem: where it is (file, 1-based line, key path) and what is wrong."""

    source: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        # Line 0 means the problem is the file as a whole (it cannot be read).
        where = f"{self.source}:{self.line}" if self.line > 0 else self.source
        if self.path:
            return f"{where}: {self.path}: {self.message}"
        return f"{where}: {self.message}"


class ConfigError(Exception):
    """relay.yaml is not valid; `issues` lists every problem found, in file order."""

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))
