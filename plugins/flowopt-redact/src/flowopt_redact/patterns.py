"""The built-in detectors: a regular expression per kind, plus a check the regex cannot do.

Why a regex *and* a validator: a regex that alone is strict enough to avoid false positives
on version numbers, dates, prices and order ids misses real numbers, and one loose enough to
catch real numbers fires on ``2024-01-15``. So each regex finds *candidates* by shape (and
by what may not touch them: a ``#``, a currency sign, a ``.digit``) and a small function
then checks what a regex is bad at: digit counts (phones), the Luhn checksum (cards) and
the ISO 13616 mod-97 checksum (IBANs).

Every pattern is linear-time on hostile input: no nested unbounded quantifiers, and each
leading look-behind refuses to start a match inside a run of the same characters, so a
100 kB prompt of digits or letters costs one pass, not a quadratic scan.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["BUILTIN", "Detector", "iban_ok", "luhn_ok", "phone_ok"]


@dataclass(frozen=True, slots=True)
class Detector:
    """One kind of personal data: a compiled ``regex`` and an optional ``check`` that
    accepts or rejects each regex match (``None`` accepts all)."""

    kind: str
    regex: re.Pattern[str]
    check: Callable[[str], bool] | None = None

    def accepts(self, text: str) -> bool:
        return self.check is None or self.check(text)


# -- e-mail ----------------------------------------------------------------------------
# local@domain.tld. The look-behind stops a match from starting mid-token (so the scan is
# linear); the TLD must be letters and is refused when it is an image extension, because
# "icon@2x.png" is a retina asset name, not an address.
_EMAIL = re.compile(
    r"""
    (?<![\w.%+-])
    [A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,63})
    @
    (?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+
    (?!(?:png|jpe?g|gif|svg|webp|bmp|ico|tiff?)\b)
    [A-Za-z]{2,63}
    (?![\w-])
    """,
    re.VERBOSE,
)

# -- phone -----------------------------------------------------------------------------
# Two shapes, checked separately by digit count (see phone_ok):
#   international: "+" country code, then digits with single separators, an optional
#                  "(0)" / "(20)" area part: +44 20 7946 0958, +1-202-555-0143, +14155552671
#   national:      grouped digits with separators: (555) 123-4567, 555-123-4567,
#                  1-800-555-0199, 020 7946 0958, 01 23 45 67 89, 030 12345678
# What may not touch a candidate is what rules out look-alikes: a word character, "#"
# (order ids), a currency sign (prices), "." "," ":" "/" or "-" next to a digit (versions,
# decimals, times, dates, ranges, IP addresses), and a digit group just before or after
# (long numbers and card numbers split into groups).
_PHONE = re.compile(
    r"""
    (?:
        (?<![\w+])
        \+\d{1,3}
        (?:[ .-]?\(\d{1,4}\))?
        (?:[ .-]?\d){4,14}
    |
        (?<![\w#$€£¥+/.,:-])(?<!\d[ .-])
        (?:
            \(\d{2,5}\)[ .-]?\d{3,4}[ .-]?\d{3,4}
        |   1[ .-]\(?\d{3}\)?[ .-]?\d{3}[ .-]\d{4}
        |   \d{2,5}[ .-]\d{3,4}[ .-]\d{3,4}
        |   0\d(?:[ .-]\d\d){4}
        |   0\d{1,4}[ /-]\d{5,8}
        )
    )
    (?!\w)(?![.,:/-]?\d)(?![ ]\d)
    """,
    re.VERBOSE,
)


def phone_ok(text: str) -> bool:
    """Digit counts of real numbers: E.164 allows 8-15 digits with the country code
    (short ones below 8 are service numbers, not personal); a national number without a
    country code has 9-12 (9 only with a leading trunk 0, e.g. "030 1234567")."""
    digits = sum(c.isdigit() for c in text)
    if text.startswith("+"):
        return 8 <= digits <= 15
    stripped = text.lstrip("(")
    if stripped.startswith("0"):
        return 9 <= digits <= 12
    return 10 <= digits <= 12


# -- payment card ------------------------------------------------------------------------
# 13-19 digits, optionally in groups split by single spaces or hyphens, Luhn-valid. The
# checksum is what keeps long order and tracking numbers out (9 in 10 of them fail it).
_CARD = re.compile(
    r"""
    (?<![\w#$€£¥+/.,:-])(?<!\d[ -])
    \d(?:[ -]?\d){12,18}
    (?!\w)(?![.,:/-]?\d)(?![ ]\d)
    """,
    re.VERBOSE,
)


def luhn_ok(text: str) -> bool:
    """The Luhn checksum every payment card number satisfies."""
    digits = [int(c) for c in text if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


# -- IBAN ------------------------------------------------------------------------------
# Country code, two check digits, then 11-30 letters/digits, printed in groups of four or
# run together. Upper case only: that is how IBANs are written, and it keeps ordinary
# words ("is12 ...") out before the checksum even runs.
_IBAN = re.compile(
    r"""
    (?<![\w-])
    [A-Z]{2}\d{2}
    (?:[ ]?[A-Z0-9]{4}){2,7}
    (?:[ ]?[A-Z0-9]{1,3})?
    (?![\w-])
    """,
    re.VERBOSE,
)


def iban_ok(text: str) -> bool:
    """ISO 13616: move the first four characters to the end, letters to numbers
    (A=10 ... Z=35), and the result mod 97 must be 1. Random ids pass 1 time in 97."""
    compact = text.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(c, 36)) for c in rearranged)
    return int(number) % 97 == 1


BUILTIN: dict[str, Detector] = {
    "email": Detector("email", _EMAIL),
    "phone": Detector("phone", _PHONE, phone_ok),
    "card": Detector("card", _CARD, luhn_ok),
    "iban": Detector("iban", _IBAN, iban_ok),
}
"""Built-in kinds by name. Their order is the priority when two kinds overlap (an e-mail
address wins over the digits inside it), after any custom patterns."""
