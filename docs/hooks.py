"""MkDocs hooks: the configuration page's settings table, generated from the Settings model.

``docs/configuration.md`` holds the marker line below where the table goes; at build time it is
replaced by ``facepipe.config.settings_markdown()`` (what ``facepipe config --markdown`` prints),
so the published table always matches the code.
"""

from __future__ import annotations

from typing import Any

SETTINGS_MARKER = "<!-- settings-table -->"


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """Replace the settings marker with the table of every setting (pages without it pass)."""
    if SETTINGS_MARKER not in markdown:
        return markdown
    from facepipe.config import settings_markdown

    return markdown.replace(SETTINGS_MARKER, settings_markdown())
