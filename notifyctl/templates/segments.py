"""How an SMS text travels: its encoding (GSM-7 or UCS-2) and how many segments it costs.

3GPP TS 23.038: a text made only of the GSM 7-bit default alphabet (and its extension table,
whose characters take two septets: an escape and the character) is sent as GSM-7, 160 septets
in one message or 153 per segment once it is split (the user data header takes the rest).
Any other character makes the whole text UCS-2 (UTF-16 code units): 70 in one message, 67 per
segment; a character outside the BMP (most emoji) takes two units. A segment boundary never
splits an escape pair or a surrogate pair. The table is small and fixed, so it lives here
rather than in a dependency (PyPI's GSM-7 packages are codecs, not segment counters).
"""

from __future__ import annotations

from dataclasses import dataclass

# The GSM 7-bit default alphabet, in code order (0x00-0x7F); 0x1B (escape) is not a character.
_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_BASIC = frozenset(_BASIC) - {"\x1b"}
# The extension table: each is sent as escape + character, two septets.
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

GSM7_SINGLE, GSM7_MULTI = 160, 153
UCS2_SINGLE, UCS2_MULTI = 70, 67


@dataclass(frozen=True)
class SmsSize:
    encoding: str  # "GSM-7" or "UCS-2"
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    segments: int
    per_segment: int  # the capacity of one segment at this size: 160/153 or 70/67

    def as_dict(self) -> dict[str, object]:
        return {
            "encoding": self.encoding,
            "units": self.units,
            "segments": self.segments,
            "per_segment": self.per_segment,
        }


def _widths(text: str) -> tuple[str, list[int]]:
    """The encoding and each character's width in units (septets or UTF-16 code units)."""
    if all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in text):
        return "GSM-7", [2 if c in GSM7_EXTENSION else 1 for c in text]
    return "UCS-2", [2 if ord(c) > 0xFFFF else 1 for c in text]


def _segments(widths: list[int], capacity: int) -> int:
    """Segments needed when no character's units may be split across two segments."""
    count, used = 1, 0
    for width in widths:
        if used + width > capacity:
            count, used = count + 1, 0
        used += width
    return count


def sms_size(text: str) -> SmsSize:
    """The encoding, length in units and segment count of an SMS body."""
    encoding, widths = _widths(text)
    single, multi = (GSM7_SINGLE, GSM7_MULTI) if encoding == "GSM-7" else (UCS2_SINGLE, UCS2_MULTI)
    units = sum(widths)
    if units <= single:
        return SmsSize(encoding, units, 1 if units else 0, single)
    return SmsSize(encoding, units, _segments(widths, multi), multi)
