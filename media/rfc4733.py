"""RFC 4733 telephone-events (DTMF over RTP): a receiver that reports each key press once, and a
sender that produces the packet train for one key press.

Theory of operation. An event is identified by its RTP timestamp, its start time (RFC 4733
section 2.5.1.2): every packet of one key press repeats that timestamp while the duration field
grows, and the final packet (E bit) is sent three times. So the receiver reports an onset the
first time it sees a timestamp, an end when it sees the E bit (or when updates stop for
``end_timeout`` seconds, since all three end packets may be lost) and ignores everything else
about that timestamp: repeated end packets, late updates, reordered packets. Timestamps are
extended to 64 bits, so a 32-bit wrap is just another increase. An event longer than the 16-bit
duration field is sent as segments with new timestamps (section 2.5.1.3); a new timestamp that
continues the current, unfinished event of the same digit is taken as such a segment, not as a
new key press. A packet may carry several event blocks (section 2.5.1.5): the timestamp is the
start of the first one and each next block starts where the previous one ended.
Sans-IO: time comes in as ``now``; :meth:`DtmfEventReceiver.next_deadline` says when to poll.
"""

from __future__ import annotations

import enum
import logging
import struct
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

from media.digits import DIGITS, DigitEvent

__all__ = [
    "DtmfEventReceiver",
    "DtmfEventSender",
    "EventBlock",
    "EventPacket",
    "ProtocolError",
    "build_payload",
    "parse_payload",
]

log = logging.getLogger(__name__)

MAX_DURATION = 0xFFFF
MAX_DTMF_EVENT = 15  # RFC 4733 section 3.2: events 0-15 are the DTMF keys
_BLOCK = struct.Struct("!BBH")
_WRAP = 1 << 32
# A new segment must start where the previous one's duration ends; allow one packet of slack
# for senders that round the last duration down.
_SEGMENT_SLACK = 160


class ProtocolError(Exception):
    """An input the receiver's state machine has no transition for."""


@dataclass(frozen=True, slots=True)
class EventBlock:
    """One 4-byte event block (RFC 4733 section 2.3)."""

    event: int
    end: bool
    volume: int
    duration: int


def parse_payload(payload: bytes) -> list[EventBlock]:
    """Split a telephone-event payload into its blocks; a ragged tail is ignored."""
    blocks = []
    for off in range(0, len(payload) - len(payload) % 4, 4):
        event, flags, duration = _BLOCK.unpack_from(payload, off)
        blocks.append(EventBlock(event, bool(flags & 0x80), flags & 0x3F, duration))
    return blocks


def build_payload(event: int, end: bool, volume: int, duration: int) -> bytes:
    """One event block; the R bit is always zero (section 2.3.4)."""
    return _BLOCK.pack(event, (0x80 if end else 0) | (volume & 0x3F), duration)


class _State(enum.Enum):
    IDLE = "idle"
    ACTIVE = "active"


class _Input(enum.Enum):
    BEGIN = "begin"  # a block with a timestamp not seen before
    UPDATE = "update"  # a block for the current event (or its next segment)
    END = "end"  # E bit on the current event
    TIMEOUT = "timeout"  # no update for end_timeout seconds


_TRANSITIONS: dict[tuple[_State, _Input], _State] = {
    (_State.IDLE, _Input.BEGIN): _State.ACTIVE,
    (_State.ACTIVE, _Input.UPDATE): _State.ACTIVE,
    (_State.ACTIVE, _Input.END): _State.IDLE,
    (_State.ACTIVE, _Input.TIMEOUT): _State.IDLE,
}


class DtmfEventReceiver:
    """Turns telephone-event payloads of one RTP stream into :class:`DigitEvent` pairs.

    Every key press yields exactly one onset (``ended=False``) and one end (``ended=True``),
    both with ``source="rfc4733"``, ``start_ms`` from the extended RTP timestamp.
    """

    def __init__(self, payload_type: int, clock_rate: int = 8000, end_timeout: float = 0.3) -> None:
        self.payload_type = payload_type
        self.clock_rate = clock_rate
        self.end_timeout = end_timeout
        self.state = _State.IDLE
        self._ext_ts: int | None = None  # last extended timestamp seen (for unwrapping)
        self._event = 0
        self._start = 0  # extended timestamp of the first segment
        self._seg_start = 0  # extended timestamp of the current segment
        self._seg_duration = 0
        self._last_update = 0.0
        self._finished: deque[int] = deque(maxlen=32)  # segment starts of ended events
        self._newest_finished: int | None = None

    def _set_state(self, inp: _Input) -> None:
        new = _TRANSITIONS.get((self.state, inp))
        if new is None:
            raise ProtocolError(f"no transition from {self.state.name} on {inp.name}")
        if new is not self.state:
            log.debug("rfc4733 pt %d: %s -> %s", self.payload_type, self.state.name, new.name)
        self.state = new

    def _extend(self, ts: int) -> int:
        if self._ext_ts is None:
            self._ext_ts = ts + _WRAP  # headroom so small backward steps stay positive
        else:
            diff = (ts - self._ext_ts + (_WRAP >> 1)) % _WRAP - (_WRAP >> 1)
            self._ext_ts += diff
        return self._ext_ts

    def _ms(self, samples: int) -> int:
        return samples * 1000 // self.clock_rate

    def next_deadline(self) -> float | None:
        """When :meth:`poll` must run next to end an event whose end packets were lost."""
        if self.state is _State.ACTIVE:
            return self._last_update + self.end_timeout
        return None

    def receive(
        self, payload: bytes, timestamp: int, seq: int, marker: bool, now: float
    ) -> list[DigitEvent]:
        """Process one RTP packet of the telephone-event payload type.

        ``seq`` and ``marker`` are not needed for correctness (timestamps identify events and
        the marker packet may be lost); they are accepted so callers pass the whole header.
        """
        out = self.poll(now)
        start = self._extend(timestamp & (_WRAP - 1))
        for block in parse_payload(payload):
            out.extend(self._block(start, block, now))
            # Section 2.5.1.5: the next packed event starts where this one ended.
            start += block.duration
        return out

    def poll(self, now: float) -> list[DigitEvent]:
        """End the current event if its updates stopped ``end_timeout`` seconds ago."""
        if self.state is _State.ACTIVE and now - self._last_update >= self.end_timeout:
            log.debug("rfc4733: event %d timed out without an end packet", self._event)
            return [self._finish(_Input.TIMEOUT)]
        return []

    def _block(self, start: int, block: EventBlock, now: float) -> list[DigitEvent]:
        if block.event > MAX_DTMF_EVENT:
            log.debug("rfc4733: ignoring non-DTMF event %d", block.event)
            return []
        if block.end and block.duration == 0:
            log.debug("rfc4733: ignoring end packet with duration 0")
            return []
        if start in self._finished or (
            self._newest_finished is not None and start < self._newest_finished
        ):
            return []  # repeated end packet or a late packet of a finished event
        out: list[DigitEvent] = []
        if self.state is _State.ACTIVE:
            if start < self._seg_start:
                return []  # reordered packet from an earlier segment
            if start == self._seg_start:
                if block.event != self._event:
                    log.debug("rfc4733: two events share timestamp %d; ignored", start)
                    return []
                return self._update(block, now)
            # The sender starts a segment once the duration field is about to saturate; its
            # last update may have been lost, so a long-running segment may end at 0xFFFF.
            seg_end = MAX_DURATION if self._seg_duration > MAX_DURATION // 2 else self._seg_duration
            if block.event == self._event and start - self._seg_start <= seg_end + _SEGMENT_SLACK:
                # Section 2.5.1.3: a long event continues in a new segment.
                self._seg_start = start
                self._seg_duration = 0
                return self._update(block, now)
            # A new timestamp while an event is open: the old one's end packets were lost.
            out.append(self._finish(_Input.TIMEOUT))
        self._set_state(_Input.BEGIN)
        self._event = block.event
        self._start = self._seg_start = start
        self._seg_duration = block.duration
        self._last_update = now
        digit = DIGITS[block.event]
        out.append(DigitEvent(digit, self._ms(start), 0, "rfc4733", False))
        if block.end:
            out.append(self._finish(_Input.END))
        return out

    def _update(self, block: EventBlock, now: float) -> list[DigitEvent]:
        self._set_state(_Input.UPDATE)
        self._last_update = now
        # Durations only grow within a segment; a smaller one is a reordered packet.
        self._seg_duration = max(self._seg_duration, block.duration)
        if block.end:
            return [self._finish(_Input.END)]
        return []

    def _finish(self, inp: _Input) -> DigitEvent:
        self._set_state(inp)
        self._finished.append(self._seg_start)
        self._newest_finished = self._seg_start
        total = self._seg_start - self._start + self._seg_duration
        return DigitEvent(
            DIGITS[self._event], self._ms(self._start), self._ms(total), "rfc4733", True
        )


class EventPacket(NamedTuple):
    """One telephone-event RTP packet to send ``send_offset_ms`` after the key press."""

    payload: bytes
    marker: bool
    timestamp: int
    send_offset_ms: int


class DtmfEventSender:
    """Builds the RFC 4733 packet train for one key press (section 2.5.1).

    The first packet has the marker bit; updates follow every ``interval_ms`` with the duration
    so far; the final packet has the E bit and is sent ``end_repeats`` times, ``ptime_ms``
    apart, with the same timestamp and duration. Events longer than 0xFFFF samples are split
    into segments (section 2.5.1.3). The RTP layer adds the header (SSRC, sequence numbers).
    """

    def __init__(
        self,
        payload_type: int,
        clock_rate: int = 8000,
        volume: int = 10,
        interval_ms: int = 50,
        ptime_ms: int = 20,
        end_repeats: int = 3,
    ) -> None:
        self.payload_type = payload_type
        self.clock_rate = clock_rate
        self.volume = volume
        self.interval_ms = interval_ms
        self.ptime_ms = ptime_ms
        self.end_repeats = end_repeats

    def start(self, digit: str, timestamp: int, duration_ms: int = 100) -> list[EventPacket]:
        """All packets for ``digit`` pressed at RTP time ``timestamp`` for ``duration_ms``."""
        event = DIGITS.index(digit.upper())
        total = duration_ms * self.clock_rate // 1000
        if total <= 0:
            raise ValueError("duration must be positive")
        first = min(self.ptime_ms * self.clock_rate // 1000, total)
        packets = [self._packet(event, False, timestamp, first, 0, marker=True)]
        t_ms = self.interval_ms
        segment = 0
        while t_ms <= duration_ms:
            elapsed = t_ms * self.clock_rate // 1000
            # Close every segment that filled up with a saturated duration (section 2.5.1.3).
            while (elapsed - 1) // MAX_DURATION > segment:
                segment += 1
                packets.append(self._packet(event, False, timestamp, segment * MAX_DURATION, t_ms))
            if t_ms < duration_ms:
                packets.append(self._packet(event, False, timestamp, elapsed, t_ms))
            t_ms += self.interval_ms
        for i in range(self.end_repeats):
            packets.append(
                self._packet(event, True, timestamp, total, duration_ms + i * self.ptime_ms)
            )
        return packets

    def _packet(
        self, event: int, end: bool, base: int, elapsed: int, offset_ms: int, marker: bool = False
    ) -> EventPacket:
        # Segment k starts at base + k * 0xFFFF and carries at most 0xFFFF of duration.
        segment = max(0, (elapsed - 1) // MAX_DURATION)
        seg_start = (base + segment * MAX_DURATION) % _WRAP
        payload = build_payload(event, end, self.volume, elapsed - segment * MAX_DURATION)
        return EventPacket(payload, marker, seg_start, offset_ms)
