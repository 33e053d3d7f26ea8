"""The media engine: every leg's RTP, the relay fast path and one 20 ms DSP clock. Sans-IO.

Commands come in as method calls (create_leg, set_remote, bridge, play, record, send_dtmf ...),
packets through `receive_packet(leg_id, data, addr, now)` (or the shell's `receive_on` /
`receive_into`), and the clock through `tick(now)` every 20 ms; datagrams go out as return
values and everything the service must know as events from `next_event()`. No sockets, no
time: the asyncio shell is media/aio.py.

Fast path. A packet for a bridged leg is checked (latched source), counted, and rewritten into
the peer's send stream (SSRC, sequence, timestamp, payload type; PCMU<->PCMA by a 256-byte
`bytes.translate` table) and returned at once: no decode, no waiting for the tick.
`receive_into` is the same for a packet read into the shell's buffer from a socket that only
its latched source can reach: the usual packet costs a few attribute updates (RFC 3550
statistics inlined) and one header pack in place; anything unusual goes through `receive_on`.
A bridge can be one-way (`bridge(a, b, early_media=True)`: the destination's ringback reaches
the customer, nothing reaches the destination but silence), and bridging the pair again makes
it two-way in place.

DSP path. A leg whose received audio is heard or recorded (recording, mixing into another
leg, conference) also queues the payload in its jitter buffer; a leg whose audio only feeds the
detectors (in-band DTMF, fax) copies the datagram into its slots of one shared `FrameRing`,
which the tick empties for all such legs at once with no Python loop per leg; a leg whose
sent audio is produced here (prompt or tone, mix over a bridge, conference, DTMF we send) is
generated on the tick. Each tick pops one frame from every receiving leg, decodes all of them
with one table lookup into an (n, 160) float32 batch, runs the DTMF and fax detectors on the
whole batch, feeds recorders, sums the outputs in int32, saturates, encodes by table and
packetises. Which legs are in which batch is recomputed only when a command changes it (the
ring's queued frames are carried over), so a tick costs a few dictionary operations per
jitter-buffered leg. A bridged leg with in-band detection keeps the fast path: its payloads
are relayed on arrival and copied into the detector batch.

DTMF clamp (`set_dtmf_clamp`). A clamped leg's packets are not relayed on arrival but queued
in its `DtmfClamp`; the tick analyses them in the same detector batch as everyone else, in
arrival order, and relays each frame once the next one has been analysed, with the frames that
hold DTMF tone energy (and the one before, and a short hang-over) replaced by silence: the
peer never hears the customer's keys, which are still reported as digits.
"""

from __future__ import annotations

import collections
import logging
import random
import struct
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from media.digits import DigitEvent, DigitStream
from media.g711 import ALAW_DECODE, ALAW_ENCODE, ULAW_DECODE, ULAW_ENCODE
from media.jitter import FrameRing, JitterBuffer
from media.mixer import Bridge, Conference, saturate
from media.player import FRAME, PlayItem, PromptPlayer, dtmf_frames
from media.recorder import Recorder
from media.rtp import HEADER, MAX_DROPOUT, TS_MOD, RtpError, parse_header
from media.session import Addr, RtpSession

__all__ = [
    "DigitReceived",
    "Event",
    "FaxDetected",
    "Leg",
    "MediaEngine",
    "MediaLost",
    "PlayFinished",
    "RecordFinished",
    "RtpTimeout",
]

log = logging.getLogger(__name__)

TICK = 0.020
# Legs are checked for dead peers and latch windows every this many ticks (1 s).
HOUSEKEEPING_TICKS = 50
# RFC 4733 receivers end an event whose end packets were lost by timeout: check every 100 ms.
RECEIVER_POLL_TICKS = 5
RTP_TIMEOUT = 30.0
DTMF_VOLUME = 10  # RFC 4733 section 2.3.4: -10 dBm0
DTMF_END_REPEATS = 3  # RFC 4733 section 2.5.1.4: the final packet is sent three times
RFC4733 = struct.Struct("!BBH")
# The DTMF clamp (set_dtmf_clamp): frames after the last one with tone energy that are still
# silenced (a tone's tail can end mid-frame in a window the detector does not call valid).
CLAMP_HANG_FRAMES = 2
# A held frame with no successor after this many ticks is released all the same.
CLAMP_IDLE_TICKS = 2
SILENCE = {"PCMU": b"\xff" * FRAME, "PCMA": b"\xd5" * FRAME}
_LAW_OFFSET = {"PCMU": 0, "PCMA": 256}
_DECODE512 = np.concatenate([ULAW_DECODE, ALAW_DECODE]).astype(np.int16)
# The tick decodes straight to float32 (G.711 samples are exact in it): the detectors work in
# float32 and mixing in int32, so an int16 batch would only cost conversions.
_DECODE512_F32 = _DECODE512.astype(np.float32)
_Batch = npt.NDArray[np.float32]


def _decode_batch(raw: npt.NDArray[np.uint8], law: int | None, offsets: Any = None) -> _Batch:
    """G.711 bytes (n, 160) to float32 samples: one law (a table offset), or per row."""
    # `take` is several times faster than indexing the table with the byte array, and the
    # 1 kB table stays in cache (a 512 kB table of byte pairs measured faster warm, slower on
    # the tick, where the relay has evicted it).
    if law is not None:
        decoded: _Batch = _DECODE512_F32[law : law + 256].take(raw)
        return decoded
    decoded = _DECODE512_F32.take(raw.astype(np.uint16) + offsets)
    return decoded


_U2A = bytes(ALAW_ENCODE[ULAW_DECODE.view(np.uint16)].tobytes())
_A2U = bytes(ULAW_ENCODE[ALAW_DECODE.view(np.uint16)].tobytes())
_DTMF_CODES = {d: i for i, d in enumerate("0123456789*#ABCD")}
_RING_SLOT = FrameRing.SLOT
_RING_MASK = FrameRing.DEPTH - 1
_Out = list[tuple[str, bytes, Addr]]
_unpack_header = HEADER.unpack_from
_pack_header = HEADER.pack_into
_HALF_TS = TS_MOD // 2


# -- events ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DigitReceived:
    """A key press on a leg (reported once at onset, however many paths carried it)."""

    leg_id: str
    digit: str
    source: str  # "rfc4733" or "inband"
    start_ms: int


@dataclass(frozen=True, slots=True)
class PlayFinished:
    """A play() sequence ended; `interrupted` when stopped by barge-in or stop_play()."""

    leg_id: str
    interrupted: bool


@dataclass(frozen=True, slots=True)
class RecordFinished:
    """A recording was written."""

    leg_id: str
    path: str
    duration: float
    reason: str


@dataclass(frozen=True, slots=True)
class FaxDetected:
    """Fax/modem tone on a leg; `clear_channel` is False when the bridge could not switch
    (the two legs use different G.711 laws, so bit-exact passthrough is impossible)."""

    leg_id: str
    kind: str
    clear_channel: bool


@dataclass(frozen=True, slots=True)
class RtpTimeout:
    """No RTP from a leg's peer for `silent_s` seconds: the peer is probably dead."""

    leg_id: str
    silent_s: float


@dataclass(frozen=True, slots=True)
class MediaLost:
    """The leg's media is gone with the process that carried it (a media worker died): never
    emitted by the engine itself, but by the shell that lost the leg (``reason`` says how)."""

    leg_id: str
    reason: str


Event = DigitReceived | PlayFinished | RecordFinished | FaxDetected | RtpTimeout | MediaLost


# -- detector interfaces (media/dtmf.py, media/faxdetect.py, media/rfc4733.py) ------------------


class BatchDetector(Protocol):
    """A detector that analyses one frame per leg for many legs at once."""

    def add_leg(self, leg_id: Hashable) -> int: ...

    def remove_leg(self, leg_id: Hashable) -> None: ...

    def process(
        self, slots: npt.NDArray[np.intp], frames: npt.NDArray[Any], sample_time: int
    ) -> list[tuple[Hashable, Any]]:
        """`frames` (n, 160): G.711 samples decoded to float32 (exact integers)."""
        ...


class EventReceiver(Protocol):
    """An RFC 4733 telephone-event receiver for one leg."""

    def receive(
        self, payload: bytes, timestamp: int, seq: int, marker: bool, now: float
    ) -> list[DigitEvent]: ...

    def poll(self, now: float) -> list[DigitEvent]: ...


def _default_dtmf(max_legs: int) -> BatchDetector:
    from media.dtmf import DtmfDetector

    return DtmfDetector(max_legs)


def _default_fax(max_legs: int) -> BatchDetector | None:
    try:
        from media.faxdetect import FaxDetector  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        log.warning("media.faxdetect unavailable: fax/modem detection disabled")
        return None
    detector: BatchDetector = FaxDetector(max_legs)
    return detector


def _default_receiver(pt: int) -> EventReceiver:
    from media.rfc4733 import DtmfEventReceiver  # type: ignore[import-not-found,unused-ignore]

    receiver: EventReceiver = DtmfEventReceiver(pt)
    return receiver


# -- legs --------------------------------------------------------------------------------------

# A frame queued in a DTMF clamp's delay line: (sequence, timestamp, SSRC, marker, payload).
_Queued = tuple[int, int, int, bool, bytes]


@dataclass(eq=False, slots=True)
class DtmfClamp:
    """The delay line of a leg whose relayed audio is cleared of in-band DTMF.

    Frames received since the last tick wait in `fresh`; the tick analyses them (in arrival
    order, with the leg's DTMF detector) and releases each frame once the next one has been
    analysed, so a tone found in frame n also silences frame n - 1 (where it may have begun
    too briefly for the detector to see it). One frame is always `held` back. The tick
    (`MediaEngine._release_queued`) runs the rule: a frame with tone energy is silenced with
    the held one before it and sets `hang`; a frame after it is silenced while `hang` lasts.
    """

    fresh: collections.deque[_Queued] = field(default_factory=collections.deque)
    held: _Queued | None = None
    held_muted: bool = False
    hang: int = 0  # frames still to silence after the last one with tone energy
    idle: int = 0  # ticks the held frame has waited with no frame after it
    closing: bool = False  # turned off: drain the queue on the next tick, then drop
    frames: int = 0
    muted: int = 0


@dataclass(eq=False, slots=True)
class Leg:
    """One leg's media state inside the engine (read-only for callers: use the engine's API)."""

    leg_id: str
    session: RtpSession
    created: float
    peer: Leg | None = None
    bridge: Bridge | None = None
    conference: Conference | None = None
    transcode: bytes | None = None
    jb: JitterBuffer | None = None
    ring: memoryview | None = None  # this leg's slots in the engine's FrameRing
    ring_row: int = -1
    inband: bool = False
    fax_detect: bool = False
    clear_channel: bool = False
    player: PromptPlayer | None = None
    mix_peer: bool = True
    recorder: Recorder | None = None
    digits: DigitStream = field(default_factory=DigitStream)
    receiver: EventReceiver | None = None
    receiver_pt: int | None = None
    #: Relay this leg's RFC 4733 events to its bridge peer. Off when the application handles
    #: the digits itself (the callback service holds ``*`` and ``#`` back to see whether they
    #: start a command, then forwards them with ``send_dtmf``).
    relay_events: bool = True
    #: Relay what this leg receives to its bridge peer. False on the customer's side of an
    #: early-media bridge (``bridge(a, b, early_media=True)``): the destination must not hear
    #: the customer before it answers.
    to_peer: bool = True
    #: Set by ``set_dtmf_clamp``: what this leg relays passes a delay line with DTMF silenced.
    clamp: DtmfClamp | None = None
    #: `clamp` while the delay line is in use (bridged, relaying, no prompt on the peer).
    delay: DtmfClamp | None = None
    dtmf_tx: collections.deque[tuple[bytes, bool]] = field(default_factory=collections.deque)
    dtmf_tx_ts: int | None = None
    inband_tx: collections.deque[npt.NDArray[np.int16]] = field(default_factory=collections.deque)
    tx_dsp: bool = False
    timed_out: bool = False
    io: Any = None  # the shell's handle for this leg (its socket); opaque to the engine
    dropped_pt: int = 0

    @property
    def silence(self) -> bytes:
        """One frame of silence in this leg's codec."""
        return SILENCE[self.session.codec]


class MediaEngine:
    """All legs of one process; see the module docstring."""

    def __init__(
        self,
        *,
        max_legs: int = 4096,
        rtp_timeout: float = RTP_TIMEOUT,
        jitter_target: int = 3,
        dtmf_detector: BatchDetector | None = None,
        fax_detector: BatchDetector | None = None,
        receiver_factory: Callable[[int], EventReceiver] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._legs: dict[str, Leg] = {}
        self._events: collections.deque[Event] = collections.deque()
        #: What closed legs counted (see `foreign_dropped` and `malformed`).
        self._closed_foreign = 0
        self._closed_malformed = 0
        self._rng = rng or random.Random()
        self.rtp_timeout = rtp_timeout
        self.jitter_target = jitter_target
        self._dtmf = dtmf_detector if dtmf_detector is not None else _default_dtmf(max_legs)
        self._fax = fax_detector if fax_detector is not None else _default_fax(max_legs)
        self._receiver_factory = receiver_factory or _default_receiver
        self._conferences: dict[str, Conference] = {}
        self._ticks = 0
        self._dirty = True
        self._rx: list[Leg] = []
        self._rx_row: dict[str, int] = {}
        self._rx_offsets = np.zeros((0, 1), dtype=np.uint16)
        self._rx_law: int | None = None  # the table offset when every rx leg uses one law
        self._rx_jb: list[Leg] = []
        self._ring = FrameRing([])
        self._dtmf_rows = np.zeros(0, dtype=np.intp)
        self._dtmf_slots = np.zeros(0, dtype=np.intp)
        self._dtmf_slot_of: dict[str, int] = {}
        self._fax_rows = np.zeros(0, dtype=np.intp)
        self._fax_slots = np.zeros(0, dtype=np.intp)
        self._fax_slot_of: dict[str, int] = {}
        self._tx: list[Leg] = []
        self._idle: list[Leg] = []
        self._delayed: list[Leg] = []
        self._delayed_dtmf: list[int] = []
        self._delayed_dtmf_slots = np.zeros(0, dtype=np.intp)
        self._delayed_fax: list[int] = []
        self._delayed_fax_slots = np.zeros(0, dtype=np.intp)
        self._delayed_laws: list[int] = []
        self._mix_clamps: list[tuple[int, int, Leg]] = []
        #: Called with the leg after ``set_remote`` (the shell re-binds what it filters on).
        self.on_remote_change: Callable[[Leg], None] | None = None

    # -- commands ------------------------------------------------------------------------------

    def create_leg(self, leg_id: str, local_port: int, now: float, *, nat: bool = False) -> Leg:
        """A new leg on `local_port` with a random SSRC, sequence and timestamp (RFC 3550 5.1)."""
        if leg_id in self._legs:
            raise ValueError(f"leg {leg_id!r} exists")
        rng = self._rng
        session = RtpSession(
            leg_id,
            local_port,
            ssrc=rng.getrandbits(32),
            initial_seq=rng.getrandbits(16),
            initial_ts=rng.getrandbits(32),
            nat=nat,
        )
        leg = Leg(leg_id, session, now)
        self._legs[leg_id] = leg
        return leg

    def leg(self, leg_id: str) -> Leg:
        """The leg called `leg_id` (KeyError if unknown)."""
        return self._legs[leg_id]

    def set_remote(
        self,
        leg_id: str,
        host: str,
        port: int,
        codec: str,
        dtmf_pt: int | None,
        now: float,
    ) -> None:
        """Apply the peer's SDP (first answer or re-INVITE): address, codec, telephone-event."""
        leg = self._legs[leg_id]
        leg.session.set_remote(host, port, now, codec=codec, dtmf_pt=dtmf_pt)
        if dtmf_pt is not None and dtmf_pt != leg.receiver_pt:
            leg.receiver = self._receiver_factory(dtmf_pt)
            leg.receiver_pt = dtmf_pt
        elif dtmf_pt is None:
            leg.receiver = None
            leg.receiver_pt = None
        leg.timed_out = False
        leg.created = max(leg.created, now) if leg.session.last_rx is None else leg.created
        self._update_transcode(leg)
        self._dirty = True
        if self.on_remote_change is not None:
            self.on_remote_change(leg)

    def bridge(self, a: str, b: str, *, early_media: bool = False) -> None:
        """Join two legs on the fast path (each is first taken out of any bridge/conference).

        With `early_media=True` the bridge is one-way: what leg `b` receives (the
        destination's ringback or announcements) is relayed to `a`, but nothing `a` receives
        reaches `b`, which gets silence instead; `a`'s audio still feeds its own detectors,
        so its digits are reported. Bridging the same pair again (e.g. once the destination
        answers) switches the direction in place, without re-joining: both send streams keep
        their sequence numbers and timestamps running, and `b`'s stream moves from the
        silence to `a`'s packets as at the start of a talkspurt (marker set).
        """
        la, lb = self._legs[a], self._legs[b]
        if la.peer is lb:
            la.to_peer = not early_media
            lb.to_peer = True
            self._update_delay(la)
            self._update_delay(lb)
            self._dirty = True
            return
        for leg in (la, lb):
            self.unbridge(leg.leg_id)
            self._leave_conference(leg)
        bridge = Bridge(a, b)
        la.peer, lb.peer = lb, la
        la.bridge = lb.bridge = bridge
        la.to_peer = not early_media
        lb.to_peer = True
        self._update_transcode(la)
        self._update_delay(la)
        self._update_delay(lb)
        self._dirty = True

    def unbridge(self, leg_id: str) -> None:
        """Split the bridge `leg_id` is in, if any."""
        leg = self._legs[leg_id]
        peer = leg.peer
        if peer is None:
            return
        for side in (leg, peer):
            side.peer = None
            side.bridge = None
            side.transcode = None
            side.clear_channel = False
            side.to_peer = True
            self._update_delay(side)
        self._dirty = True

    def _update_delay(self, leg: Leg) -> None:
        """Route what `leg` relays through its DTMF clamp's delay line, or not."""
        clamp = leg.clamp
        peer = leg.peer
        on = clamp is not None and peer is not None and leg.to_peer and not peer.tx_dsp
        if on:
            leg.delay = clamp
        elif leg.delay is not None:
            # Frames still queued have nowhere to go (no peer, or the peer hears a prompt).
            leg.delay.fresh.clear()
            leg.delay.held = None
            leg.delay = None
            if clamp is not None and clamp.closing:
                leg.clamp = None

    def join_conference(self, conf_id: str, leg_id: str) -> None:
        """Mix `leg_id` into conference `conf_id` (created on first join); leaves its bridge."""
        leg = self._legs[leg_id]
        self.unbridge(leg_id)
        self._leave_conference(leg)
        conf = self._conferences.setdefault(conf_id, Conference(conf_id))
        conf.members.append(leg_id)
        leg.conference = conf
        self._dirty = True

    def leave_conference(self, leg_id: str) -> None:
        """Take `leg_id` out of its conference (the conference ends with its last member)."""
        self._leave_conference(self._legs[leg_id])

    def _leave_conference(self, leg: Leg) -> None:
        conf = leg.conference
        if conf is None:
            return
        conf.members.remove(leg.leg_id)
        if not conf.members:
            del self._conferences[conf.conf_id]
        leg.conference = None
        self._dirty = True

    def play(
        self,
        leg_id: str,
        items: Sequence[PlayItem],
        *,
        barge_in: bool = True,
        mix: bool = True,
    ) -> None:
        """Play files/arrays/tones to `leg_id`, replacing any current play.

        On a bridged leg `mix=True` lays the prompt over the peer's audio (a warning tone),
        `mix=False` replaces it. Ends with a PlayFinished event.
        """
        leg = self._legs[leg_id]
        if leg.player is not None:
            self._events.append(PlayFinished(leg_id, True))
        leg.player = PromptPlayer(items, barge_in=barge_in)
        leg.mix_peer = mix
        self._dirty = True

    def stop_play(self, leg_id: str) -> None:
        """Stop the current play (PlayFinished with interrupted=True)."""
        leg = self._legs[leg_id]
        if leg.player is not None:
            leg.player = None
            self._events.append(PlayFinished(leg_id, True))
            self._dirty = True

    def record(
        self,
        leg_id: str,
        path: str,
        max_s: float = 60.0,
        stop_on: str = "#",
        silence_s: float | None = 5.0,
    ) -> None:
        """Record what `leg_id` says; ends with a RecordFinished event."""
        leg = self._legs[leg_id]
        if leg.recorder is not None:
            self._finish_recording(leg)
        leg.recorder = Recorder(path, max_s=max_s, stop_on=stop_on, silence_s=silence_s)
        self._dirty = True

    def stop_record(self, leg_id: str) -> None:
        """End the current recording now (RecordFinished follows)."""
        leg = self._legs[leg_id]
        if leg.recorder is not None:
            self._finish_recording(leg)

    def enable_dtmf(self, leg_id: str, inband: bool = True, fax: bool = True) -> None:
        """Turn in-band DTMF detection (and fax/modem tone detection) on or off for a leg.

        RFC 4733 events are always received when the SDP negotiated telephone-event.
        """
        leg = self._legs[leg_id]
        if leg.clear_channel:
            inband = fax = False
        if not inband and leg.clamp is not None:
            self.set_dtmf_clamp(leg_id, False)
        self._set_inband(leg, inband)
        self._set_fax(leg, fax and self._fax is not None)
        self._dirty = True

    def _set_inband(self, leg: Leg, on: bool) -> None:
        if on and not leg.inband:
            self._dtmf_slot_of[leg.leg_id] = self._dtmf.add_leg(leg.leg_id)
        elif not on and leg.inband:
            self._dtmf.remove_leg(leg.leg_id)
            del self._dtmf_slot_of[leg.leg_id]
        leg.inband = on

    def _set_fax(self, leg: Leg, on: bool) -> None:
        fax = self._fax
        if fax is None:
            return
        if on and not leg.fax_detect:
            self._fax_slot_of[leg.leg_id] = fax.add_leg(leg.leg_id)
        elif not on and leg.fax_detect:
            fax.remove_leg(leg.leg_id)
            del self._fax_slot_of[leg.leg_id]
        leg.fax_detect = on

    def set_dtmf_clamp(self, leg_id: str, on: bool) -> None:
        """Keep in-band DTMF typed on `leg_id` from reaching its bridge peer (default off).

        With the clamp on, what the leg relays to its peer passes a one-frame delay line
        (20-40 ms added: a frame leaves on the first tick after the next frame was analysed)
        and every frame in which the in-band detector sees DTMF tone energy (from the first
        valid analysis window, before any digit is confirmed, to the end of the tone and
        ``CLAMP_HANG_FRAMES`` after), and the frame before it, reaches the peer as silence.
        Digits are still reported as DigitReceived, so the application decides what to
        forward (``send_dtmf``). Turning the clamp on turns in-band detection on; turning
        in-band detection off (``enable_dtmf``) or switching to clear channel turns the clamp
        off. With the clamp off, frames still queued are released on the next tick.
        """
        leg = self._legs[leg_id]
        if on:
            if leg.clear_channel:
                return
            if not leg.inband:
                self._set_inband(leg, True)
            if leg.clamp is None:
                leg.clamp = DtmfClamp()
            leg.clamp.closing = False
        elif leg.clamp is not None:
            if leg.delay is None:
                leg.clamp = None
            else:
                leg.clamp.closing = True
        self._update_delay(leg)
        self._dirty = True

    def relay_dtmf_events(self, leg_id: str, on: bool) -> None:
        """Relay (default) or keep the RFC 4733 events a leg receives from its bridge peer.

        Digits are detected and reported either way; with relaying off only the application's
        ``send_dtmf`` reaches the peer.
        """
        self._legs[leg_id].relay_events = on

    def send_dtmf(
        self, leg_id: str, digit: str, duration_ms: int = 100, mode: str = "rfc4733"
    ) -> None:
        """Send a digit to `leg_id`: "rfc4733" events, "inband" tones, or "both".

        "rfc4733" falls back to in-band when the leg negotiated no telephone-event.
        """
        leg = self._legs[leg_id]
        if mode not in ("rfc4733", "inband", "both"):
            raise ValueError(f"unknown DTMF mode {mode!r}")
        if mode == "rfc4733" and leg.session.dtmf_pt is None:
            mode = "inband"
        if mode in ("rfc4733", "both"):
            code = _DTMF_CODES[digit.upper()]
            steps = max(1, round(duration_ms / 20))
            for k in range(1, steps + 1):
                leg.dtmf_tx.append((RFC4733.pack(code, DTMF_VOLUME, k * FRAME), k == 1))
            end = RFC4733.pack(code, 0x80 | DTMF_VOLUME, steps * FRAME)
            leg.dtmf_tx.extend((end, False) for _ in range(DTMF_END_REPEATS))
        if mode in ("inband", "both"):
            leg.inband_tx.extend(dtmf_frames(digit, duration_ms))
        self._dirty = True

    def set_clear_channel(self, leg_id: str) -> bool:
        """Switch the bridge of `leg_id` to clear channel (fax/modem): bit-exact G.711, no
        transcoding, no mixing, no in-band detection. False when the laws differ."""
        leg = self._legs[leg_id]
        legs = [leg] if leg.peer is None else [leg, leg.peer]
        ok = all(x.session.codec == leg.session.codec for x in legs)
        for x in legs:
            x.clear_channel = True
            if x.clamp is not None:
                self.set_dtmf_clamp(x.leg_id, False)
            self._set_inband(x, False)
            self._set_fax(x, False)
            if x.player is not None:
                x.player = None
                self._events.append(PlayFinished(x.leg_id, True))
            x.inband_tx.clear()
        if leg.bridge is not None:
            leg.bridge.clear_channel = ok
        self._dirty = True
        return ok

    def close_leg(self, leg_id: str) -> None:
        """Forget a leg (hang-up): unbridge, stop detectors, write any recording."""
        leg = self._legs[leg_id]
        self.unbridge(leg_id)
        self._leave_conference(leg)
        self._set_inband(leg, False)
        self._set_fax(leg, False)
        if leg.recorder is not None:
            self._finish_recording(leg)
        self._closed_foreign += leg.session.rejected_source
        self._closed_malformed += leg.session.malformed
        del self._legs[leg_id]
        self._dirty = True

    @property
    def foreign_dropped(self) -> int:
        """RTP and RTCP packets dropped since start because they came from anywhere but the
        leg's latched (or signalled) source, closed legs included. Once a leg has latched,
        the poller shell connects its socket to that source and the kernel drops the rest
        before they reach this process: those are not counted here (nor do they cost it)."""
        return self._closed_foreign + sum(
            leg.session.rejected_source for leg in self._legs.values()
        )

    @property
    def malformed(self) -> int:
        """RTP packets dropped since start because they did not parse, closed legs included."""
        return self._closed_malformed + sum(leg.session.malformed for leg in self._legs.values())

    @property
    def pending_events(self) -> bool:
        """True when next_event() has something."""
        return bool(self._events)

    def next_event(self) -> Event | None:
        """The oldest pending event, or None."""
        return self._events.popleft() if self._events else None

    # -- fast path -----------------------------------------------------------------------------

    def receive_packet(
        self, leg_id: str, data: bytes, addr: Addr, now: float
    ) -> list[tuple[bytes, Addr]]:
        """Take one RTP datagram from a leg's socket; returns what to send (relay) at once.

        Relayed datagrams must leave from the bridged peer's socket (symmetric RTP).
        """
        leg = self._legs.get(leg_id)
        if leg is None:
            return []
        out = self.receive_on(leg, data, addr, now)
        return [] if out is None else [out]

    def receive_into(self, leg: Leg, buf: bytearray, n: int, now: float) -> int:
        """The shell's fast path: one datagram in ``buf[:n]`` from the leg's latched source.

        The caller guarantees the source (its socket is connected to ``leg.session.latched``).
        The datagram is handled as by `receive_on`; a datagram to relay is rewritten in place.
        Returns how many bytes of ``buf`` to send from the bridge peer's socket to the peer's
        destination (0: nothing). The common packet (plain header, the current source in
        sequence, the negotiated codec) costs a handful of attribute updates and one header
        pack; everything else goes through `receive_on`.
        """
        if n < 12:
            leg.session.malformed += 1
            return 0
        b0, b1, seq, ts, ssrc = _unpack_header(buf)
        session = leg.session
        rx = session.rx
        if (
            b0 != 0x80
            or rx is None
            or rx.ssrc != ssrc
            or rx.probation
            or (b1 & 0x7F) != session.pt
            or leg.timed_out
            or (n != _RING_SLOT and leg.ring is not None)
        ):
            return self._receive_copy(leg, buf, n, now)
        max_seq = rx.max_seq
        udelta = (seq - max_seq) & 0xFFFF
        if udelta >= MAX_DROPOUT:
            return self._receive_copy(leg, buf, n, now)
        # RFC 3550 A.1 and A.8 for a packet in sequence (ReceptionStats.update, inlined).
        if seq < max_seq:
            rx.cycles += 0x10000
        rx.max_seq = seq
        rx.received += 1
        rx.bytes += n
        transit = now * 8000 - ts
        last = rx.transit
        if last is not None:
            d = abs(transit - last)
            if d > _HALF_TS:
                d = TS_MOD - d
            rx.jitter += (d - rx.jitter) * 0.0625
        rx.transit = transit
        session.packets_received += 1
        session.last_rx = now
        ring = leg.ring
        if ring is not None:
            pos = (seq & _RING_MASK) * _RING_SLOT
            ring[pos : pos + _RING_SLOT] = buf[:_RING_SLOT]
        else:
            jb = leg.jb
            if jb is not None:
                jb.put(seq, bytes(buf[12:n]))
        peer = leg.peer
        if peer is None or peer.tx_dsp or not leg.to_peer:
            return 0
        delay = leg.delay
        if delay is not None:
            delay.fresh.append((seq, ts, ssrc, b1 > 127, bytes(buf[12:n])))
            return 0
        psession = peer.session
        if psession.remote is None:
            return 0
        if ssrc != psession.relay_src or leg.transcode is not None:
            payload = bytes(buf[12:n])
            if leg.transcode is not None:
                payload = payload.translate(leg.transcode)
            packet = psession.relayed(psession.pt, b1 > 127, seq, ts, ssrc, payload, now)
            buf[: len(packet)] = packet
            return len(packet)
        # RtpSession.relayed, inlined for a source it already relays.
        out_seq = (seq + psession.relay_seq_off) & 0xFFFF
        out_ts = (ts + psession.relay_ts_off) & 0xFFFFFFFF
        if 0 < ((out_seq - psession.out_seq) & 0xFFFF) < 0x8000:
            psession.out_seq = out_seq
            psession.out_ts = out_ts
            psession.out_time = now
        psession.packets_sent += 1
        psession.octets_sent += n - 12
        _pack_header(buf, 0, 0x80, psession.pt | (b1 & 0x80), out_seq, out_ts, psession.ssrc)
        return n

    def _receive_copy(self, leg: Leg, buf: bytearray, n: int, now: float) -> int:
        """`receive_into` for the unusual packet: `receive_on` on a copy, result into `buf`."""
        session = leg.session
        source = session.latched or session.remote
        if source is None:
            return 0
        out = self.receive_on(leg, bytes(buf[:n]), source, now)
        if out is None:
            return 0
        packet = out[0]
        buf[: len(packet)] = packet
        return len(packet)

    def receive_on(
        self, leg: Leg, data: bytes, addr: Addr, now: float
    ) -> tuple[bytes, Addr] | None:
        """`receive_packet` for the shell, which holds the Leg: at most one datagram out."""
        session = leg.session
        # The common case (latched, IPv4) is one tuple comparison; accept() does the rest.
        if addr != session.latched and not session.accept(addr, now):
            return None
        size = len(data)
        if size < 12:
            session.malformed += 1
            return None
        b0, b1, seq, ts, ssrc = HEADER.unpack_from(data)
        if b0 == 0x80:
            payload = data[12:]
        else:
            try:
                header = parse_header(data)
            except RtpError:
                session.malformed += 1
                return None
            payload = data[header.payload_offset : header.payload_end]
        rx = session.rx
        if rx is None or rx.ssrc != ssrc:
            if session.note_received(ssrc, seq, ts, now, size):
                if leg.jb is not None:
                    leg.jb.reset()
                if leg.ring is not None:
                    self._ring.reset(leg.ring_row)
        else:
            session.packets_received += 1
            session.last_rx = now
            rx.update(seq, ts, now, size)
        if leg.timed_out:
            leg.timed_out = False
        pt = b1 & 0x7F
        if pt != session.pt:
            if pt == session.dtmf_pt:
                return self._telephone_event(leg, payload, b1, seq, ts, ssrc, now)
            leg.dropped_pt += 1
            return None
        ring = leg.ring
        if ring is not None:
            pos = (seq & _RING_MASK) * _RING_SLOT
            if size == _RING_SLOT and b0 == 0x80:
                ring[pos : pos + _RING_SLOT] = data
            else:
                ring[pos : pos + _RING_SLOT] = data[:4] + bytes(8) + (payload + leg.silence)[:FRAME]
                ring[pos] = 0x80
        else:
            jb = leg.jb
            if jb is not None:
                jb.put(seq, payload)
        peer = leg.peer
        if peer is None or peer.tx_dsp or not leg.to_peer:
            return None
        delay = leg.delay
        if delay is not None:
            delay.fresh.append((seq, ts, ssrc, b1 > 127, payload))
            return None
        psession = peer.session
        dest = psession.latched or psession.remote
        if dest is None:
            return None
        if leg.transcode is not None:
            payload = payload.translate(leg.transcode)
        return psession.relayed(psession.pt, b1 > 127, seq, ts, ssrc, payload, now), dest

    def _telephone_event(
        self, leg: Leg, payload: bytes, b1: int, seq: int, ts: int, ssrc: int, now: float
    ) -> tuple[bytes, Addr] | None:
        marker = b1 > 127
        if leg.receiver is not None:
            for event in leg.receiver.receive(payload, ts, seq, marker, now):
                self._digit(leg, event, now)
        if not leg.relay_events or not leg.to_peer:
            return None
        peer = leg.peer
        if peer is None or peer.tx_dsp:
            return None
        psession = peer.session
        dest = psession.destination
        if dest is None or psession.dtmf_pt is None:
            return None
        return psession.relayed(psession.dtmf_pt, marker, seq, ts, ssrc, payload, now), dest

    def _digit(self, leg: Leg, event: DigitEvent, now: float) -> None:
        for ev in leg.digits.push(event, now):
            if ev.ended:
                continue
            self._events.append(DigitReceived(leg.leg_id, ev.digit, ev.source, ev.start_ms))
            if leg.player is not None and leg.player.on_digit(ev.digit):
                leg.player = None
                self._events.append(PlayFinished(leg.leg_id, True))
                self._dirty = True
            if leg.recorder is not None and leg.recorder.on_digit(ev.digit):
                self._finish_recording(leg)

    def _finish_recording(self, leg: Leg) -> None:
        rec = leg.recorder
        assert rec is not None
        duration = rec.finish()
        reason = rec.reason.value if rec.reason else "stopped"
        self._events.append(RecordFinished(leg.leg_id, rec.path, duration, reason))
        leg.recorder = None
        self._dirty = True

    def _update_transcode(self, leg: Leg) -> None:
        peer = leg.peer
        if peer is None:
            leg.transcode = None
            return
        for src, dst in ((leg, peer), (peer, leg)):
            a, b = src.session.codec, dst.session.codec
            src.transcode = None if a == b else (_U2A if a == "PCMU" else _A2U)

    # -- the 20 ms clock -----------------------------------------------------------------------

    def _rebuild(self) -> None:
        """Recompute which legs are in the receive and send batches (after any command)."""
        for leg in self._legs.values():
            leg.tx_dsp = bool(
                leg.player is not None or leg.conference or leg.dtmf_tx or leg.inband_tx
            )
        rx: list[Leg] = []
        analysed: list[Leg] = []
        delayed: list[Leg] = []
        for leg in self._legs.values():
            if leg.clamp is not None:
                self._update_delay(leg)
                if leg.delay is not None:
                    delayed.append(leg)
            peer = leg.peer
            heard = (
                leg.recorder is not None
                or leg.conference is not None
                or (
                    peer is not None
                    and leg.to_peer
                    and peer.tx_dsp
                    and peer.mix_peer
                    and peer.player is not None
                )
            )
            # Audio that is heard or recorded goes through a jitter buffer with concealment;
            # audio that only feeds the detectors goes through the vectorised FrameRing, or,
            # on a clamped leg that is relaying, is analysed from the clamp's delay line.
            if heard and leg.jb is None:
                leg.jb = JitterBuffer(target=self.jitter_target)
            elif not heard:
                leg.jb = None
            if heard:
                rx.append(leg)
            elif (leg.inband or leg.fax_detect) and leg.delay is None:
                analysed.append(leg)
        self._rx_jb = list(rx)
        self._rebuild_ring(analysed)
        rx.extend(analysed)
        self._rx = rx
        self._rx_row = {leg.leg_id: i for i, leg in enumerate(rx)}
        self._rx_offsets = np.array(
            [[_LAW_OFFSET[leg.session.codec]] for leg in rx], dtype=np.uint16
        ).reshape(-1, 1)
        laws = {int(x) for x in self._rx_offsets.ravel()}
        self._rx_law = laws.pop() if len(laws) == 1 else None
        dtmf = [
            (i, self._dtmf_slot_of[leg.leg_id])
            for i, leg in enumerate(rx)
            if leg.inband and leg.delay is None
        ]
        self._dtmf_rows = np.array([r for r, _ in dtmf], dtype=np.intp)
        self._dtmf_slots = np.array([s for _, s in dtmf], dtype=np.intp)
        # Clamped legs heard through a jitter buffer (the peer plays a prompt over the bridge):
        # their frames with tone energy are left out of the mix (no delay line there).
        self._mix_clamps = [
            (k, int(row), rx[row])
            for k, row in enumerate(self._dtmf_rows)
            if rx[row].clamp is not None
        ]
        fax = [
            (i, self._fax_slot_of[leg.leg_id])
            for i, leg in enumerate(rx)
            if leg.fax_detect and leg.delay is None
        ]
        self._fax_rows = np.array([r for r, _ in fax], dtype=np.intp)
        self._fax_slots = np.array([s for _, s in fax], dtype=np.intp)
        self._delayed = delayed
        # For the usual tick, where every clamped leg got exactly one frame: their detector
        # slots and codec tables, computed once.
        self._delayed_dtmf = [i for i, leg in enumerate(delayed) if leg.inband]
        self._delayed_dtmf_slots = np.array(
            [self._dtmf_slot_of[delayed[i].leg_id] for i in self._delayed_dtmf], dtype=np.intp
        )
        self._delayed_fax = [i for i, leg in enumerate(delayed) if leg.fax_detect]
        self._delayed_fax_slots = np.array(
            [self._fax_slot_of[delayed[i].leg_id] for i in self._delayed_fax], dtype=np.intp
        )
        self._delayed_laws = [_LAW_OFFSET[leg.session.codec] for leg in delayed]
        self._tx = [leg for leg in self._legs.values() if leg.tx_dsp]
        # Legs with nothing to send (between prompts, while the customer dials) still get a
        # silent frame every tick: a peer or a NAT on the way may end a call whose RTP stops,
        # and a phone's jitter buffer expects a steady stream. Bridged legs get their peer's
        # packets instead (unless the peer is the customer of an early-media bridge);
        # clear-channel (fax) legs are left untouched.
        self._idle = [
            leg
            for leg in self._legs.values()
            if not leg.tx_dsp
            and (leg.peer is None or not leg.peer.to_peer)
            and leg.conference is None
            and not leg.clear_channel
            and leg.session.remote is not None
        ]
        self._dirty = False

    def _rebuild_ring(self, legs: list[Leg]) -> None:
        """A new FrameRing for `legs`, keeping what the old one held for legs in both."""
        old = self._ring
        ring = FrameRing([leg.silence[0] for leg in legs])
        rows, old_rows = [], []
        for row, leg in enumerate(legs):
            if leg.ring is not None:
                rows.append(row)
                old_rows.append(leg.ring_row)
        ring.copy_rows(old, rows, old_rows)
        for leg in self._legs.values():
            leg.ring = None
            leg.ring_row = -1
        for row, leg in enumerate(legs):
            leg.ring = ring.row_view(row)
            leg.ring_row = row
        self._ring = ring

    def tick(self, now: float) -> list[tuple[str, bytes, Addr]]:
        """Run one 20 ms DSP step for every leg that needs it; returns datagrams to send."""
        if self._dirty:
            self._rebuild()
        self._ticks += 1
        sample_time = self._ticks * FRAME
        out: list[tuple[str, bytes, Addr]] = []
        pcm = self._receive_batch(sample_time, now, out)
        if self._tx:
            self._send_batch(pcm, now, out)
        for leg in self._idle:
            dest = leg.session.destination
            if dest is not None:
                out.append((leg.leg_id, leg.session.generated(leg.silence, now), dest))
        if self._ticks % RECEIVER_POLL_TICKS == 0:
            for leg in list(self._legs.values()):
                if leg.receiver is not None:
                    for event in leg.receiver.poll(now):
                        self._digit(leg, event, now)
        if self._ticks % HOUSEKEEPING_TICKS == 0:
            self._housekeeping(now)
        return out

    def _receive_batch(
        self, sample_time: int, now: float, out: list[tuple[str, bytes, Addr]]
    ) -> _Batch | None:
        """Decode and analyse this tick's received frames; returns the batch to mix from.

        Frames waiting in DTMF clamps are analysed here too, and released into `out`.
        """
        rx = self._rx
        delayed = self._delayed
        if not rx and not delayed:
            return None
        # Clamped legs: the first frame of each joins this tick's batch (decoded and analysed
        # with the other legs' frames); a leg that got two or more frames since the last tick
        # (arrival jitter) has them analysed in further small passes, so every detector sees
        # each leg's frames once and in order.
        queued = [leg for leg in delayed if leg.delay is not None and leg.delay.fresh]
        raw, gains = self._raw_rx() if rx else (None, None)
        n_rx = len(rx)
        batch = self._decode_with_queued(raw, gains, queued, 0)
        tone = self._detect(batch, n_rx, queued, sample_time, now)
        static_tone = tone[: len(self._dtmf_rows)]
        self._release_queued(queued, tone[len(self._dtmf_rows) :].tolist(), 0, now, out)
        k = 1
        queued = [leg for leg in queued if len(leg.delay.fresh) > k]  # type: ignore[union-attr]
        while queued:
            more = self._decode_with_queued(None, None, queued, k)
            tone = self._detect(more, 0, queued, sample_time + k * FRAME, now)
            self._release_queued(queued, tone.tolist(), k, now, out)
            k += 1
            queued = [leg for leg in queued if len(leg.delay.fresh) > k]  # type: ignore[union-attr]
        for leg in delayed:
            clamp = leg.delay
            if clamp is None:
                continue
            if clamp.fresh:
                clamp.fresh.clear()
            elif clamp.held is not None:
                clamp.idle += 1
                # The sender paused (silence suppression, hold, hang-up): the last frame of
                # the talkspurt must not wait for the next one.
                if clamp.idle >= CLAMP_IDLE_TICKS or clamp.closing:
                    self._release(leg, clamp.held, clamp.held_muted, now, out)
                    clamp.muted += clamp.held_muted
                    clamp.held = None
            if clamp.closing:
                if clamp.held is not None:
                    self._release(leg, clamp.held, clamp.held_muted, now, out)
                leg.clamp = leg.delay = None
                self._dirty = True
        if not rx:
            return None
        pcm = batch[:n_rx]
        for i, leg in enumerate(self._rx_jb):
            rec = leg.recorder
            if rec is not None and rec.feed(pcm[i].astype(np.int16)):
                self._finish_recording(leg)
        if self._mix_clamps:
            muted = []
            for j, row, leg in self._mix_clamps:
                clamp = leg.clamp
                if clamp is None:
                    continue
                if static_tone[j]:
                    clamp.hang = CLAMP_HANG_FRAMES
                    muted.append(row)
                elif clamp.hang:
                    clamp.hang -= 1
                    muted.append(row)
            if muted:
                pcm = pcm.copy()
                pcm[muted] = 0
        return pcm

    def _raw_rx(self) -> tuple[npt.NDArray[np.uint8], list[float] | None]:
        """One frame of every jitter-buffered and FrameRing leg, as G.711 bytes (len(rx), 160),
        and the concealment gains of the jitter-buffered rows (None when all are 1)."""
        payloads: list[bytes] = []
        gains: list[float] = []
        concealed = False
        for leg in self._rx_jb:
            assert leg.jb is not None
            payload, gain = leg.jb.pop()
            if payload is None:
                payload = leg.silence
            elif len(payload) != FRAME:
                payload = (payload + leg.silence)[:FRAME]
            if gain != 1.0:
                concealed = True
            payloads.append(payload)
            gains.append(gain)
        raw = np.frombuffer(b"".join(payloads), dtype=np.uint8).reshape(len(payloads), FRAME)
        if len(self._ring):
            raw = np.concatenate([raw, self._ring.pop()]) if payloads else self._ring.pop()
        return raw, gains if concealed else None

    def _decode_with_queued(
        self,
        raw: npt.NDArray[np.uint8] | None,
        gains: list[float] | None,
        queued: list[Leg],
        k: int,
    ) -> _Batch:
        """Decode `raw` (the rx rows) and frame `k` of each queued clamp, in one batch."""
        law = self._rx_law if raw is not None and len(raw) else None
        offsets = None if raw is None else self._rx_offsets
        if queued:
            payloads = []
            for leg in queued:
                payload = leg.delay.fresh[k][4]  # type: ignore[union-attr]
                if len(payload) != FRAME:
                    payload = (payload + leg.silence)[:FRAME]
                payloads.append(payload)
            if len(queued) == len(self._delayed):
                laws = self._delayed_laws
            else:
                laws = [_LAW_OFFSET[leg.session.codec] for leg in queued]
            extra = np.frombuffer(b"".join(payloads), dtype=np.uint8).reshape(-1, FRAME)
            same = laws.count(laws[0]) == len(laws)
            if raw is None or not len(raw):
                law = laws[0] if same else None
                offsets = np.array(laws, dtype=np.uint16).reshape(-1, 1)
            else:
                if not (same and law == laws[0]):
                    law = None
                    offsets = np.concatenate(
                        [self._rx_offsets, np.array(laws, dtype=np.uint16).reshape(-1, 1)]
                    )
                extra = np.concatenate([raw, extra])
            raw = extra
        if raw is None:
            return np.zeros((0, FRAME), dtype=np.float32)
        pcm = _decode_batch(raw, law, offsets)
        if gains is not None:
            scale = np.ones(len(pcm), dtype=np.float32)
            scale[: len(gains)] = gains
            pcm *= scale[:, np.newaxis]
            np.trunc(pcm, out=pcm)  # as the int16 conversion of the scaled samples would
        return pcm

    def _detect(
        self, batch: _Batch, n_rx: int, queued: list[Leg], sample_time: int, now: float
    ) -> npt.NDArray[np.bool_]:
        """Run the DTMF and fax detectors on `batch`: its first `n_rx` rows are the rx legs
        (analysed as the static rows say), then one row per queued clamp. Returns the
        tone-energy flag of every static DTMF row, then of every queued leg (False for a leg
        without in-band detection)."""
        n_static = len(self._dtmf_rows) if n_rx else 0
        every = len(queued) == len(self._delayed)  # then queued is self._delayed
        if every:
            inband, inband_slots = self._delayed_dtmf, self._delayed_dtmf_slots
        else:
            inband = [i for i, leg in enumerate(queued) if leg.inband]
            inband_slots = np.array(
                [self._dtmf_slot_of[queued[i].leg_id] for i in inband], dtype=np.intp
            )
        tone = np.zeros(n_static + len(queued), dtype=np.bool_)
        dtmf_frames: _Batch | None = None
        if n_static or inband:
            rows = self._dtmf_rows if n_static else np.zeros(0, dtype=np.intp)
            slots = self._dtmf_slots if n_static else np.zeros(0, dtype=np.intp)
            if inband:
                rows = np.concatenate([rows, n_rx + np.array(inband, dtype=np.intp)])
                slots = np.concatenate([slots, inband_slots])
            frames = batch if len(rows) == len(batch) else batch[rows]
            dtmf_frames = frames
            for leg_id, event in self._dtmf.process(slots, frames, sample_time):
                target = self._legs.get(str(leg_id))
                if target is not None:
                    self._digit(target, event, now)
            flags = getattr(self._dtmf, "last_tone", None)
            if flags is not None and len(flags) == len(rows):
                tone[:n_static] = flags[:n_static]
                tone[n_static + np.array(inband, dtype=np.intp)] = flags[n_static:]
        fax = self._fax
        if fax is None:
            return tone
        n_fax = len(self._fax_rows) if n_rx else 0
        if every:
            faxed, faxed_slots = self._delayed_fax, self._delayed_fax_slots
        else:
            faxed = [i for i, leg in enumerate(queued) if leg.fax_detect]
            faxed_slots = np.array(
                [self._fax_slot_of[queued[i].leg_id] for i in faxed], dtype=np.intp
            )
        if n_fax or faxed:
            rows = self._fax_rows if n_fax else np.zeros(0, dtype=np.intp)
            slots = self._fax_slots if n_fax else np.zeros(0, dtype=np.intp)
            if faxed:
                rows = np.concatenate([rows, n_rx + np.array(faxed, dtype=np.intp)])
                slots = np.concatenate([slots, faxed_slots])
            frames = batch if len(rows) == len(batch) else batch[rows]
            # The same frames as the DTMF detector's (the usual case): its gate's quarter
            # energies serve the fax detector's screen too.
            quarters = getattr(self._dtmf, "last_quarters", None) if frames is dtmf_frames else None
            if quarters is not None and getattr(fax, "ACCEPTS_QUARTERS", False):
                found_tones = fax.process(slots, frames, sample_time, quarters=quarters)  # type: ignore[call-arg]
            else:
                found_tones = fax.process(slots, frames, sample_time)
            for leg_id, found in found_tones:
                # media.faxdetect reports FaxToneEvent(kind="cng"|"ced"|"ansam", ...).
                self._fax_detected(str(leg_id), str(getattr(found, "kind", found)))
        return tone

    def _release_queued(
        self, queued: list[Leg], tone: list[bool], k: int, now: float, out: _Out
    ) -> None:
        """Push frame `k` of every queued clamp (analysed: `tone`) and relay what that frees.

        `DtmfClamp.push` and `RtpSession.relayed`, inlined: this runs for every clamped frame.
        """
        for leg, flag in zip(queued, tone, strict=True):
            clamp = leg.delay
            assert clamp is not None
            clamp.frames += 1
            clamp.idle = 0
            if flag:
                muted = clamp.held_muted = True
                clamp.hang = CLAMP_HANG_FRAMES
            elif clamp.hang:
                muted = True
                clamp.hang -= 1
            else:
                muted = False
            held, held_muted = clamp.held, clamp.held_muted
            clamp.held, clamp.held_muted = clamp.fresh[k], muted
            if held is None:
                continue
            clamp.muted += held_muted
            peer = leg.peer
            if peer is None:
                continue
            psession = peer.session
            dest = psession.latched or psession.remote
            if dest is None:
                continue
            seq, ts, ssrc, marker, payload = held
            if held_muted:
                silence = peer.silence
                payload = silence if len(payload) == FRAME else silence[:1] * len(payload)
            elif leg.transcode is not None:
                payload = payload.translate(leg.transcode)
            if ssrc != psession.relay_src:
                packet = psession.relayed(psession.pt, marker, seq, ts, ssrc, payload, now)
            else:
                out_seq = (seq + psession.relay_seq_off) & 0xFFFF
                out_ts = (ts + psession.relay_ts_off) & 0xFFFFFFFF
                if 0 < ((out_seq - psession.out_seq) & 0xFFFF) < 0x8000:
                    psession.out_seq = out_seq
                    psession.out_ts = out_ts
                    psession.out_time = now
                psession.packets_sent += 1
                psession.octets_sent += len(payload)
                b1 = psession.pt | 0x80 if marker else psession.pt
                packet = HEADER.pack(0x80, b1, out_seq, out_ts, psession.ssrc) + payload
            out.append((peer.leg_id, packet, dest))

    def _release(self, leg: Leg, frame: _Queued, muted: bool, now: float, out: _Out) -> None:
        """Relay one frame from a clamp's delay line to the leg's peer (silence if muted)."""
        peer = leg.peer
        if peer is None:
            return
        psession = peer.session
        dest = psession.latched or psession.remote
        if dest is None:
            return
        seq, ts, ssrc, marker, payload = frame
        if muted:
            silence = peer.silence
            payload = silence if len(payload) == FRAME else silence[:1] * len(payload)
        elif leg.transcode is not None:
            payload = payload.translate(leg.transcode)
        packet = psession.relayed(psession.pt, marker, seq, ts, ssrc, payload, now)
        out.append((peer.leg_id, packet, dest))

    def _fax_detected(self, leg_id: str, kind: str) -> None:
        leg = self._legs.get(leg_id)
        if leg is None or leg.clear_channel:
            return
        ok = self.set_clear_channel(leg_id)
        self._events.append(FaxDetected(leg_id, kind, ok))

    def _send_batch(
        self, pcm: _Batch | None, now: float, out: list[tuple[str, bytes, Addr]]
    ) -> None:
        tx = self._tx
        acc = np.zeros((len(tx), FRAME), dtype=np.int32)
        audio: list[int] = []
        rows = self._rx_row
        for i, leg in enumerate(tx):
            session = leg.session
            dest = session.destination
            if leg.dtmf_tx:
                payload, first = leg.dtmf_tx.popleft()
                if first or leg.dtmf_tx_ts is None:
                    leg.dtmf_tx_ts = session.peek_timestamp(now)
                if dest is not None and session.dtmf_pt is not None:
                    pkt = session.generated(
                        payload, now, session.dtmf_pt, first, leg.dtmf_tx_ts, samples=0
                    )
                    out.append((leg.leg_id, pkt, dest))
                if not leg.dtmf_tx:
                    leg.dtmf_tx_ts = None
                    self._dirty = True
                if not leg.inband_tx:
                    continue
            sound = False
            if leg.inband_tx:
                acc[i] += leg.inband_tx.popleft()
                sound = True
                if not leg.inband_tx:
                    self._dirty = True
            elif leg.player is not None:
                frame = leg.player.next_frame()
                if frame is None:
                    leg.player = None
                    self._events.append(PlayFinished(leg.leg_id, False))
                    self._dirty = True
                    sound = True  # a silent frame: the stream has no gap where a prompt ends
                else:
                    acc[i] += frame
                    sound = True
            peer = leg.peer
            if peer is not None and pcm is not None and leg.mix_peer and peer.to_peer:
                row = rows.get(peer.leg_id)
                if row is not None:
                    acc[i] += pcm[row].astype(np.int32)
                    sound = True
            if sound or leg.conference is not None:
                audio.append(i)
        if pcm is not None:
            for conf in self._conferences.values():
                members = [(m, rows.get(m)) for m in conf.members]
                live = [r for _, r in members if r is not None]
                if not live:
                    continue
                total = pcm[live].astype(np.int32).sum(axis=0)
                for i, leg in enumerate(tx):
                    if leg.conference is conf:
                        own = rows.get(leg.leg_id)
                        acc[i] += total - (pcm[own].astype(np.int32) if own is not None else 0)
        if not audio:
            return
        mixed = saturate(acc[audio])
        for k, i in enumerate(audio):
            leg = tx[i]
            session = leg.session
            dest = session.destination
            if dest is None:
                continue
            table = ULAW_ENCODE if session.codec == "PCMU" else ALAW_ENCODE
            payload = table[mixed[k].view(np.uint16)].tobytes()
            out.append((leg.leg_id, session.generated(payload, now), dest))

    def _housekeeping(self, now: float) -> None:
        for leg in self._legs.values():
            session = leg.session
            session.poll(now)
            if session.remote is None or leg.timed_out:
                continue
            last = session.last_rx if session.last_rx is not None else leg.created
            if now - last >= self.rtp_timeout:
                leg.timed_out = True
                self._events.append(RtpTimeout(leg.leg_id, now - last))

    # -- RTCP ----------------------------------------------------------------------------------

    def rtcp_reports(self, now: float, wallclock: float) -> list[tuple[str, bytes, Addr]]:
        """One SR/RR per leg with a destination, to its RTP port + 1 (RFC 3550 section 11)."""
        out = []
        for leg in self._legs.values():
            dest = leg.session.destination
            if dest is not None:
                rtcp_dest = (dest[0], dest[1] + 1)
                out.append((leg.leg_id, leg.session.rtcp_report(now, wallclock), rtcp_dest))
        return out

    def receive_rtcp(self, leg_id: str, data: bytes, addr: Addr, now: float) -> None:
        """Take one RTCP datagram (from the latched host only)."""
        leg = self._legs.get(leg_id)
        if leg is None:
            return
        dest = leg.session.destination
        if dest is None or addr[0] != dest[0]:
            leg.session.rejected_source += 1
            return
        leg.session.receive_rtcp(data, now)

    @property
    def legs(self) -> dict[str, Leg]:
        """All legs by id (read-only view for status pages)."""
        return self._legs
