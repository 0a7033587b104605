"""Checks shared by send, broadcast and the API: which channels and category, whether a template
fits its data.

Everything here runs before anything is written, so a mistake is bad input (exit 2, HTTP 422),
never a dead letter.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from notifyctl.app.context import Context
from notifyctl.app.links import check_unsubscribe_links
from notifyctl.errors import InputError, RowError, TemplateError
from notifyctl.models import User
from notifyctl.policy.categories import choose_category
from notifyctl.settings import Settings
from notifyctl.store import directory
from notifyctl.templates.template import BUILTIN_VARIABLES, Template

if TYPE_CHECKING:
    from notifyctl.intake.campaigns import Campaign


def channels_for(template: Template, requested: list[str] | None, settings: Settings) -> list[str]:
    """The channels to send on: those requested (each must be in the template and configured), or
    by default the template's channels that have a provider here."""
    if not requested:
        channels = [c for c in template.channels if c in settings.channels]
        if not channels:
            raise InputError(
                f"none of template '{template.name}'s channels ({', '.join(template.channels)}) "
                f"has a provider configured in {settings.source}"
            )
        return channels
    channels = list(requested)
    for channel in channels:
        if channel not in template.channels:
            raise InputError(
                f"template '{template.name}' has no '{channel}' part (it has: {', '.join(template.channels)})"
            )
        if channel not in settings.channels:
            raise InputError(
                f"no provider is configured for channel '{channel}' (add [channels.{channel}] to {settings.source})"
            )
    return channels


def category_for(settings: Settings, template: Template, requested: str | None, channels: list[str]) -> str:
    """The category to send `template` under at a front door (send, events, broadcast, the API): the
    template's, or the caller's `requested` one where policy/categories.py allows it; and its email's
    unsubscribe links must point at a real public_url (app/links.py). InputError otherwise."""
    category = choose_category(settings, template.name, template.category, requested)
    check_unsubscribe_links(settings, channels, category, settings.category(category))
    return category


def available_variables(ctx: Context, columns: set[str], data: dict[str, Any]) -> set[str]:
    """What a template may use: the input's columns, the shared data, user attributes, built-ins."""
    return set(columns) | set(data) | directory.user_attribute_keys(ctx.conn) | set(BUILTIN_VARIABLES)


def check_template(
    ctx: Context, template: Template, channels: list[str], columns: set[str], data: dict[str, Any]
) -> None:
    """Every variable the template's parts use on these channels is provided."""
    problems = template.check_variables(available_variables(ctx, columns, data), channels)
    if problems:
        raise TemplateError("; ".join(problems), template=template.name)


def read_data(value: str | None) -> dict[str, Any]:
    """Shared data given as a JSON object, as @file.json, or as @- (standard input) (the --data option)."""
    import orjson

    if not value:
        return {}
    raw: str | bytes = value
    if value == "@-":
        import sys

        raw = sys.stdin.buffer.read()
    elif value.startswith("@"):
        path = Path(value[1:])
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise InputError(f"--data: cannot read {path}: {exc}") from exc
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"--data is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InputError("--data must be a JSON object")
    return data


def template_problems(
    ctx: Context, name: str, audience: Path, data: str | None, channels: list[str] | None
) -> list[str]:
    """What a template uses on these channels (default: all of its) that the audience file's
    columns, the data (--data), user attributes and built-ins do not provide."""
    from notifyctl.intake import audience as audience_mod  # here: a one-off send needs no parsers

    template = ctx.templates.get(name)
    columns = audience_mod.audience_columns(audience)
    available = available_variables(ctx, columns, read_data(data))
    return template.check_variables(available, channels or template.channels)


@dataclass(frozen=True)
class TemplateFit:
    """What `templates check` checked, and what does not fit (empty: it fits)."""

    template: str
    audience: Path
    channels: list[str]
    problems: list[str]


def campaign_problems(
    ctx: Context, campaign: Campaign, audience: Path | None, data: str | None, channels: list[str] | None
) -> TemplateFit:
    """The check `broadcast` makes before it sends, without sending: the campaign's template on the
    channels broadcast would use (or those given), against its audience's columns (or `audience`'s),
    the campaign's data (with --data's keys over it), user attributes and built-ins."""
    from notifyctl.intake import audience as audience_mod  # here: a one-off send needs no parsers

    template = ctx.templates.get(campaign.template)
    chosen = channels_for(template, channels or campaign.channels, ctx.settings)
    path = audience or campaign.audience_path()
    if path is None:
        raise InputError(f"{campaign.source}: the campaign names no audience file; give one with --audience FILE")
    if not path.is_file():
        raise InputError(f"audience file not found: {path}")
    available = available_variables(ctx, audience_mod.audience_columns(path), {**campaign.data, **read_data(data)})
    return TemplateFit(template.name, path, chosen, template.check_variables(available, chosen))


def check_render(ctx: Context, template: Template, channels: list[str], user: User, data: dict[str, Any]) -> None:
    """A one-off send renders every part once up front: a template error is bad input, not a dead letter."""
    context: dict[str, Any] = {name: "" for name in BUILTIN_VARIABLES}
    context.update(user.attributes)
    context.update(user_id=user.user_id, email=user.email, phone=user.phone, locale=user.locale)
    context.update(data)
    for channel in channels:
        template.render(channel, user.locale, context)


def rejected_summary(errors: list[RowError], count: int) -> dict[str, Any]:
    """The rejected rows as a run keeps them in its options (the first 100, and how many)."""
    return {"rejected_count": count, "rejected": [[e.line, e.field, e.reason] for e in errors[:100]]}


def file_sha256(path: Path) -> str:
    """The whole file's hash: an interrupted plan resumes only from the very same input."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
