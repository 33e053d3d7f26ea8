"""SDP parse/build and RFC 3264 offer/answer."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from softswitch.sip.sdp import (
    MAX_MEDIA,
    MAX_SDP_SIZE,
    Codec,
    NoCommonCodec,
    SdpError,
    make_offer,
    negotiate_answer,
    parse_answer,
    parse_sdp,
)

CARRIER_OFFER = (
    "v=0\r\n"
    "o=carrier 123456 654321 IN IP4 198.51.100.7\r\n"
    "s=Talk\r\n"
    "c=IN IP4 198.51.100.7\r\n"
    "t=0 0\r\n"
    "m=audio 40000 RTP/AVP 8 0 18 100\r\n"
    "a=rtpmap:18 G729/8000\r\n"
    "a=fmtp:18 annexb=no\r\n"
    "a=rtpmap:100 telephone-event/8000\r\n"
    "a=fmtp:100 0-15\r\n"
    "a=ptime:30\r\n"
    "a=sendrecv\r\n"
)


def offer_with(audio_lines: str, session_extra: str = "", *, port: int = 40000) -> str:
    return (
        "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
        + session_extra
        + f"m=audio {port} RTP/AVP "
        + audio_lines
    )


# --- parsing ------------------------------------------------------------------------------------


def test_parse_carrier_offer_with_static_payload_types_without_rtpmap() -> None:
    sd = parse_sdp(CARRIER_OFFER.encode())
    assert sd.origin.session_id == "123456"
    assert sd.origin.version == 654321
    assert sd.connection is not None and sd.connection.address == "198.51.100.7"
    (m,) = sd.media
    assert (m.media, m.port, m.proto, m.formats) == (
        "audio",
        40000,
        "RTP/AVP",
        ("8", "0", "18", "100"),
    )
    assert m.codecs() == [
        Codec(8, "PCMA", 8000, 1, None),
        Codec(0, "PCMU", 8000, 1, None),
        Codec(18, "G729", 8000, 1, "annexb=no"),
        Codec(100, "TELEPHONE-EVENT", 8000, 1, "0-15"),
    ]
    assert m.ptime == 30
    assert sd.direction_of(m) == "sendrecv"


def test_lf_only_line_ends_and_missing_t_line_are_tolerated() -> None:
    sd = parse_sdp("v=0\no=- 1 2 IN IP4 10.0.0.1\ns=x\nc=IN IP4 10.0.0.1\nm=audio 5 RTP/AVP 0\n")
    assert sd.media[0].codecs()[0].name == "PCMU"
    assert sd.times[0].start == 0


def test_dynamic_payload_without_rtpmap_is_left_out_of_codecs() -> None:
    sd = parse_sdp(offer_with("0 97\r\n"))
    assert [c.pt for c in sd.media[0].codecs()] == [0]


def test_roundtrip_preserves_every_line() -> None:
    text = (
        "v=0\r\no=alice 2890844526 2890844526 IN IP4 host.example.com\r\ns=Session\r\n"
        "i=info\r\nu=http://example.com/x\r\ne=a@example.com\r\np=+1 555\r\n"
        "c=IN IP4 224.2.17.12/127\r\nb=AS:64\r\nt=2873397496 2873404696\r\nr=7d 1h 0 25h\r\n"
        "z=2882844526 -1h\r\nk=prompt\r\na=recvonly\r\n"
        "m=audio 49170/2 RTP/AVP 0\r\ni=voice\r\nc=IN IP6 ff15::101/3\r\nb=CT:1000\r\nk=prompt\r\n"
        "a=rtcp:49181\r\nm=image 6000 udptl t38\r\na=T38FaxVersion:0\r\na=T38FaxRateManagement:transferredTCF\r\n"
    )
    sd = parse_sdp(text)
    assert bytes(sd).decode() == text
    assert sd.media[0].port_count == 2
    assert sd.media[0].rtcp_port == 49181
    assert sd.media[1].formats == ("t38",)
    assert sd.direction_of(sd.media[0]) == "recvonly"


def test_next_version_increments_origin_version_only() -> None:
    sd = make_offer("192.0.2.1", 4000, session_id=77, version=3)
    nxt = sd.next_version()
    assert nxt.origin.version == 4 and nxt.origin.session_id == "77"
    assert nxt.media == sd.media


BAD = [
    ("", "empty"),
    ("v=1\r\no=- 1 1 IN IP4 a\r\n", "v=0"),
    ("o=- 1 1 IN IP4 a\r\nv=0\r\n", "v=0"),
    ("v=0\r\ns=-\r\n", "missing o="),
    ("v=0\r\no=- 1 1 IN IP4\r\n", "o=: expected 6"),
    ("v=0\r\no=- x 1 IN IP4 a\r\n", "session id"),
    ("v=0\r\no=- 1 1 IN IP4 a\r\nx=1\r\n", "unknown"),
    ("v=0\r\no=- 1 1 IN IP4 a\r\nm=audio 70000 RTP/AVP 0\r\n", "out of range"),
    ("v=0\r\no=- 1 1 IN IP4 a\r\nm=audio -1 RTP/AVP 0\r\n", "m= port"),
    ("v=0\r\no=- 1 1 IN IP4 a\r\nm=audio 5 RTP/AVP PCMU\r\n", "payload type"),
    ("v=0\r\no=- 1 1 IN IP4 a\r\nm=audio 5 RTP/AVP 128\r\n", "payload type"),
    ("v=0\r\no=- 1 1 IN IP4 a\r\nm=audio 5 RTP/AVP\r\n", "no formats"),
    ("v=0\r\no=- 1 1 IN IP4 a\r\nm=audio\r\n", "m=: expected"),
    ("v=0\r\no=- 1 1 IN IP4 a\r\nm=audio 5 RTP/AVP 96\r\na=rtpmap:96 opus\r\n", "rtpmap"),
    ("v=0\r\no=- 1 1 IN IP4 a\r\nm=audio 5 RTP/AVP 96\r\na=rtpmap:96 x/0\r\n", "clock rate"),
    ("v=0\r\no=- 1 1 IN IP4 a\r\nm=audio 5 RTP/AVP 0\r\na=ptime:abc\r\n", "ptime"),
    ("v=0\r\no=- 1 1 IN IP4 a\r\nm=audio 5 RTP/AVP 0\r\nt=0 0\r\n", "media section"),
    ("v=0\r\no=- 1 1 IN IP4 a\r\nc=IN IP4\r\n", "c=: expected 3"),
    ("v=0\r\no=- 1 1 IN IP4 a\r\nc=IN IP4 ::1\r\n", "IP6 address"),
    ("v=0\r\no=- 1 1 IN IP4 a\r\nc=IN IP4 a/b\r\n", "TTL"),
    ("v=0\r\no=- 1 1 IN IP4 a\r\nr=1 2\r\n", "r= without"),
    ("v=0\r\no=- 1 1 IN IP4 a\r\nt=now 0\r\n", "t= start"),
    ("v=0\r\no=- 1 1 IN IP4 a\r\no=- 1 1 IN IP4 a\r\n", "more than one o="),
    ("v=0\r\no=- 1 1 IN IP4 a\r\ns=a\x00b\r\n", "control character"),
    ("v=0\r\no=- 1 1 IN IP4 a\r\na=rtcp:\r\n", "a=rtcp"),
    ("v=0\r\no=- 1 1 IN IP4 a\r\nb=AS\r\n", "b="),
    ("v=0\r\nno equals sign\r\n", "not '<type>=<value>'"),
]


@pytest.mark.parametrize(("text", "needle"), BAD)
def test_malformed_sdp_raises_sdp_error_with_clear_message(text: str, needle: str) -> None:
    with pytest.raises(SdpError) as info:
        parse_sdp(text)
    assert needle.lower() in str(info.value).lower()


def test_size_and_count_caps() -> None:
    head = "v=0\r\no=- 1 1 IN IP4 a\r\n"
    with pytest.raises(SdpError, match="too large"):
        parse_sdp(head + "a=" + "x" * MAX_SDP_SIZE + "\r\n")
    many_media = head + "m=audio 5 RTP/AVP 0\r\n" * (MAX_MEDIA + 1)
    with pytest.raises(SdpError, match="too many m="):
        parse_sdp(many_media)
    parse_sdp(head + "m=audio 5 RTP/AVP 0\r\n" * MAX_MEDIA)
    with pytest.raises(SdpError, match="too many lines"):
        parse_sdp(head + "a=x\r\n" * 600)
    with pytest.raises(SdpError, match="too many formats"):
        parse_sdp(head + "m=audio 5 RTP/AVP " + " ".join(["0"] * 65) + "\r\n")
    with pytest.raises(SdpError, match="UTF-8"):
        parse_sdp(head.encode() + b"s=\xff\xfe\r\n")


# --- fuzzing: only SdpError may escape ----------------------------------------------------------

_SEEDS = [CARRIER_OFFER, bytes(make_offer("192.0.2.1", 4000, session_id=1)).decode()]


@st.composite
def mutated_sdp(draw: st.DrawFn) -> str:
    lines = draw(st.sampled_from(_SEEDS)).split("\r\n")
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["del", "dup", "edit", "insert", "swap"]))
        i = draw(st.integers(0, len(lines) - 1))
        if op == "del" and len(lines) > 1:
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "insert":
            lines.insert(i, draw(st.text(max_size=30)))
        else:
            line = lines[i]
            pos = draw(st.integers(0, len(line)))
            junk = draw(st.sampled_from(["", " ", "/", ":", "0", "99999", "-", "\t", "a=", "x"]))
            cut = draw(st.integers(0, 3))
            lines[i] = line[:pos] + junk + line[pos + cut :]
    return "\r\n".join(lines)


def _parse_and_use(data: bytes | str) -> None:
    try:
        sd = parse_sdp(data)
    except SdpError:
        return
    again = parse_sdp(bytes(sd))
    assert bytes(again) == bytes(sd)
    for m in sd.media:
        m.codecs()
        _ = m.ptime, m.rtcp_port, sd.direction_of(m)
    with contextlib.suppress(SdpError):
        negotiate_answer(sd, "192.0.2.9", 5000, session_id=1, image_port=6000)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_sdp())
def test_mutated_sdp_raises_only_sdp_error(text: str) -> None:
    _parse_and_use(text)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_sdp_error(data: bytes) -> None:
    _parse_and_use(b"v=0\r\n" + data)


# --- offer ---------------------------------------------------------------------------------------


def test_make_offer_bytes() -> None:
    sd = make_offer("192.0.2.1", 4000, session_id=42, version=7)
    assert bytes(sd) == (
        b"v=0\r\no=- 42 7 IN IP4 192.0.2.1\r\ns=softswitch\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
        b"m=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
        b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
    )


def test_make_offer_ipv6_no_dtmf_sendonly() -> None:
    sd = make_offer(
        "2001:db8::1", 4000, session_id=1, codecs=("PCMA",), dtmf=False, direction="sendonly"
    )
    assert sd.connection is not None and sd.connection.addr_type == "IP6"
    assert sd.media[0].formats == ("8",)
    assert sd.direction_of(sd.media[0]) == "sendonly"
    with pytest.raises(ValueError, match="not supported"):
        make_offer("192.0.2.1", 4000, session_id=1, codecs=("opus",))


# --- answer (UAS side) ---------------------------------------------------------------------------


def test_answer_uses_offerer_preference_and_payload_numbers() -> None:
    result = negotiate_answer(parse_sdp(CARRIER_OFFER), "203.0.113.5", 20000, session_id=9)
    audio = result.audio
    assert audio is not None
    assert (audio.codec, audio.payload_type, audio.clock_rate) == ("PCMA", 8, 8000)
    assert audio.telephone_event_pt == 100
    assert (audio.remote_address, audio.remote_port) == ("198.51.100.7", 40000)
    assert audio.ptime == 30
    assert audio.direction == "sendrecv" and not audio.remote_hold
    assert bytes(result.answer) == (
        b"v=0\r\no=- 9 0 IN IP4 203.0.113.5\r\ns=softswitch\r\nc=IN IP4 203.0.113.5\r\nt=0 0\r\n"
        b"m=audio 20000 RTP/AVP 8 100\r\na=rtpmap:8 PCMA/8000\r\n"
        b"a=rtpmap:100 telephone-event/8000\r\na=fmtp:100 0-15\r\na=ptime:20\r\na=sendrecv\r\n"
    )


@pytest.mark.parametrize("te_pt", [96, 100, 101, 127])
def test_telephone_event_keeps_offered_payload_type(te_pt: int) -> None:
    offer = offer_with(f"0 {te_pt}\r\na=rtpmap:{te_pt} telephone-event/8000\r\n")
    result = negotiate_answer(parse_sdp(offer), "203.0.113.5", 20000, session_id=1)
    assert result.audio is not None and result.audio.telephone_event_pt == te_pt
    answer_m = parse_sdp(bytes(result.answer)).media[0]
    assert answer_m.formats == ("0", str(te_pt))
    assert answer_m.fmtp(te_pt) == "0-15"


def test_telephone_event_at_other_clock_rate_is_not_chosen() -> None:
    offer = offer_with(
        "0 96 97\r\na=rtpmap:96 telephone-event/48000\r\na=rtpmap:97 telephone-event/8000\r\n"
    )
    result = negotiate_answer(parse_sdp(offer), "203.0.113.5", 1, session_id=1)
    assert result.audio is not None and result.audio.telephone_event_pt == 97


def test_answer_without_dtmf_when_disabled_or_not_offered() -> None:
    offer = offer_with("0 101\r\na=rtpmap:101 telephone-event/8000\r\n")
    result = negotiate_answer(parse_sdp(offer), "203.0.113.5", 1, session_id=1, dtmf=False)
    assert result.audio is not None and result.audio.telephone_event_pt is None
    assert result.answer.media[0].formats == ("0",)
    result = negotiate_answer(parse_sdp(offer_with("0\r\n")), "203.0.113.5", 1, session_id=1)
    assert result.audio is not None and result.audio.telephone_event_pt is None


@pytest.mark.parametrize(
    ("offered", "answered", "remote_hold"),
    [
        ("sendrecv", "sendrecv", False),
        ("sendonly", "recvonly", True),
        ("recvonly", "sendonly", False),
        ("inactive", "inactive", True),
    ],
)
def test_direction_is_mirrored(offered: str, answered: str, remote_hold: bool) -> None:
    for offer in (
        offer_with(f"0\r\na={offered}\r\n"),
        offer_with("0\r\n", session_extra=f"a={offered}\r\n"),
    ):
        result = negotiate_answer(parse_sdp(offer), "203.0.113.5", 1, session_id=1)
        assert result.audio is not None
        assert result.audio.direction == answered
        assert result.audio.remote_hold is remote_hold
        assert parse_sdp(bytes(result.answer)).direction_of(result.answer.media[0]) == answered


def test_our_own_direction_combines_with_the_offer() -> None:
    offer = parse_sdp(offer_with("0\r\n"))
    result = negotiate_answer(offer, "203.0.113.5", 1, session_id=1, direction="sendonly")
    assert result.audio is not None and result.audio.direction == "sendonly"
    offer = parse_sdp(offer_with("0\r\na=sendonly\r\n"))
    result = negotiate_answer(offer, "203.0.113.5", 1, session_id=1, direction="sendonly")
    assert result.audio is not None and result.audio.direction == "inactive"


def test_rfc2543_hold_address_means_do_not_send() -> None:
    offer = parse_sdp(offer_with("0\r\n").replace("c=IN IP4 192.0.2.1", "c=IN IP4 0.0.0.0"))
    result = negotiate_answer(offer, "203.0.113.5", 1, session_id=1)
    assert result.audio is not None
    assert result.audio.remote_hold
    assert result.audio.direction == "recvonly"
    assert not result.audio.sending and result.audio.receiving


def test_media_connection_overrides_session_and_missing_connection_is_an_error() -> None:
    offer = offer_with("0\r\nc=IN IP4 192.0.2.200\r\n")
    result = negotiate_answer(parse_sdp(offer), "203.0.113.5", 1, session_id=1)
    assert result.audio is not None and result.audio.remote_address == "192.0.2.200"
    bare = "v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nt=0 0\r\nm=audio 5 RTP/AVP 0\r\n"
    with pytest.raises(SdpError, match="no connection address"):
        negotiate_answer(parse_sdp(bare), "203.0.113.5", 1, session_id=1)


def test_rejected_and_unsupported_streams_get_port_zero_in_order() -> None:
    offer = parse_sdp(
        offer_with("0\r\n", port=0)  # first audio already rejected by the offerer
        + "m=video 5002 RTP/AVP 31\r\n"
        + "m=audio 5004 RTP/SAVP 0\r\n"
        + "m=audio 5006 RTP/AVP 0 8\r\n"
        + "m=audio 5008 RTP/AVP 0\r\n"
        + "m=image 5010 udptl t38\r\na=T38FaxVersion:0\r\n"
    )
    result = negotiate_answer(offer, "203.0.113.5", 20000, session_id=1)
    ports = [m.port for m in result.answer.media]
    assert ports == [0, 0, 0, 20000, 0, 0]
    assert [m.media for m in result.answer.media] == [m.media for m in offer.media]
    assert result.answer.media[1].formats == ("31",)
    assert result.answer.media[5].proto == "udptl"
    assert result.audio is not None and result.audio.media_index == 3
    assert result.image is None


def test_t38_image_accepted_only_when_caller_supports_it() -> None:
    text = (
        "v=0\r\no=- 1 2 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
        "m=audio 0 RTP/AVP 0\r\n"
        "m=image 5010 udptl t38\r\na=T38FaxVersion:0\r\na=T38MaxBitRate:14400\r\na=ptime:20\r\n"
    )
    with pytest.raises(NoCommonCodec):
        negotiate_answer(parse_sdp(text), "203.0.113.5", 1, session_id=1)
    result = negotiate_answer(parse_sdp(text), "203.0.113.5", 1, session_id=1, image_port=7000)
    assert result.audio is None
    assert result.image is not None
    assert (result.image.remote_address, result.image.remote_port) == ("192.0.2.1", 5010)
    image_m = result.answer.media[1]
    assert (image_m.port, image_m.proto, image_m.formats) == (7000, "udptl", ("t38",))
    assert [str(a) for a in image_m.attributes] == ["T38FaxVersion:0", "T38MaxBitRate:14400"]


def test_no_common_codec() -> None:
    offer = parse_sdp(offer_with("18 9\r\n"))
    with pytest.raises(NoCommonCodec):
        negotiate_answer(offer, "203.0.113.5", 1, session_id=1)
    assert isinstance(NoCommonCodec("x"), SdpError)
    # Same name at the wrong clock rate is a different codec.
    offer = parse_sdp(offer_with("96\r\na=rtpmap:96 PCMU/16000\r\n"))
    with pytest.raises(NoCommonCodec):
        negotiate_answer(offer, "203.0.113.5", 1, session_id=1)


# --- answer (UAC side) ---------------------------------------------------------------------------


def test_offer_answer_roundtrip_between_two_sides() -> None:
    offer = make_offer("192.0.2.1", 4000, session_id=5, codecs=("PCMA", "PCMU"))
    remote = negotiate_answer(
        parse_sdp(bytes(offer)), "198.51.100.2", 30000, session_id=6, supported=("PCMU", "PCMA")
    )
    local = parse_answer(offer, parse_sdp(bytes(remote.answer)))
    assert remote.audio is not None
    assert (local.codec, local.payload_type) == (remote.audio.codec, remote.audio.payload_type)
    assert local.codec == "PCMA"
    assert (local.remote_address, local.remote_port) == ("198.51.100.2", 30000)
    assert local.telephone_event_pt == 101 == remote.audio.telephone_event_pt
    assert local.direction == "sendrecv"


def test_parse_answer_uses_answer_payload_numbers_and_direction() -> None:
    offer = make_offer("192.0.2.1", 4000, session_id=5)
    answer = parse_sdp(
        "v=0\r\no=- 1 1 IN IP4 198.51.100.2\r\ns=-\r\nc=IN IP4 198.51.100.2\r\nt=0 0\r\n"
        "m=audio 31000 RTP/AVP 8 96\r\na=rtpmap:96 telephone-event/8000\r\na=ptime:40\r\n"
        "a=recvonly\r\na=rtcp:31005\r\n"
    )
    neg = parse_answer(offer, answer)
    assert (neg.codec, neg.payload_type, neg.telephone_event_pt) == ("PCMA", 8, 96)
    assert neg.direction == "sendonly" and neg.sending and not neg.receiving
    assert neg.ptime == 40 and neg.remote_rtcp_port == 31005
    assert not neg.remote_hold


def test_parse_answer_errors() -> None:
    offer = make_offer("192.0.2.1", 4000, session_id=5)
    head = "v=0\r\no=- 1 1 IN IP4 198.51.100.2\r\ns=-\r\nc=IN IP4 198.51.100.2\r\nt=0 0\r\n"
    with pytest.raises(SdpError, match="m= lines"):
        parse_answer(offer, parse_sdp(head))
    with pytest.raises(NoCommonCodec):
        parse_answer(offer, parse_sdp(head + "m=audio 0 RTP/AVP 0\r\n"))
    with pytest.raises(NoCommonCodec):
        parse_answer(offer, parse_sdp(head + "m=audio 5 RTP/AVP 18\r\n"))
    with pytest.raises(SdpError, match="answer media"):
        parse_answer(offer, parse_sdp(head + "m=video 5 RTP/AVP 0\r\n"))
