"""Locale tags of templates: lookup keys, BCP 47 display casing, and a requested locale's fallback chain.

A locale variant of a part ("email/subject.fr-CA.j2") is found by its lookup key ("fr-ca"); a
request for "fr_CA.UTF-8" tries "fr-ca", then "fr", then the unsuffixed default file.
"""

from __future__ import annotations

import functools
import re

LOCALE_RE = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*")


def locale_key(tag: str) -> str:
    """The lookup form of a tag: lower case, with hyphens ("fr_CA" → "fr-ca")."""
    return tag.replace("_", "-").lower()


def locale_display(tag: str) -> str:
    """BCP 47 casing: language lower, script title, region upper ("zh-Hant-TW")."""
    subtags = locale_key(tag).split("-")
    shown = [subtags[0]]
    for subtag in subtags[1:]:
        if len(subtag) == 4 and subtag.isalpha():
            shown.append(subtag.title())
        elif len(subtag) == 2 or (len(subtag) == 3 and subtag.isdigit()):
            shown.append(subtag.upper())
        else:
            shown.append(subtag)
    return "-".join(shown)


@functools.lru_cache(maxsize=4096)
def locale_chain(locale: str | None) -> tuple[str, ...]:
    """Lookup keys for a requested locale, most specific first: "fr_CA.UTF-8" → ("fr-ca", "fr")."""
    if not locale:
        return ()
    tag = locale_key(locale.strip().split(".", 1)[0].split("@", 1)[0])
    subtags = [s for s in tag.split("-") if s]
    return tuple("-".join(subtags[:n]) for n in range(len(subtags), 0, -1))
