"""DigitStream: one key press seen in-band and by RFC 4733 is one digit."""

from media.digits import DigitEvent, DigitStream


def on(digit: str, source: str, start: int = 0) -> DigitEvent:
    return DigitEvent(digit, start, 0, source, False)


def off(digit: str, source: str, dur: int = 100) -> DigitEvent:
    return DigitEvent(digit, 0, dur, source, True)


def test_both_paths_yield_one_digit_first_arrival_wins() -> None:
    s = DigitStream()
    assert s.push(on("5", "rfc4733"), 0.000) == [on("5", "rfc4733")]
    assert s.push(on("5", "inband"), 0.040) == []
    assert s.push(off("5", "rfc4733"), 0.120) == [off("5", "both")]
    assert s.push(off("5", "inband"), 0.150) == []


def test_inband_first_then_rfc4733() -> None:
    s = DigitStream()
    assert s.push(on("#", "inband"), 1.0) == [on("#", "inband")]
    assert s.push(on("#", "rfc4733"), 1.05) == []
    assert s.push(off("#", "inband"), 1.1) == [off("#", "both")]
    assert s.push(off("#", "rfc4733"), 1.2) == []


def test_repeated_key_on_both_paths_is_two_digits() -> None:
    s = DigitStream()
    out = []
    for k in range(2):
        t = k * 0.1
        out += s.push(on("5", "inband"), t)
        out += s.push(on("5", "rfc4733"), t + 0.02)
        out += s.push(off("5", "inband", 50), t + 0.06)
        out += s.push(off("5", "rfc4733", 50), t + 0.07)
    assert [(e.digit, e.ended, e.source) for e in out] == [
        ("5", False, "inband"),
        ("5", True, "both"),
        ("5", False, "inband"),
        ("5", True, "both"),
    ]


def test_outside_window_is_a_new_digit() -> None:
    s = DigitStream(window=0.15)
    assert s.push(on("1", "inband"), 0.0)
    assert s.push(off("1", "inband"), 0.05) == [off("1", "inband")]
    assert s.push(on("1", "rfc4733"), 0.5) == [on("1", "rfc4733")]
    assert s.push(off("1", "rfc4733"), 0.6) == [off("1", "rfc4733")]


def test_different_digits_not_merged() -> None:
    s = DigitStream()
    assert s.push(on("1", "inband"), 0.0)
    assert s.push(on("2", "rfc4733"), 0.01) == [on("2", "rfc4733")]


def test_suppress_inband() -> None:
    s = DigitStream()
    s.suppress_inband(True)
    assert s.push(on("7", "inband"), 0.0) == []
    assert s.push(off("7", "inband"), 0.1) == []
    assert s.push(on("7", "rfc4733"), 0.2) == [on("7", "rfc4733")]
    s.suppress_inband(False)
    assert s.push(on("8", "inband"), 1.0) == [on("8", "inband")]


def test_end_without_onset_dropped() -> None:
    assert DigitStream().push(off("9", "inband"), 0.0) == []
