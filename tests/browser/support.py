"""A browser on the console: pages that record every dialog, console error, page error and
CSP violation, so a test can say that none happened."""

from __future__ import annotations

from dataclasses import dataclass, field

from playwright.async_api import Browser, ConsoleMessage, Dialog, Locator, Page

from tests.console.support import CONSOLE_PASSWORD, USERNAME, Client, Console

VIEWPORT = {"width": 1280, "height": 800}

# Run in every document before its own content: a CSP violation fires this event in the
# page (Chromium also logs it as a console error; this says which directive, in any case).
# Playwright injects it over the DevTools protocol, which the page's CSP does not govern.
REPORT_CSP_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (event) => {
  console.error(
    "securitypolicyviolation: " + event.violatedDirective + " blocked " + event.blockedURI
  );
});
"""


@dataclass
class Watched:
    """A page, and what went wrong on it: dialogs opened (each dismissed at once), console
    errors (CSP violations among them) and uncaught page errors."""

    page: Page
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def noted_status(self, path: str, status: int) -> None:
        """Forget the one console line Chromium logs for a page that answered an error
        status on purpose ("Failed to load resource: the server responded with a status of
        404"): the browser noting the status, no error of the page's. It must be there."""
        noted = f"Failed to load resource: the server responded with a status of {status} "
        lines = [e for e in self.errors if noted in e and f"{path}'" in e]
        assert len(lines) == 1, f"no single line noting {status} for {path}: {self.errors}"
        self.errors.remove(lines[0])

    def assert_quiet(self) -> None:
        assert self.dialogs == [], f"dialogs opened: {self.dialogs}"
        assert self.errors == [], f"errors in the browser: {self.errors}"


class Browsing:
    """relay and its console in-process, and a Chromium to browse the console with."""

    def __init__(self, console: Console, browser: Browser, timeout_ms: float) -> None:
        self.console = console
        self.browser = browser
        self.timeout_ms = timeout_ms
        self.pages: list[Watched] = []  # each page opened that must stay quiet

    @property
    def relay(self) -> Client:
        return self.console.relay

    @property
    def origin(self) -> str:
        return self.console.origin

    async def open(
        self,
        *,
        credentials: tuple[str, str] | None = (USERNAME, CONSOLE_PASSWORD),
        quiet: bool = True,
    ) -> Watched:
        """A page in a browser context of its own, logged in with `credentials` (HTTP Basic,
        answered when the console asks) or, with None, not at all. A `quiet` page is checked
        for dialogs and errors when the test ends (the `browse` fixture does it); a test
        that expects some (a 401 logs one) says `quiet=False` and checks them itself."""
        context = await self.browser.new_context(
            base_url=self.origin,
            viewport={"width": VIEWPORT["width"], "height": VIEWPORT["height"]},
            http_credentials=(
                None
                if credentials is None
                else {"username": credentials[0], "password": credentials[1]}
            ),
        )
        context.set_default_timeout(self.timeout_ms)
        await context.add_init_script(REPORT_CSP_VIOLATIONS)
        watched = Watched(await context.new_page())

        async def on_dialog(dialog: Dialog) -> None:
            watched.dialogs.append(f"{dialog.type}: {dialog.message}")
            await dialog.dismiss()

        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error":
                watched.errors.append(f"console: {message.text} at {message.location}")

        watched.page.on("dialog", on_dialog)
        watched.page.on("console", on_console)
        watched.page.on("pageerror", lambda error: watched.errors.append(f"page: {error}"))
        if quiet:
            self.pages.append(watched)
        return watched

    def assert_quiet(self) -> None:
        """No dialog, console error, page error or CSP violation on any quiet page."""
        for watched in self.pages:
            watched.assert_quiet()


async def ids_shown(page: Page) -> list[int]:
    """The delivery ids the list on a page links to, in order."""
    links = page.locator("table.deliveries tbody tr").locator("td:first-child a")
    return [int(text) for text in await links.all_inner_texts()]


def filters(page: Page) -> Locator:
    """The deliveries page's filter form (a search landmark): its controls are found by
    their labels within it, as other forms on the page may use the same words."""
    return page.get_by_role("search", name="Filter the deliveries")
