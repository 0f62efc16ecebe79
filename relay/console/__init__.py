"""The web console (SPEC 8): operators' pages on a listener of their own, behind Basic auth.

app.py builds the application; auth.py and security.py guard every answer; filters.py
reads the deliveries page's URL; views.py answers; present.py turns what the store
holds into what a page or its JSON twin shows.
"""

from __future__ import annotations

from relay.console.app import create_console_app

__all__ = ["create_console_app"]
