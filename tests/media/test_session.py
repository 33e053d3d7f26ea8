"""RtpSession: bounded latching, source rejection, SSRC change, send-stream continuity."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from media.rtp import parse_header
from media.session import (
    TRANSITIONS,
    LatchEvent,
    LatchState,
    ProtocolError,
    RtpSession,
)

PEER = ("192.0.2.10", 4000)


def _state(s: RtpSession) -> LatchState:
    return s.state


def _session(nat: bool = False) -> RtpSession:
    s = RtpSession("a", 20000, ssrc=0x1111, initial_seq=100, initial_ts=1000, nat=nat)
    s.set_remote(*PEER, now=0.0, codec="PCMU", dtmf_pt=101)
    return s


def test_idle_leg_accepts_nothing() -> None:
    s = RtpSession("a", 20000, ssrc=1)
    assert _state(s) is LatchState.IDLE
    assert not s.accept(PEER, 0.0)
    assert s.rejected_source == 1
    assert s.destination is None


def test_latches_on_signalled_host_with_other_port_then_rejects_others() -> None:
    s = _session()
    assert _state(s) is LatchState.LEARNING
    assert not s.accept(("198.51.100.1", 4000), 0.1)
    assert s.accept(("192.0.2.10", 5555), 0.2)
    assert _state(s) is LatchState.LATCHED
    assert s.destination == ("192.0.2.10", 5555)
    # RTP bleed: same host other port, or other host, after latching.
    assert not s.accept(("192.0.2.10", 4000), 0.3)
    assert not s.accept(("198.51.100.1", 5555), 0.3)
    assert s.accept(("192.0.2.10", 5555), 0.4)
    assert s.rejected_source == 3


def test_nat_latches_any_host_within_window_only() -> None:
    s = _session(nat=True)
    assert s.accept(("203.0.113.7", 31000), 1.0)
    assert s.destination == ("203.0.113.7", 31000)
    late = _session(nat=True)
    late.poll(LATCH_WINDOW_PLUS)
    assert _state(late) is LatchState.FIXED
    assert not late.accept(("203.0.113.7", 31000), LATCH_WINDOW_PLUS)
    assert late.accept(PEER, LATCH_WINDOW_PLUS)


LATCH_WINDOW_PLUS = 3.5


def test_window_expiry_on_first_packet_fixes_to_signalled_address() -> None:
    s = _session()
    assert not s.accept(("192.0.2.10", 5555), 10.0)
    assert _state(s) is LatchState.FIXED
    assert s.accept(PEER, 10.0)


def test_reinvite_with_new_remote_reopens_window_same_remote_keeps_latch() -> None:
    s = _session()
    assert s.accept(("192.0.2.10", 5555), 0.1)
    s.set_remote(*PEER, now=5.0, codec="PCMA", dtmf_pt=96)
    assert _state(s) is LatchState.LATCHED and s.pt == 8 and s.dtmf_pt == 96
    s.set_remote("192.0.2.99", 6000, now=6.0)
    assert _state(s) is LatchState.LEARNING
    assert not s.accept(("192.0.2.10", 5555), 6.1)
    assert s.accept(("192.0.2.99", 6002), 6.2)


def test_unknown_codec_rejected() -> None:
    s = RtpSession("a", 1, ssrc=1)
    with pytest.raises(ValueError):
        s.set_remote("h", 1, 0.0, codec="G729")


@given(st.sampled_from(list(LatchState)), st.sampled_from(list(LatchEvent)))
def test_every_missing_transition_is_a_protocol_error(state: LatchState, event: LatchEvent) -> None:
    s = RtpSession("x", 1, ssrc=1)
    s.state = state
    if (state, event) in TRANSITIONS:
        s._set_state(event)
        assert s.state is TRANSITIONS[(state, event)]
    else:
        with pytest.raises(ProtocolError):
            s._set_state(event)


def test_ssrc_change_is_detected_and_restarts_stats() -> None:
    s = _session()
    assert not s.note_received(1, 10, 0, 0.0, 172)
    assert not s.note_received(1, 11, 160, 0.02, 172)
    assert s.note_received(2, 500, 9999, 0.04, 172)
    assert s.ssrc_changes == 1
    assert s.rx is not None and s.rx.ssrc == 2
    assert s.stats().packets_received == 3


def test_generated_stream_is_continuous_and_first_packet_marked() -> None:
    s = _session()
    hs = [parse_header(s.generated(b"\xff" * 160, i * 0.02)) for i in range(3)]
    assert [h.sequence for h in hs] == [100, 101, 102]
    assert [h.timestamp for h in hs] == [1000, 1160, 1320]
    assert [h.marker for h in hs] == [True, False, False]
    assert all(h.ssrc == 0x1111 and h.payload_type == 0 for h in hs)


def test_relay_rewrites_and_stays_continuous_after_prompt_and_back() -> None:
    s = _session()
    for i in range(3):
        s.generated(b"\xff" * 160, i * 0.02)
    # Peer stream starts at arbitrary seq/ts near the wrap.
    out = [
        parse_header(
            s.relayed(
                0,
                False,
                (65534 + i) & 0xFFFF,
                (2**32 - 160 + 160 * i) % 2**32,
                0xABC,
                b"x" * 160,
                0.06 + i * 0.02,
            )
        )
        for i in range(4)
    ]
    assert [h.sequence for h in out] == [103, 104, 105, 106]
    assert [h.timestamp for h in out] == [1480, 1640, 1800, 1960]
    assert out[0].marker and not out[1].marker
    assert all(h.ssrc == 0x1111 for h in out)
    # A gap in the peer's stream stays a gap in ours.
    gap = parse_header(s.relayed(0, False, 3, 160 * 4, 0xABC, b"x" * 160, 0.16))
    assert (gap.sequence, gap.timestamp) == (107 + 1, 1960 + 320)
    # Prompt again after 100 ms of silence: timestamp follows wall time.
    back = parse_header(s.generated(b"\xff" * 160, 0.26))
    assert back.sequence == 109 and back.timestamp == 2280 + 800 and back.marker
    # Peer SSRC change re-bases the offsets.
    new = parse_header(s.relayed(0, False, 7, 7, 0xDEF, b"x" * 160, 0.28))
    assert new.sequence == 110 and new.timestamp == 3080 + 160 and new.marker


def test_relay_maps_payload_type() -> None:
    s = _session()
    pkt = s.relayed(96, True, 1, 1, 5, b"\x01\x0a\x00\xa0", 0.0)
    h = parse_header(pkt)
    assert h.payload_type == 96 and h.marker


def test_rtcp_report_and_rtt_from_peer_rr() -> None:
    a = _session()
    b = RtpSession("b", 20002, ssrc=0x2222)
    b.set_remote("192.0.2.1", 20000, 0.0)
    for i in range(10):
        pkt = parse_header(a.generated(b"\xff" * 160, i * 0.02))
        b.note_received(pkt.ssrc, pkt.sequence, pkt.timestamp, i * 0.02 + 0.01, 172)
    sr = a.rtcp_report(now=0.2, wallclock=1000.0)
    b.receive_rtcp(sr, now=0.25)
    rr = b.rtcp_report(now=0.3, wallclock=1000.1)
    a.receive_rtcp(rr, now=0.31)
    stats = a.stats()
    assert stats.rtt_ms is not None and 50 < stats.rtt_ms < 70
    assert stats.remote_fraction_lost == 0
    a.receive_rtcp(b"garbage", 0.4)
    assert a.malformed == 1
