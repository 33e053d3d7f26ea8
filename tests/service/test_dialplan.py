"""DialPrompt grammar and destination validation (E.164, prefixes, injection)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from softswitch.service.countries import COUNTRY_CODES, KEEPS_LEADING_ZERO, country_for
from softswitch.service.dialplan import (
    CustomerService,
    DestinationRefused,
    Dialled,
    DigitCollector,
    EndSession,
    Invalid,
    LocationChange,
    RefusalReason,
    Restart,
    SpeedDialCode,
    normalize_destination,
    validate_international_prefix,
)

NUMBER = "81312345678"
FULLWIDTH = str.maketrans("0123456789", "".join(chr(0xFF10 + i) for i in range(10)))
ARABIC_INDIC = str.maketrans("0123456789", "".join(chr(0x0660 + i) for i in range(10)))

# --- country codes ---


def test_country_codes_are_a_prefix_code() -> None:
    codes = list(COUNTRY_CODES)
    assert len(codes) > 200
    for a in codes:
        assert a.isdigit() and 1 <= len(a) <= 3 and not a.startswith("0")
        for b in codes:
            assert a == b or not b.startswith(a), (a, b)
    assert set(codes) >= KEEPS_LEADING_ZERO


@pytest.mark.parametrize(
    ("number", "code", "name"),
    [
        ("12025550123", "1", "North American"),
        ("81312345678", "81", "Japan"),
        ("33123456789", "33", "France"),
        ("8525551234", "852", "Hong Kong"),
        ("74951234567", "7", "Russia"),
        ("2125551234", "212", "Morocco"),
        ("4202123456", "420", "Czech"),
    ],
)
def test_country_for(number: str, code: str, name: str) -> None:
    country = country_for(number)
    assert country is not None
    assert country.code == code
    assert name in country.name


@pytest.mark.parametrize("number", ["2812345", "4221234567", "999123456", "0812345", "", "21"])
def test_unassigned_country_codes(number: str) -> None:
    assert country_for(number) is None


def test_non_geographic_codes_are_marked() -> None:
    assert not COUNTRY_CODES["881"].geographic
    assert not COUNTRY_CODES["979"].geographic
    assert COUNTRY_CODES["81"].geographic


# --- normalize_destination ---


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [("+", "+81312345678"), ("00", "0081312345678"), ("011", "01181312345678")],
)
def test_international_prefix_is_added(prefix: str, expected: str) -> None:
    dial = normalize_destination("81312345678", prefix)
    assert dial.dial_string == expected
    assert dial.e164 == "81312345678"
    assert dial.country.code == "81"
    assert dial.national_number == "312345678"


@pytest.mark.parametrize(
    "digits",
    [
        "12025550123",  # USA, guide example 1 202 123 4567
        "33112345678",  # France, 01 1234 5678 without its 0
        "81312345678",  # Tokyo, 03 1234 5678 without its 0
        "390612345678",  # Italy keeps the 0 of Rome's 06
        "2250712345678",  # Cote d'Ivoire numbers begin with 0 since 2021
        "6834001",  # Niue: 4-digit national numbers
        "123456789012345",  # 15 digits in all
    ],
)
def test_valid_destinations(digits: str) -> None:
    assert normalize_destination(digits, "+").e164 == digits


@pytest.mark.parametrize(
    ("digits", "why"),
    [
        ("8103123456789", "trunk prefix"),  # 81 0 3...: the customer kept the 0 of 03
        ("4402071234567", "trunk prefix"),
        ("1234567890123456", "16 digits"),
        ("2812345678", "no country code"),
        ("4221234567", "no country code"),
        ("8131", "too short"),
        ("81", "too short"),
        ("10125550123", "trunk prefix"),
        ("11125550123", "NANP"),
        ("", "digits"),
    ],
)
def test_invalid_destinations(digits: str, why: str) -> None:
    with pytest.raises(DestinationRefused) as info:
        normalize_destination(digits, "+")
    assert info.value.reason is RefusalReason.INVALID
    assert why in str(info.value) or why == "digits"


@pytest.mark.parametrize(
    "attack",
    [
        "81312345678@evil.example.com",
        "81312345678;user=phone",
        "8131234567\r\nVia: SIP/2.0/UDP 198.51.100.1",
        "81312345678&SIP/attacker",
        "+81312345678",
        "81 3 1234 5678",
        NUMBER.translate(FULLWIDTH),  # full-width digits pass str.isdigit()
        NUMBER.translate(ARABIC_INDIC),  # so do Arabic-Indic digits
        "8131234567\uff18",
        "8131234567\u00b3",  # superscript three
        "81312345678\x00",
        "sip:81312345678@127.0.0.1",
        "*81312345678",
        "8131234#5678",
    ],
)
def test_dial_string_injection_is_refused(attack: str) -> None:
    with pytest.raises(DestinationRefused) as info:
        normalize_destination(attack, "+")
    assert info.value.reason is RefusalReason.INVALID


def test_blocked_prefixes() -> None:
    blocked = ["1900", "+881", "979"]
    for digits in ("19005550123", "8816123456", "979123456789"):
        with pytest.raises(DestinationRefused) as info:
            normalize_destination(digits, "+", blocked_prefixes=blocked)
        assert info.value.reason is RefusalReason.BLOCKED
    assert normalize_destination("12025550123", "+", blocked_prefixes=blocked).dial_string


def test_empty_prefix_means_bare_e164_digits() -> None:
    assert normalize_destination("81312345678", "").dial_string == "81312345678"


@pytest.mark.parametrize("prefix", ["+1", "00;", "0x", "00000", "+ ", "\u0660\u0660", "%2B"])
def test_bad_international_prefix_is_a_config_error(prefix: str) -> None:
    with pytest.raises(ValueError) as info:
        normalize_destination("81312345678", prefix)
    assert not isinstance(info.value, DestinationRefused)
    with pytest.raises(ValueError):
        validate_international_prefix(prefix)


@given(st.text(max_size=20), st.sampled_from(["+", "00", "011", "0011"]))
def test_a_dial_string_is_only_ever_prefix_and_ascii_digits(text: str, prefix: str) -> None:
    try:
        dial = normalize_destination(text, prefix)
    except DestinationRefused:
        return
    assert dial.dial_string == prefix + text
    assert all(ch in "0123456789" for ch in text)
    assert len(text) <= 15


# --- DigitCollector ---


def feed(collector: DigitCollector, keys: str, now: float = 0.0, gap: float = 0.3) -> list[object]:
    results: list[object] = []
    for key in keys:
        result = collector.push(key, now)
        now += gap
        if result is not None:
            results.append(result)
    return results


def test_number_ends_with_star() -> None:
    c = DigitCollector()
    assert feed(c, "81312345678*") == [Dialled("81312345678")]
    assert c.deadline is None
    assert c.entry == ""


def test_hash_star_restarts() -> None:
    c = DigitCollector()
    assert feed(c, "8131#*") == [Restart("hash_star")]
    assert feed(c, "#*") == [Restart("hash_star")]
    assert feed(c, "12025550123*") == [Dialled("12025550123")]


def test_hash_inside_a_number_is_invalid() -> None:
    c = DigitCollector()
    assert feed(c, "813#12*") == [Invalid("813#12")]


def test_speed_dial_codes() -> None:
    c = DigitCollector(speed_dial_timeout=3.0)
    assert feed(c, "0871") == [SpeedDialCode("0871")]  # 4 keys in all: complete at once
    assert feed(c, "087*") == [SpeedDialCode("087")]
    assert feed(c, "03*") == [SpeedDialCode("03")]
    assert feed(c, "03", now=100.0) == []
    assert c.deadline == pytest.approx(100.3 + 3.0)
    assert c.expire(102.0) is None  # not due yet
    assert c.expire(103.3) == SpeedDialCode("03")
    assert feed(c, "0*") == [Invalid("0")]


def test_double_zero_is_customer_service() -> None:
    assert feed(DigitCollector(), "00") == [CustomerService()]


def test_star_star_ends_the_session() -> None:
    assert feed(DigitCollector(), "**") == [EndSession()]


def test_timeouts_replay_the_prompt() -> None:
    c = DigitCollector(first_digit_timeout=10.0, inter_digit_timeout=5.0)
    c.start(0.0)
    assert c.deadline == 10.0
    assert c.expire(10.0) == Restart("no_input")
    assert c.deadline is None
    assert feed(c, "813", now=20.0) == []
    assert c.deadline == pytest.approx(20.6 + 5.0)
    assert c.expire(25.6) == Restart("timeout")
    assert c.expire(99.0) is None  # idle


def test_max_length() -> None:
    c = DigitCollector(max_digits=16)
    assert feed(c, "1" * 17) == [Invalid("1" * 17)]


def test_own_trigger_number_starts_location_change() -> None:
    c = DigitCollector(trigger_numbers=["12065550100"])
    assert feed(c, "12065550100#") == [LocationChange("12065550100")]
    assert feed(c, "12065550100*") == [LocationChange("12065550100")]
    assert feed(c, "12065550101*") == [Dialled("12065550101")]


def test_not_a_key() -> None:
    with pytest.raises(ValueError):
        DigitCollector().push("A", 0.0)
