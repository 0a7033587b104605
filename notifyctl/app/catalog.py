"""The templates as the CLI shows them: the list, and a preview of one channel's parts."""

from __future__ import annotations

from typing import Any

from notifyctl.app.checks import read_data
from notifyctl.settings import Settings
from notifyctl.templates.store import TemplateStore
from notifyctl.templates.template import BUILTIN_VARIABLES, TemplateInfo


def templates(settings: Settings) -> list[TemplateInfo]:
    """Every template with its category, channels, locales and version."""
    return TemplateStore(settings.templates_path, categories=settings.categories).list()


def preview(settings: Settings, name: str, channel: str, locale: str | None, data: str | None) -> dict[str, Any]:
    """A template's parts for one channel, rendered with the data (--data) and placeholders
    (`<name>`) for the built-in variables."""
    template = TemplateStore(settings.templates_path, categories=settings.categories).get(name)
    context: dict[str, Any] = {v: f"<{v}>" for v in BUILTIN_VARIABLES}
    context.update(read_data(data))
    return template.render(channel, locale, context)
