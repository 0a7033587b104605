"""A template folder's manifest.toml, and the names of its part files.

    templates/NAME/manifest.toml        category, channels, default_locale, description
    templates/NAME/email/subject.j2     email: subject + text and/or html
    templates/NAME/sms/text.j2          sms: text
    templates/NAME/push/title.j2        push, inapp: title + body (+ data.json, a JSON object)
    templates/NAME/webhook/body.json.j2 webhook: body.json (a JSON object or array)

A locale variant sits next to its default (`email/subject.fr-CA.j2`). Files whose name starts
with `_` are partials for `{% include "email/_footer.html.j2" %}` (paths are relative to the
template folder).
"""

from __future__ import annotations

import builtins
import tomllib
from dataclasses import dataclass
from pathlib import PurePosixPath

from notifyctl.errors import TemplateError
from notifyctl.models import CHANNELS
from notifyctl.templates.locales import LOCALE_RE, locale_display

# Parts each channel may have, in render order; and what it must have (one name of each group).
CHANNEL_PARTS: dict[str, tuple[str, ...]] = {
    "email": ("subject", "text", "html"),
    "sms": ("text",),
    "push": ("title", "body", "data.json"),
    "inapp": ("title", "body", "data.json"),
    "webhook": ("body.json",),
}
REQUIRED_PARTS: dict[str, tuple[tuple[str, ...], ...]] = {
    "email": (("subject",), ("text", "html")),
    "sms": (("text",),),
    "push": (("title",), ("body",)),
    "inapp": (("title",), ("body",)),
    "webhook": (("body.json",),),
}
_MANIFEST_KEYS = frozenset({"category", "channels", "default_locale", "description"})


@dataclass(frozen=True)
class Manifest:
    category: str
    channels: list[str]
    default_locale: str  # in display casing ("fr-CA")
    description: str


def parse_manifest(name: str, raw: bytes) -> Manifest:
    """The checked manifest of template `name`; TemplateError names what is wrong."""

    def fail(message: str) -> TemplateError:
        return TemplateError(message, template=name, part="manifest.toml")

    try:
        manifest = tomllib.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise fail(f"not valid TOML: {exc}") from exc
    unknown = sorted(set(manifest) - _MANIFEST_KEYS)
    if unknown:
        raise fail(f"unknown keys {unknown}; allowed: {sorted(_MANIFEST_KEYS)}")
    category = manifest.get("category")
    if not isinstance(category, str) or not category:
        raise fail("'category' must be a non-empty string")
    channels = manifest.get("channels")
    if not isinstance(channels, builtins.list) or not channels:
        raise fail(f"'channels' must be a non-empty list of {builtins.list(CHANNELS)}")
    for channel in channels:
        if channel not in CHANNELS:
            raise fail(f"unknown channel {channel!r}; known: {', '.join(CHANNELS)}")
    if len(set(channels)) != len(channels):
        raise fail("'channels' lists a channel twice")
    default_locale = manifest.get("default_locale", "en")
    if not isinstance(default_locale, str) or not LOCALE_RE.fullmatch(default_locale):
        raise fail(f'\'default_locale\' must be a locale tag such as "en" or "fr-CA", not {default_locale!r}')
    description = manifest.get("description", "")
    if not isinstance(description, str):
        raise fail("'description' must be a string")
    return Manifest(
        category=category, channels=channels, default_locale=locale_display(default_locale), description=description
    )


def split_part_file(channel: str, filename: str) -> tuple[str, str | None] | None:
    """("subject", "fr-CA") for "subject.fr-CA.j2"; None when the name is not a part of the channel."""
    stem = filename.removesuffix(".j2")
    for part in sorted(CHANNEL_PARTS[channel], key=len, reverse=True):
        if stem == part:
            return part, None
        suffix = stem.removeprefix(part + ".")
        if suffix != stem and LOCALE_RE.fullmatch(suffix):
            return part, suffix
    return None


def is_html(path: str) -> bool:
    """HTML parts and partials ("email/html.j2", "email/_footer.html.j2") autoescape."""
    return "html" in PurePosixPath(path).name.split(".")


def is_json(path: str) -> bool:
    """JSON parts and partials must print every value through |tojson."""
    return "json" in PurePosixPath(path).name.split(".")
