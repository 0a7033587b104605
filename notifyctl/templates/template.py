"""One compiled template version: what it has (channels, locales, variables) and rendering it.

A part is looked up locale by locale, part by part: "fr-CA" falls back to "fr", then to the
unsuffixed file (notifyctl/templates/locales.py). Compiling is done once, when the version is
loaded (notifyctl/templates/parts.py); rendering (notifyctl/templates/render.py) runs in an
immutable sandbox with StrictUndefined.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from notifyctl.errors import TemplateError
from notifyctl.templates.locales import locale_chain, locale_key
from notifyctl.templates.manifest import parse_manifest
from notifyctl.templates.parts import ChannelParts, Part, PartCompiler, decode_sources
from notifyctl.templates.render import render_channel
from notifyctl.templates.sandbox import RENDER_TIMEOUT_S

BUILTIN_VARIABLES: frozenset[str] = frozenset(
    {"user_id", "email", "phone", "locale", "timezone", "unsubscribe_url", "now", "run_id", "event_id", "template"}
)
_UNPROVIDED = "is not provided (not an audience column, campaign data key or user attribute)"


@dataclass(frozen=True)
class TemplateInfo:
    name: str
    category: str
    channels: list[str]
    default_locale: str
    description: str
    version: str
    locales: list[str]


class Template:
    """One compiled template version. Build through TemplateStore.get()."""

    def __init__(
        self, name: str, files: Mapping[str, bytes], version: str, render_timeout_s: float = RENDER_TIMEOUT_S
    ) -> None:
        self.name = name
        self.version = version
        self.render_timeout_s = render_timeout_s
        manifest = parse_manifest(name, files["manifest.toml"])
        self.category: str = manifest.category
        self.channels: list[str] = manifest.channels
        self.default_locale: str = manifest.default_locale
        self.description: str = manifest.description

        compiler = PartCompiler(name, decode_sources(name, files))
        self._globals = compiler.env.globals
        self._parts: dict[str, ChannelParts] = {}
        for channel in self.channels:
            self._parts[channel] = compiler.load_channel(channel)
        default_key = locale_key(self.default_locale)
        self.locales: list[str] = [
            self.default_locale,
            *sorted(v for k, v in compiler.locales.items() if k != default_key),
        ]
        self._resolved: dict[tuple[str, tuple[str, ...]], dict[str, Part]] = {}

    @property
    def info(self) -> TemplateInfo:
        return TemplateInfo(
            name=self.name,
            category=self.category,
            channels=list(self.channels),
            default_locale=self.default_locale,
            description=self.description,
            version=self.version,
            locales=list(self.locales),
        )

    def _channel_parts(self, channel: str) -> ChannelParts:
        parts = self._parts.get(channel)
        if parts is None:
            raise TemplateError(
                f"has no {channel} channel (it has: {', '.join(self.channels)})", template=self.name, part=channel
            )
        return parts

    def _all_parts(self, channels: list[str]) -> Iterator[Part]:
        for channel in channels:
            for variants in self._channel_parts(channel).values():
                yield from variants.values()

    def required_variables(self, channel: str | None = None) -> set[str]:
        """Top-level names the parts of `channel` (default: every channel) read, in any locale."""
        channels = self.channels if channel is None else [channel]
        names: set[str] = set()
        for part in self._all_parts(channels):
            names |= part.variables
        return names

    def check_variables(self, available: set[str], channels: list[str]) -> list[str]:
        """Human-readable problems with the variables the template needs; empty when all are there."""
        problems: list[str] = []
        provided = available | BUILTIN_VARIABLES
        for channel in channels:
            if channel not in self._parts:
                problems.append(f"{channel}: template '{self.name}' has no {channel} channel")
                continue
            for variants in self._parts[channel].values():
                in_default = variants[None].variables if None in variants else frozenset()
                for key in sorted(variants, key=lambda k: k or ""):
                    part = variants[key]
                    missing = part.variables - provided
                    if key is not None:
                        missing -= in_default  # already reported for the default file
                    problems.extend(f"{part.label}: variable '{name}' {_UNPROVIDED}" for name in sorted(missing))
        return problems

    def _resolve(self, channel: str, locale: str | None) -> dict[str, Part]:
        chain = locale_chain(locale)
        key = (channel, chain)
        resolved = self._resolved.get(key)
        if resolved is None:
            resolved = {}
            for part, variants in self._channel_parts(channel).items():
                for candidate in (*chain, None):
                    if candidate in variants:
                        resolved[part] = variants[candidate]
                        break
            if len(self._resolved) < 1024:  # locales come from user data; keep the memo bounded
                self._resolved[key] = resolved
        return resolved

    def render(self, channel: str, locale: str | None, context: Mapping[str, Any]) -> dict[str, Any]:
        """The rendered parts of one channel in the best matching locale."""
        parts = self._resolve(channel, locale)
        return render_channel(self.name, channel, parts, {**self._globals, **context}, self.render_timeout_s)
