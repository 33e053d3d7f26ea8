"""RTP/RTCP wire format and per-source reception statistics (RFC 3550).

The relay fast path touches every packet, so the 12-byte fixed header is read and written with
one precompiled `struct.Struct` instead of aiortc's `RtpPacket`. Measured on the project machine
(Python 3.11, 172-byte PCMU packet): `aiortc.rtp.RtpPacket.parse` 3.8 us + `serialize` 1.3 us,
against 0.74 us for unpack + repack of the header with `struct` and a payload slice. A trivial
uvloop relay spends about 4.5 us per packet in total, so aiortc would more than double the cost;
it is still used for RTCP (a few packets per leg every 5 s), where clarity wins.

`ReceptionStats` follows RFC 3550 appendix A: A.1 sequence validation with extended (wrapping)
sequence numbers, A.3 loss and fraction lost, A.8 interarrival jitter. It is clock-free: the
caller passes the arrival time in seconds.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from aiortc.rtp import (
    RtcpPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpSenderInfo,
    RtcpSrPacket,
)

RTP_VERSION = 2
HEADER = struct.Struct("!BBHII")
HEADER_SIZE = 12
# First byte of every packet we emit: V=2, no padding, no extension, no CSRC.
BYTE0 = RTP_VERSION << 6
MARKER = 0x80
SEQ_MOD = 1 << 16
TS_MOD = 1 << 32
# RFC 3550 A.1 constants.
MAX_DROPOUT = 3000
MAX_MISORDER = 100
MIN_SEQUENTIAL = 2
# Seconds between 1900-01-01 (NTP epoch) and 1970-01-01 (Unix epoch).
NTP_EPOCH_OFFSET = 2208988800


class RtpError(ValueError):
    """A datagram that is not a valid RTP packet."""


@dataclass(frozen=True, slots=True)
class RtpHeader:
    """The fields of a parsed RTP header; `payload_offset` skips CSRCs and extension."""

    marker: bool
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload_offset: int
    payload_end: int


def parse_header(data: bytes) -> RtpHeader:
    """Parse an RTP header (RFC 3550 section 5.1), raising RtpError when malformed."""
    if len(data) < HEADER_SIZE:
        raise RtpError("short packet")
    b0, b1, seq, ts, ssrc = HEADER.unpack_from(data)
    if b0 >> 6 != RTP_VERSION:
        raise RtpError("not RTP version 2")
    offset = HEADER_SIZE + 4 * (b0 & 0x0F)
    if b0 & 0x10:
        if len(data) < offset + 4:
            raise RtpError("truncated header extension")
        offset += 4 + 4 * int.from_bytes(data[offset + 2 : offset + 4], "big")
    end = len(data)
    if b0 & 0x20:
        end -= data[-1]
    if offset > end:
        raise RtpError("header longer than packet")
    return RtpHeader(bool(b1 & MARKER), b1 & 0x7F, seq, ts, ssrc, offset, end)


def build_packet(
    payload_type: int, marker: bool, sequence: int, timestamp: int, ssrc: int, payload: bytes
) -> bytes:
    """Serialize a plain RTP packet (no CSRC, no extension)."""
    b1 = payload_type | (MARKER if marker else 0)
    return HEADER.pack(BYTE0, b1, sequence, timestamp, ssrc) + payload


def seq_newer(a: int, b: int) -> bool:
    """True when 16-bit sequence number `a` is after `b` (serial arithmetic, RFC 1982)."""
    return a != b and ((a - b) & 0xFFFF) < 0x8000


class ReceptionStats:
    """Statistics for one received source: RFC 3550 A.1 (sequence), A.3 (loss), A.8 (jitter)."""

    __slots__ = (
        "bad_seq",
        "base_seq",
        "bytes",
        "clock_rate",
        "cycles",
        "expected_prior",
        "jitter",
        "last_sr_arrival",
        "last_sr_ntp_mid",
        "max_seq",
        "probation",
        "received",
        "received_prior",
        "ssrc",
        "transit",
    )

    def __init__(self, ssrc: int, seq: int, clock_rate: int = 8000) -> None:
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self.bytes = 0
        self.jitter = 0.0
        self.transit: float | None = None
        self.last_sr_ntp_mid = 0
        self.last_sr_arrival = 0.0
        self.probation = MIN_SEQUENTIAL
        self._init_seq(seq)
        self.max_seq = (seq - 1) & 0xFFFF

    def _init_seq(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self.bad_seq = SEQ_MOD + 1
        self.cycles = 0
        self.received = 0
        self.received_prior = 0
        self.expected_prior = 0

    def update(self, seq: int, timestamp: int, arrival: float, size: int) -> bool:
        """Account one packet; False when RFC 3550 A.1 says it is not (yet) a valid packet."""
        if self.probation:
            return self._probation(seq, timestamp, arrival, size)
        max_seq = self.max_seq
        udelta = (seq - max_seq) & 0xFFFF
        if udelta < MAX_DROPOUT:
            if seq < max_seq:
                self.cycles += SEQ_MOD
            self.max_seq = seq
        elif udelta <= SEQ_MOD - MAX_MISORDER:
            if seq == self.bad_seq:
                # Two sequential packets after a big jump: the source restarted (A.1).
                self._init_seq(seq)
            else:
                self.bad_seq = (seq + 1) & 0xFFFF
                return False
        self.received += 1
        self.bytes += size
        # RFC 3550 A.8: J += (|D| - J) / 16 in timestamp units (inlined: runs per packet).
        transit = arrival * self.clock_rate - timestamp
        last = self.transit
        if last is not None:
            d = abs(transit - last)
            if d > TS_MOD / 2:
                d = TS_MOD - d  # a timestamp wrap shows as a jump of 2^32
            self.jitter += (d - self.jitter) * 0.0625
        self.transit = transit
        return True

    def _probation(self, seq: int, timestamp: int, arrival: float, size: int) -> bool:
        # A source is valid once MIN_SEQUENTIAL packets arrive in sequence (A.1).
        if seq == (self.max_seq + 1) & 0xFFFF:
            self.probation -= 1
            self.max_seq = seq
            if self.probation == 0:
                self._init_seq(seq)
                self.received = 1
                self.bytes = size
                self.transit = arrival * self.clock_rate - timestamp
                return True
        else:
            self.probation = MIN_SEQUENTIAL - 1
            self.max_seq = seq
        return False

    @property
    def extended_max(self) -> int:
        """Highest extended sequence number received (cycles * 65536 + max_seq)."""
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        """Packets expected since the source was validated (A.3)."""
        return self.extended_max - self.base_seq + 1

    @property
    def lost(self) -> int:
        """Cumulative packets lost, clamped to the 24-bit signed field (A.3)."""
        return max(-0x800000, min(0x7FFFFF, self.expected - self.received))

    def report_block(self, now: float) -> RtcpReceiverInfo:
        """One RTCP report block for this source; resets the interval counters (A.3)."""
        expected = self.expected
        expected_interval = expected - self.expected_prior
        self.expected_prior = expected
        received_interval = self.received - self.received_prior
        self.received_prior = self.received
        lost_interval = expected_interval - received_interval
        fraction = 0
        if expected_interval > 0 and lost_interval > 0:
            fraction = (lost_interval << 8) // expected_interval
        dlsr = 0
        if self.last_sr_arrival:
            dlsr = int((now - self.last_sr_arrival) * 65536) & 0xFFFFFFFF
        return RtcpReceiverInfo(
            ssrc=self.ssrc,
            fraction_lost=min(fraction, 255),
            packets_lost=self.lost,
            highest_sequence=self.extended_max & 0xFFFFFFFF,
            jitter=int(self.jitter),
            lsr=self.last_sr_ntp_mid,
            dlsr=dlsr,
        )


def ntp_timestamp(wallclock: float) -> int:
    """64-bit NTP timestamp for a Unix time in seconds."""
    seconds = wallclock + NTP_EPOCH_OFFSET
    return (int(seconds) << 32) | int((seconds % 1.0) * (1 << 32))


def build_rtcp_report(
    ssrc: int,
    blocks: list[RtcpReceiverInfo],
    *,
    sent_packets: int,
    sent_octets: int,
    rtp_timestamp: int,
    wallclock: float,
) -> bytes:
    """An SR when we have sent media since the start, else an RR (RFC 3550 section 6.4)."""
    if sent_packets:
        info = RtcpSenderInfo(
            ntp_timestamp=ntp_timestamp(wallclock),
            rtp_timestamp=rtp_timestamp & 0xFFFFFFFF,
            packet_count=sent_packets & 0xFFFFFFFF,
            octet_count=sent_octets & 0xFFFFFFFF,
        )
        return bytes(RtcpSrPacket(ssrc=ssrc, sender_info=info, reports=blocks))
    return bytes(RtcpRrPacket(ssrc=ssrc, reports=blocks))


def parse_rtcp(data: bytes) -> list[RtcpSrPacket | RtcpRrPacket]:
    """The SR and RR packets of a compound RTCP packet; other types are skipped."""
    try:
        packets = RtcpPacket.parse(data)
    except ValueError as exc:
        raise RtpError(str(exc)) from exc
    return [p for p in packets if isinstance(p, RtcpSrPacket | RtcpRrPacket)]
