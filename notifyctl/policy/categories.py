"""Which category a message goes out under: decided once, at each front door, never per message.

The template's category decides. A caller may name another one (a campaign's `category`,
`send --category`, an event's `category`, the API's `category` field), but only a defined one of
the same kind as the template's or of the marketing kind, never a critical one unless the
template's is critical, and never one that turns off a marketing protection the template's
category keeps. Anything else would let whoever holds the front door send a marketing message
past an opt-out, a missing opt-in or quiet hours. A refusal is bad input: exit 2, HTTP 422.
"""

from __future__ import annotations

from notifyctl.categories import CategoryRule
from notifyctl.errors import InputError
from notifyctl.settings import Settings


def defined_category(settings: Settings, name: str, where: str) -> CategoryRule:
    """The rule of a category the configuration defines; InputError naming the known ones otherwise."""
    conf = settings.categories.get(name)
    if conf is None:
        raise InputError(
            f"{where}: category '{name}' is not defined in {settings.source} (known: {settings.known_categories()})"
        )
    return conf.rule


def override_refusal(template_rule: CategoryRule, rule: CategoryRule) -> str | None:
    """Why a category of `rule` may not replace one of `template_rule`, or None when it may."""
    if rule.critical and not template_rule.critical:
        return "a critical category bypasses preferences: only a critical template may be sent as one"
    if rule.kind not in (template_rule.kind, "marketing"):
        return f"it must be of the template's kind ({template_rule.kind}) or of the marketing kind"
    kept = template_rule.protections_off if template_rule.kind == "marketing" else rule.protections_off
    dropped = [p for p in rule.protections_off if p not in kept]
    if dropped:
        return f"it turns off {', '.join(dropped)}, which the template's category keeps"
    return None


def choose_category(settings: Settings, template: str, template_category: str, requested: str | None) -> str:
    """The category to send `template` under when a caller asks for `requested` (None: the
    template's own). Raises InputError when either is undefined or the override is not allowed."""
    template_rule = defined_category(settings, template_category, f"template '{template}'")
    if requested is None or requested == template_category:
        return template_category
    rule = defined_category(settings, requested, f"template '{template}'")
    refusal = override_refusal(template_rule, rule)
    if refusal is not None:
        raise InputError(
            f"template '{template}' has category '{template_category}' ({template_rule.kind}); it cannot be "
            f"sent as '{requested}' ({rule.kind}): {refusal}"
        )
    return requested
