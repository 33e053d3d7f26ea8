"""RTP header parse/build and RFC 3550 appendix A statistics."""

import pytest

from media.rtp import (
    ReceptionStats,
    RtpError,
    build_packet,
    build_rtcp_report,
    parse_header,
    parse_rtcp,
    seq_newer,
)


def test_build_and_parse_roundtrip() -> None:
    pkt = build_packet(8, True, 65535, 0xFFFFFFF0, 0xDEADBEEF, b"\xd5" * 160)
    assert len(pkt) == 172
    h = parse_header(pkt)
    assert (h.marker, h.payload_type, h.sequence, h.timestamp, h.ssrc) == (
        True,
        8,
        65535,
        0xFFFFFFF0,
        0xDEADBEEF,
    )
    assert pkt[h.payload_offset : h.payload_end] == b"\xd5" * 160


def test_parse_skips_csrc_extension_and_padding() -> None:
    # V=2, P=1, X=1, CC=1; one CSRC; extension of one word; 3 bytes of padding.
    header = bytes([0xB1, 0x00]) + (7).to_bytes(2, "big") + (1).to_bytes(4, "big")
    header += (2).to_bytes(4, "big") + (3).to_bytes(4, "big")
    ext = b"\xbe\xde\x00\x01" + b"\x00" * 4
    pkt = header + ext + b"abc" + b"\x00\x00\x03"
    h = parse_header(pkt)
    assert pkt[h.payload_offset : h.payload_end] == b"abc"


@pytest.mark.parametrize("data", [b"", b"\x80" * 11, b"\x40" + b"\x00" * 11])
def test_parse_rejects_malformed(data: bytes) -> None:
    with pytest.raises(RtpError):
        parse_header(data)


def test_seq_newer_wraps() -> None:
    assert seq_newer(0, 65535)
    assert not seq_newer(65535, 0)
    assert not seq_newer(5, 5)


def _feed(stats: ReceptionStats, seqs: list[int]) -> None:
    for i, s in enumerate(seqs):
        stats.update(s, i * 160, i * 0.02, 172)


def test_extended_sequence_across_wrap_and_loss() -> None:
    stats = ReceptionStats(ssrc=1, seq=65530)
    seqs = [(65530 + i) & 0xFFFF for i in range(20) if i != 10]
    _feed(stats, seqs)
    assert stats.extended_max == 65536 + 13
    # Probation swallows the first packet; the one gap is counted as lost.
    assert stats.lost == 1
    block = stats.report_block(now=1.0)
    assert block.packets_lost == 1
    assert block.fraction_lost == 256 // 19
    assert block.highest_sequence == 65536 + 13


def test_duplicate_and_misordered_packets_do_not_count_as_loss() -> None:
    stats = ReceptionStats(ssrc=1, seq=100)
    _feed(stats, [100, 101, 103, 102, 104, 104])
    assert stats.lost <= 0
    assert stats.max_seq == 104


def test_big_jump_restarts_after_two_sequential_packets() -> None:
    stats = ReceptionStats(ssrc=1, seq=10)
    _feed(stats, [10, 11, 12])
    assert not stats.update(40000, 0, 1.0, 172)
    assert stats.update(40001, 160, 1.02, 172)
    assert stats.base_seq == 40001
    assert stats.lost == 0


def test_jitter_zero_for_perfect_pacing_and_grows_with_delay_variation() -> None:
    stats = ReceptionStats(ssrc=1, seq=0)
    for i in range(50):
        stats.update(i, (0xFFFFF000 + i * 160) & 0xFFFFFFFF, i * 0.02, 172)
    assert stats.jitter == pytest.approx(0.0, abs=1e-6)
    for i in range(50, 100):
        ts = (0xFFFFF000 + i * 160) & 0xFFFFFFFF
        stats.update(i, ts, i * 0.02 + (0.01 if i % 2 else 0.0), 172)
    # Alternating 10 ms (80 samples) of variation converges towards 80.
    assert 60 < stats.jitter < 81


def test_rtcp_sr_and_rr_roundtrip() -> None:
    stats = ReceptionStats(ssrc=77, seq=0)
    _feed(stats, [0, 1, 2, 4])
    sr = build_rtcp_report(
        5,
        [stats.report_block(1.0)],
        sent_packets=3,
        sent_octets=480,
        rtp_timestamp=9,
        wallclock=1_700_000_000.5,
    )
    rr = build_rtcp_report(
        5, [], sent_packets=0, sent_octets=0, rtp_timestamp=0, wallclock=1_700_000_000.0
    )
    (p_sr,) = parse_rtcp(sr)
    (p_rr,) = parse_rtcp(rr)
    assert p_sr.ssrc == 5 and p_sr.reports[0].ssrc == 77 and p_sr.reports[0].packets_lost == 1
    assert p_sr.sender_info.packet_count == 3  # type: ignore[union-attr]
    assert not hasattr(p_rr, "sender_info")
    with pytest.raises(RtpError):
        parse_rtcp(b"\x80\xc8\x00")
