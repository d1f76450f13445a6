"""The detectors on their own: what must be caught, what must be left alone, and the
build-time errors for bad options. No flowopt request types here (see the middleware
tests for those)."""

from __future__ import annotations

import time

import pytest
from flowopt.errors import ConfigError

from flowopt_redact import BUILTIN_KINDS, Redactor
from flowopt_redact.patterns import iban_ok, luhn_ok, phone_ok

ALL = Redactor("all")

# (text, expected redacted text) for every kind enabled.
MUST_REDACT = [
    # e-mail
    ("write to jane.doe@example.com today", "write to [EMAIL] today"),
    ("john.doe+tag@mail.example.co.uk", "[EMAIL]"),
    ("Mail: Jane.Doe@Example.COM; ok", "Mail: [EMAIL]; ok"),
    ("<a_b-c%d@sub-domain.example.org>", "<[EMAIL]>"),
    ("a@b.io.", "[EMAIL]."),
    # phone: international
    ("+44 20 7946 0958", "[PHONE]"),
    ("+1-202-555-0143", "[PHONE]"),
    ("+1 (202) 555-0143", "[PHONE]"),
    ("+44 (0)20 7946 0958", "[PHONE]"),
    ("+14155552671", "[PHONE]"),
    ("+49 30 12345678", "[PHONE]"),
    ("+33 1 23 45 67 89", "[PHONE]"),
    ("+91 98765 43210", "[PHONE]"),
    ("+61 2 9876 5432", "[PHONE]"),
    ("+81-3-1234-5678", "[PHONE]"),
    ("tel:+1-202-555-0143", "tel:[PHONE]"),
    ("(+44 20 7946 0958)", "([PHONE])"),
    # phone: national
    ("(555) 123-4567", "[PHONE]"),
    ("call (555) 123-4567, thanks", "call [PHONE], thanks"),
    ("555-123-4567", "[PHONE]"),
    ("Call 555-123-4567.", "Call [PHONE]."),
    ("555.123.4567", "[PHONE]"),
    ("555 123 4567", "[PHONE]"),
    ("1-800-555-0199", "[PHONE]"),
    ("020 7946 0958", "[PHONE]"),
    ("01 23 45 67 89", "[PHONE]"),
    ("030 12345678", "[PHONE]"),
    # payment cards (Luhn-valid test numbers)
    ("card 4111 1111 1111 1111 exp 12/29", "card [CARD] exp 12/29"),
    ("5500-0000-0000-0004", "[CARD]"),
    ("378282246310005", "[CARD]"),
    # IBAN (published example numbers)
    ("GB82 WEST 1234 5698 7654 32", "[IBAN]"),
    ("pay to DE89370400440532013000 now", "pay to [IBAN] now"),
    ("FR14 2004 1010 0505 0001 3M02 606", "[IBAN]"),
    # several kinds in one text
    (
        "email me at a@b.com or call +1 202 555 0143",
        "email me at [EMAIL] or call [PHONE]",
    ),
]

# Look-alikes that must come through untouched with every kind enabled.
MUST_KEEP = [
    "version 1.2.3",
    "Python 3.11.7 and torch 2.13.0",
    "build 10.0.19041.1234",
    "v2.0.1-rc.3",
    "2024-01-15",
    "15.01.2024",
    "01/15/2024",
    "2024.01.15",
    "2024-01-15T10:30:00Z",
    "2019-2024",
    "from 10:30-11:45",
    "$1,234.56",
    "€1.234.567,89",
    "£ 2,499.00",
    "1 234 567",
    "123 456 789",
    "12 345 678 901",
    "1,000,000",
    "12.5%",
    "3.14159265358979",
    "1e-10",
    "order #12345",
    "ticket #1234567890",
    "ORD-2024-000123",
    "SKU 123-456",
    "zip 12345-6789",
    "price: 12345678",
    "call 911",
    "room 101, floor 3",
    "192.168.100.200",
    "ISBN 978-3-16-148410-0",
    "icon@2x.png",
    "user@localhost",
    "@mention me",
    "4111 1111 1111 1112",  # fails Luhn
    "GB00 WEST 1234 5698 7654 32",  # fails mod 97
    "[EMAIL] and [PHONE]",  # our own placeholders: redacting twice changes nothing
]


@pytest.mark.parametrize(("text", "expected"), MUST_REDACT)
def test_redacts(text: str, expected: str) -> None:
    assert ALL.redact(text).text == expected


@pytest.mark.parametrize("text", MUST_KEEP)
def test_leaves_look_alikes_alone(text: str) -> None:
    result = ALL.redact(text)
    assert result.text == text
    assert result.total == 0


def test_counts_per_kind() -> None:
    result = ALL.redact("a@b.com, c@d.org, 555-123-4567 and 4111 1111 1111 1111")
    assert dict(result.counts) == {"email": 2, "phone": 1, "card": 1}
    assert result.total == 4


def test_clean_text_is_returned_as_is() -> None:
    text = "nothing personal here, version 1.2.3"
    assert ALL.redact(text).text is text


def test_defaults_are_email_and_phone_only() -> None:
    r = Redactor()
    assert r.kinds == ("email", "phone")
    # A card number is neither an e-mail nor (thanks to the group look-arounds) a phone.
    text = "a@b.com 4111 1111 1111 1111"
    assert r.redact(text).text == "[EMAIL] 4111 1111 1111 1111"


def test_kind_selection_and_order_does_not_matter() -> None:
    assert Redactor(["phone", "email"]).kinds == ("email", "phone")
    assert Redactor("email").redact("a@b.com 555-123-4567").text == "[EMAIL] 555-123-4567"
    assert Redactor(["all"]).kinds == BUILTIN_KINDS


def test_email_wins_over_digits_inside_it() -> None:
    assert ALL.redact("5551234567@sms.example.com").text == "[EMAIL]"


def test_placeholder_format() -> None:
    r = Redactor(placeholder="<{kind}:redacted>")
    assert r.redact("a@b.com, 555-123-4567").text == "<email:redacted>, <phone:redacted>"
    assert Redactor(placeholder="***").redact("x a@b.com").text == "x ***"


def test_custom_patterns_are_enabled_and_win() -> None:
    r = Redactor(["email"], patterns={"employee_id": r"EMP-\d{6}", "ticket": r"TCK\d+@x\.com"})
    result = r.redact("EMP-123456 filed TCK42@x.com, cc a@b.com")
    assert result.text == "[EMPLOYEE_ID] filed [TICKET], cc [EMAIL]"
    assert dict(result.counts) == {"employee_id": 1, "ticket": 1, "email": 1}
    assert r.kinds == ("employee_id", "ticket", "email")


def test_patterns_alone_are_enough() -> None:
    r = Redactor([], patterns={"secret": r"sk-[A-Za-z0-9]{8,}"})
    assert r.redact("key sk-abcdefgh12").text == "key [SECRET]"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kinds": ["emial"]}, "did you mean 'email'"),
        ({"kinds": "ssn"}, "unknown kind 'ssn'"),
        ({"kinds": []}, "nothing to detect"),
        ({"placeholder": "[{name}]"}, "cannot be formatted"),
        ({"placeholder": "[{KIND]"}, "cannot be formatted"),
        ({"patterns": {"x": "("}}, "not a valid regex"),
        ({"patterns": {"x": "a*"}}, "matches the empty string"),
        ({"patterns": {"phone": r"\d+"}}, "is a built-in kind"),
        ({"patterns": {"total": r"\d+"}}, "not usable"),
        ({"patterns": {"Bad Name": r"\d+"}}, "not usable"),
        ({"patterns": {"n": 5}}, "must be a regex string"),
        ({"patterns": ["x"]}, "must be a mapping"),
    ],
)
def test_bad_options_fail_at_build_time(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Redactor(**kwargs)  # type: ignore[arg-type]


def test_checksums() -> None:
    assert luhn_ok("4111 1111 1111 1111")
    assert not luhn_ok("4111 1111 1111 1112")
    assert not luhn_ok("4111")  # too short to be a card
    assert iban_ok("GB82 WEST 1234 5698 7654 32")
    assert not iban_ok("GB82 WEST 1234 5698 7654 33")
    assert phone_ok("+1 202 555 0143")
    assert not phone_ok("+1 234 5")  # 6 digits: not a subscriber number
    assert not phone_ok("123 456 789")  # 9 digits without a trunk 0


@pytest.mark.parametrize(
    "hostile",
    [
        "1" * 100_000,
        "1 " * 50_000,
        "a" * 100_000,
        "a@" * 50_000,
        "a@" + "b." * 50_000,
        "+" + "1" * 100_000,
        "12-" * 33_000,
        "(12) " * 20_000,
        "GB82" + "A" * 100_000,
    ],
    ids=["digits", "spaced", "letters", "ats", "labels", "plus", "dashes", "parens", "iban"],
)
def test_linear_time_on_hostile_input(hostile: str) -> None:
    # A quadratic pattern takes minutes on 100 kB; linear ones take ~10-30 ms. The bound is
    # loose on purpose (shared CI machines), it only has to tell those two apart.
    started = time.perf_counter()
    ALL.redact(hostile)
    assert time.perf_counter() - started < 2.0
