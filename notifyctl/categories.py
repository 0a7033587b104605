"""Categories: what kind of message a category is, and the protections that come with its kind.

Every category has a kind: `marketing`, `transactional` or `critical`. A marketing-kind category
always has the marketing protections (SMS only with an explicit opt-in, quiet hours, one-click
List-Unsubscribe on email) but those its configuration turns off by name in `protections_off`; a
transactional one follows preferences; a critical one bypasses preferences, never suppressions.
The configuration (notifyctl/settings.py) merges its categories with the built-in ones.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

CategoryKind = Literal["marketing", "transactional", "critical"]
Protection = Literal["sms_opt_in", "quiet_hours", "list_unsubscribe"]
Priority = Literal["high", "normal", "low"]
KINDS: tuple[CategoryKind, ...] = ("marketing", "transactional", "critical")
PROTECTIONS: tuple[Protection, ...] = ("sms_opt_in", "quiet_hours", "list_unsubscribe")
KIND_PRIORITY: dict[str, Priority] = {"marketing": "low", "transactional": "high", "critical": "high"}
# The built-in categories and their kinds: a configuration adds to them and tunes them, never
# changes what they are.
BUILT_IN_KINDS: dict[str, CategoryKind] = {
    "marketing": "marketing",
    "transactional": "transactional",
    "security": "critical",
}


@dataclass(frozen=True, slots=True)
class CategoryRule:
    """What a category means to policy and to the envelope, derived once from its kind.

    A marketing-kind category has every marketing protection (SMS needs an explicit opt-in, quiet
    hours, one-click List-Unsubscribe on email) but those its configuration names in
    `protections_off`; a critical one bypasses preferences (never suppressions); a transactional
    one follows preferences and has no marketing protection."""

    kind: CategoryKind
    priority: Priority
    critical: bool
    opt_in_required: tuple[str, ...]  # channels needing an explicit opt-in
    quiet_hours: bool  # subject to quiet hours on quiet_hours.channels
    list_unsubscribe: bool  # email carries RFC 8058 one-click List-Unsubscribe headers
    protections_off: tuple[Protection, ...] = ()
    old_spellings: tuple[str, ...] = ()  # keys of earlier releases that turned a protection off

    @classmethod
    def of(
        cls,
        kind: CategoryKind,
        priority: Priority | None = None,
        protections_off: Collection[Protection] = (),
        old_spellings: Collection[str] = (),
    ) -> CategoryRule:
        marketing = kind == "marketing"
        return cls(
            kind=kind,
            priority=priority or KIND_PRIORITY[kind],
            critical=kind == "critical",
            opt_in_required=("sms",) if marketing and "sms_opt_in" not in protections_off else (),
            quiet_hours=marketing and "quiet_hours" not in protections_off,
            list_unsubscribe=marketing and "list_unsubscribe" not in protections_off,
            protections_off=tuple(p for p in PROTECTIONS if p in protections_off),
            old_spellings=tuple(old_spellings),
        )


# A category no configuration defines can only come from data written before the configuration
# changed (the front doors refuse one): it is held to every marketing protection.
UNDEFINED_CATEGORY = CategoryRule.of("marketing")


class CategorySettings(BaseModel):
    """One [categories.NAME] table: a kind, a priority, and the marketing protections turned off.

    The keys of earlier releases (critical, opt_in_required, quiet_hours, list_unsubscribe) are still
    read where they say what the kind says, or turn a marketing protection off (read as its
    `protections_off` entry; `doctor` asks for the new spelling); where they contradict the kind
    they are an error saying what to write instead."""

    model_config = ConfigDict(extra="forbid")

    kind: CategoryKind
    priority: Priority | None = None  # default: low for marketing, high otherwise
    protections_off: list[Protection] = Field(default_factory=list)
    critical: bool | None = None
    opt_in_required: list[str] | None = None
    quiet_hours: bool | None = None
    list_unsubscribe: bool | None = None
    _rule: CategoryRule = PrivateAttr()

    @model_validator(mode="after")
    def _derive(self) -> CategorySettings:
        kind, off, old = self.kind, set(self.protections_off), []
        if off and kind != "marketing":
            raise ValueError(f"protections_off: a {kind} category has no marketing protection to turn off")
        if self.critical is not None and self.critical != (kind == "critical"):
            wanted = "critical" if self.critical else "transactional"
            raise ValueError(
                f'critical = {str(self.critical).lower()} contradicts kind = "{kind}" (write kind = "{wanted}")'
            )
        said: dict[Protection, tuple[str, bool | None]] = {
            "quiet_hours": ("quiet_hours", self.quiet_hours),
            "list_unsubscribe": ("list_unsubscribe", self.list_unsubscribe),
            "sms_opt_in": (
                "opt_in_required",
                None if self.opt_in_required is None else "sms" in self.opt_in_required,
            ),
        }
        others = sorted(set(self.opt_in_required or ()) - {"sms"})
        if others:
            raise ValueError(
                f"opt_in_required: only marketing SMS needs an explicit opt-in; {', '.join(others)} cannot "
                'require one (write kind = "marketing", and leave opt_in_required out)'
            )
        for protection, (key, value) in said.items():
            if value is None:
                continue
            if kind != "marketing" and value:
                raise ValueError(
                    f'{key}: only marketing-kind categories have the marketing protections (write kind = "marketing")'
                )
            if kind == "marketing" and value and protection in off:
                raise ValueError(f'{key} contradicts protections_off = ["{protection}"] (leave {key} out)')
            if kind == "marketing" and not value:
                off.add(protection)
                old.append(key)
        self._rule = CategoryRule.of(kind, self.priority, off, old)
        return self

    @property
    def rule(self) -> CategoryRule:
        return self._rule
