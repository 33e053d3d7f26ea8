"""One RTP leg, sans-IO: symmetric RTP with bounded latching, reception stats, our send stream.

Latching (symmetric RTP) is the one state machine in this file; `LatchState` and `TRANSITIONS`
own every rule, and `_set_state` logs each change. A leg starts IDLE (no remote known: every
packet is dropped). `set_remote()` from SDP opens a LEARNING window of `latch_window` seconds:
the first packet from the signalled host (any host when `nat=True`) latches its exact source
address, and from then on only that address is accepted and used as the destination. When the
window closes without a packet the leg is FIXED to the signalled address. A re-INVITE that
changes the remote opens a new window. Packets from any other source are dropped and counted:
an attacker who sprays RTP at our ports (RTP bleed, CVE-2017-14099, CVE-2017-14114) can
neither steal the stream nor inject into it once it is latched.

The send side keeps one continuous stream per leg (our SSRC, sequence, timestamp) whether the
payload was generated here (prompt, tone, mix) or relayed from the bridged peer. Relayed
packets keep the peer's sequence and timestamp spacing through per-source offsets, so gaps
and reordering stay visible downstream; the offsets are re-based whenever the origin of our
stream changes (prompt -> relay, new peer SSRC), with the timestamp advanced by the wall time
elapsed and the marker bit set, as at the start of a talkspurt (RFC 3551 section 4.1).
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from aiortc.rtp import RtcpSrPacket

from media.rtp import (
    BYTE0,
    HEADER,
    MARKER,
    ReceptionStats,
    RtpError,
    build_rtcp_report,
    ntp_timestamp,
    parse_rtcp,
)

log = logging.getLogger(__name__)

Addr = tuple[str, int]

# Payload types (RFC 3551 table 4).
PT_PCMU = 0
PT_PCMA = 8
CODEC_PT = {"PCMU": PT_PCMU, "PCMA": PT_PCMA}
CLOCK_RATE = 8000
SAMPLES_PER_FRAME = 160
FRAME_TIME = 0.020
# Seconds after set_remote() during which the source may be learned.
LATCH_WINDOW = 3.0


class ProtocolError(Exception):
    """An event with no entry in a state machine's transition table."""


class LatchState(enum.Enum):
    """Where the leg sends and whom it accepts packets from."""

    IDLE = "idle"
    LEARNING = "learning"
    LATCHED = "latched"
    FIXED = "fixed"


class LatchEvent(enum.Enum):
    """Inputs of the latching state machine."""

    REMOTE_SET = "remote_set"
    SOURCE_LEARNED = "source_learned"
    WINDOW_EXPIRED = "window_expired"


TRANSITIONS: dict[tuple[LatchState, LatchEvent], LatchState] = {
    (LatchState.IDLE, LatchEvent.REMOTE_SET): LatchState.LEARNING,
    (LatchState.LEARNING, LatchEvent.REMOTE_SET): LatchState.LEARNING,
    (LatchState.LEARNING, LatchEvent.SOURCE_LEARNED): LatchState.LATCHED,
    (LatchState.LEARNING, LatchEvent.WINDOW_EXPIRED): LatchState.FIXED,
    (LatchState.LATCHED, LatchEvent.REMOTE_SET): LatchState.LEARNING,
    (LatchState.FIXED, LatchEvent.REMOTE_SET): LatchState.LEARNING,
}


@dataclass(frozen=True, slots=True)
class SessionStats:
    """A snapshot of one leg's counters."""

    packets_received: int
    packets_sent: int
    octets_sent: int
    rejected_source: int
    malformed: int
    ssrc_changes: int
    lost: int
    jitter_ms: float
    remote_fraction_lost: int
    remote_jitter_ms: float
    rtt_ms: float | None


class RtpSession:
    """One leg's RTP state: remote address and latching, codec and payload types, streams."""

    __slots__ = (
        "_deadline",
        "codec",
        "dtmf_pt",
        "last_rx",
        "latch_window",
        "latched",
        "leg_id",
        "local_port",
        "malformed",
        "nat",
        "octets_sent",
        "out_seq",
        "out_time",
        "out_ts",
        "packets_received",
        "packets_sent",
        "pt",
        "rejected_source",
        "relay_seq_off",
        "relay_src",
        "relay_ts_off",
        "remote",
        "remote_fraction_lost",
        "remote_jitter",
        "rtt",
        "rx",
        "sr_sent",
        "ssrc",
        "ssrc_changes",
        "state",
    )

    def __init__(
        self,
        leg_id: str,
        local_port: int,
        *,
        ssrc: int,
        initial_seq: int = 0,
        initial_ts: int = 0,
        nat: bool = False,
        latch_window: float = LATCH_WINDOW,
    ) -> None:
        self.leg_id = leg_id
        self.local_port = local_port
        self.nat = nat
        self.latch_window = latch_window
        self.state = LatchState.IDLE
        self.remote: Addr | None = None
        self.latched: Addr | None = None
        self._deadline = 0.0
        self.codec = "PCMU"
        self.pt = PT_PCMU
        self.dtmf_pt: int | None = None
        self.rx: ReceptionStats | None = None
        self.last_rx: float | None = None
        self.packets_received = 0
        self.rejected_source = 0
        self.malformed = 0
        self.ssrc_changes = 0
        self.ssrc = ssrc
        self.out_seq = (initial_seq - 1) & 0xFFFF
        self.out_ts = initial_ts & 0xFFFFFFFF
        self.out_time: float | None = None
        self.packets_sent = 0
        self.octets_sent = 0
        self.relay_src: int | None = None
        self.relay_seq_off = 0
        self.relay_ts_off = 0
        self.remote_fraction_lost = 0
        self.remote_jitter = 0
        self.rtt: float | None = None
        self.sr_sent: dict[int, float] = {}

    # -- latching state machine -------------------------------------------------------------

    def _set_state(self, event: LatchEvent) -> None:
        new = TRANSITIONS.get((self.state, event))
        if new is None:
            raise ProtocolError(f"leg {self.leg_id}: {event.value} in state {self.state.value}")
        log.debug("leg %s latch %s -> %s", self.leg_id, self.state.value, new.value)
        self.state = new

    def set_remote(
        self, host: str, port: int, now: float, codec: str = "PCMU", dtmf_pt: int | None = None
    ) -> None:
        """Apply the remote SDP: address, codec ("PCMU"/"PCMA") and telephone-event PT.

        An unchanged address (a re-INVITE that only changes codecs) keeps the latch.
        """
        if codec not in CODEC_PT:
            raise ValueError(f"unsupported codec {codec!r}")
        self.codec = codec
        self.pt = CODEC_PT[codec]
        self.dtmf_pt = dtmf_pt
        if self.remote == (host, port) and self.state is not LatchState.IDLE:
            return
        self.remote = (host, port)
        self.latched = None
        self._deadline = now + self.latch_window
        self._set_state(LatchEvent.REMOTE_SET)

    def accept(self, addr: Addr, now: float) -> bool:
        """Whether a packet from `addr` belongs to this leg (latching it if the window allows)."""
        state = self.state
        if state is LatchState.LATCHED or state is LatchState.FIXED:
            lat = self.latched
            if lat is not None and addr[0] == lat[0] and addr[1] == lat[1]:
                return True
        elif state is LatchState.LEARNING:
            remote = self.remote
            if now > self._deadline:
                self.latched = remote
                self._set_state(LatchEvent.WINDOW_EXPIRED)
                return self.accept(addr, now)
            if remote is not None and (self.nat or addr[0] == remote[0]):
                self.latched = (addr[0], addr[1])
                self._set_state(LatchEvent.SOURCE_LEARNED)
                return True
        self.rejected_source += 1
        return False

    def poll(self, now: float) -> None:
        """Close the learning window when its deadline has passed."""
        if self.state is LatchState.LEARNING and now > self._deadline:
            self.latched = self.remote
            self._set_state(LatchEvent.WINDOW_EXPIRED)

    @property
    def destination(self) -> Addr | None:
        """Where to send: the latched source if any, else the signalled address."""
        return self.latched or self.remote

    # -- receive ----------------------------------------------------------------------------

    def note_received(self, ssrc: int, seq: int, ts: int, now: float, size: int) -> bool:
        """Update reception statistics for an accepted packet; True when the SSRC changed."""
        self.packets_received += 1
        self.last_rx = now
        rx = self.rx
        changed = False
        if rx is None or rx.ssrc != ssrc:
            # A new source restarts its statistics (RFC 3550 section 8.2).
            if rx is not None:
                self.ssrc_changes += 1
                changed = True
            rx = self.rx = ReceptionStats(ssrc, seq)
        rx.update(seq, ts, now, size)
        return changed

    # -- send -------------------------------------------------------------------------------

    def _advance(self, now: float) -> int:
        """Our next audio timestamp: whole frames of wall time since the last audio we sent.

        Rounding to frames absorbs tick jitter (a 23 ms tick is still one frame) while a pause
        (no audio, events only, a change of origin) advances the clock by the time it took.
        """
        if not self.packets_sent:
            return self.out_ts
        if self.out_time is None:
            return (self.out_ts + SAMPLES_PER_FRAME) & 0xFFFFFFFF
        frames = max(1, round((now - self.out_time) / FRAME_TIME))
        return (self.out_ts + frames * SAMPLES_PER_FRAME) & 0xFFFFFFFF

    def generated(
        self,
        payload: bytes,
        now: float,
        pt: int | None = None,
        marker: bool = False,
        timestamp: int | None = None,
        samples: int = SAMPLES_PER_FRAME,
    ) -> bytes:
        """Build our next packet for a payload produced here (prompt, tone, mix, DTMF event).

        `samples=0` marks a packet that does not advance the audio clock (an RFC 4733 event,
        whose `timestamp` is the event start, RFC 4733 section 2.3.2).
        """
        if self.relay_src is not None:
            self.relay_src = None
            marker = True
        seq = (self.out_seq + 1) & 0xFFFF
        self.out_seq = seq
        if not self.packets_sent:
            marker = True
        if samples:
            ts = self._advance(now)
            if self.out_time is not None and now - self.out_time > 1.5 * FRAME_TIME:
                marker = True
            self.out_ts = ts
            self.out_time = now
        self.packets_sent += 1
        self.octets_sent += len(payload)
        b1 = (self.pt if pt is None else pt) | (MARKER if marker else 0)
        sent_ts = self.out_ts if timestamp is None else timestamp
        return HEADER.pack(BYTE0, b1, seq, sent_ts, self.ssrc) + payload

    def peek_timestamp(self, now: float) -> int:
        """The timestamp the next audio frame would carry (an RFC 4733 event's start)."""
        return self._advance(now)

    def relayed(
        self, pt: int, marker: bool, seq: int, ts: int, src_ssrc: int, payload: bytes, now: float
    ) -> bytes:
        """Rewrite a packet from the bridged peer into our stream (SSRC, seq, ts, PT)."""
        if src_ssrc != self.relay_src:
            new_ts = self._advance(now)
            new_seq = (self.out_seq + 1) & 0xFFFF
            self.relay_seq_off = new_seq - seq
            self.relay_ts_off = new_ts - ts
            self.relay_src = src_ssrc
            marker = True
        out_seq = (seq + self.relay_seq_off) & 0xFFFF
        out_ts = (ts + self.relay_ts_off) & 0xFFFFFFFF
        if out_seq != self.out_seq and ((out_seq - self.out_seq) & 0xFFFF) < 0x8000:
            self.out_seq = out_seq
            self.out_ts = out_ts
            self.out_time = now
        self.packets_sent += 1
        self.octets_sent += len(payload)
        return (
            HEADER.pack(BYTE0, pt | (MARKER if marker else 0), out_seq, out_ts, self.ssrc) + payload
        )

    # -- RTCP -------------------------------------------------------------------------------

    def rtcp_report(self, now: float, wallclock: float) -> bytes:
        """Our SR/RR with a report block for the current source (RFC 3550 section 6.4)."""
        blocks = [self.rx.report_block(now)] if self.rx and not self.rx.probation else []
        if self.packets_sent:
            mid = (ntp_timestamp(wallclock) >> 16) & 0xFFFFFFFF
            self.sr_sent[mid] = now
            while len(self.sr_sent) > 4:
                del self.sr_sent[next(iter(self.sr_sent))]
        return build_rtcp_report(
            self.ssrc,
            blocks,
            sent_packets=self.packets_sent,
            sent_octets=self.octets_sent,
            rtp_timestamp=self.out_ts,
            wallclock=wallclock,
        )

    def receive_rtcp(self, data: bytes, now: float) -> None:
        """Take the peer's SR/RR: remember its SR time (for our LSR/DLSR) and its view of us."""
        try:
            packets = parse_rtcp(data)
        except RtpError:
            self.malformed += 1
            return
        for packet in packets:
            if isinstance(packet, RtcpSrPacket) and self.rx and packet.ssrc == self.rx.ssrc:
                ntp = packet.sender_info.ntp_timestamp
                self.rx.last_sr_ntp_mid = (ntp >> 16) & 0xFFFFFFFF
                self.rx.last_sr_arrival = now
            for block in packet.reports:
                if block.ssrc != self.ssrc:
                    continue
                self.remote_fraction_lost = block.fraction_lost
                self.remote_jitter = block.jitter
                if block.lsr and self.out_time is not None:
                    self.rtt = self._rtt(block.lsr, block.dlsr, now)

    def _rtt(self, lsr: int, dlsr: int, now: float) -> float | None:
        # RFC 3550 section 6.4.1: RTT = A - LSR - DLSR. We look LSR up among the SRs we sent so
        # the arithmetic stays on the monotonic `now` clock.
        sent = self.sr_sent.get(lsr)
        if sent is None:
            return None
        return max(0.0, now - sent - dlsr / 65536)

    def stats(self) -> SessionStats:
        """A snapshot of the counters (for the status API and tests)."""
        rx = self.rx
        return SessionStats(
            packets_received=self.packets_received,
            packets_sent=self.packets_sent,
            octets_sent=self.octets_sent,
            rejected_source=self.rejected_source,
            malformed=self.malformed,
            ssrc_changes=self.ssrc_changes,
            lost=rx.lost if rx and not rx.probation else 0,
            jitter_ms=rx.jitter / 8.0 if rx else 0.0,
            remote_fraction_lost=self.remote_fraction_lost,
            remote_jitter_ms=self.remote_jitter / 8.0,
            rtt_ms=None if self.rtt is None else self.rtt * 1000,
        )
