"""The console destination: prints each notification, for trying relay out."""

from __future__ import annotations

import unicodedata

from relay.config.model import ConsoleDestination
from relay.formatting import summarize
from relay.limits import Limit
from relay.notification import Notification
from relay.senders.base import SenderContext, Sent

# Bidirectional overrides and isolates: they can make text read otherwise than it is.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def printable(text: str) -> str:
    """Replace control characters (terminal escapes), lone surrogates and bidi overrides in
    untrusted text, keeping newlines, tabs and the joiners that emoji and scripts need."""
    # The usual case, checked in C. A block always has newlines, which isprintable()
    # refuses; they and tabs are kept, so they are read as spaces for the check
    # (str.replace, not str.translate, which looks each character up in Python).
    if text.isprintable() or text.replace("\n", " ").replace("\t", " ").isprintable():
        return text
    return "".join(
        "\N{REPLACEMENT CHARACTER}"
        if ch in _BIDI_CONTROLS or (unicodedata.category(ch) in ("Cc", "Cs") and ch not in "\n\t")
        else ch
        for ch in text
    )


class ConsoleSender:
    """Writes one readable block per notification to stdout."""

    updates_parents = False

    def __init__(self, config: ConsoleDestination, context: SenderContext) -> None:
        self.name = config.name
        self.limit: Limit | None = None
        self._out = context.stdout

    def preview(self, notification: Notification) -> str:
        summary = summarize(notification)
        lines = [f"== {summary.title} =="]
        if summary.text:
            lines.append(summary.text)
        lines.extend(f"  {label}: {value}" for label, value in summary.fields)
        if summary.link is not None:
            lines.append(f"  {summary.link.label}: {summary.link.url}")
        lines.append(f"  ({summary.footer})")
        return printable("\n".join(lines)) + "\n"

    async def close(self) -> None:
        """Nothing to let go of: stdout is the process's."""

    async def update_parent(self, thread: str, messages: int, last_activity: float) -> None:
        """This destination has no parent message to keep current."""

    def wait_s(self) -> float:
        return 0.0

    async def send(self, notification: Notification) -> Sent:
        self._out.write(self.preview(notification) + "\n")
        self._out.flush()
        return Sent()
