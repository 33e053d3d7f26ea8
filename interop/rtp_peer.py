"""A caller's RTP end for the interop suite: a 20 ms PCMU stream with RFC 4733 key presses
(or in-band DTMF tones).

Theory of operation. SIPp does the signalling of a trigger call, this the media. SIPp's RFC 2833
pcaps (sip-tester's ``dtmf_2833_*.pcap``) replay fixed sequence numbers and timestamps, so the
same key twice (``1`` to confirm, ``1`` to call back now) would be one event to an RFC 4733
receiver, and ``play_pcap_audio`` cannot follow a tone with a key on one stream.
:class:`RtpPeer` binds a UDP port on 127.0.0.1 (the port the SIPp UAC offers in its SDP, ``-key
rtp_port PORT``) and a thread runs a 20 ms clock. Each tick it keeps what arrived (with arrival
times), and, once the far end is known and sending is on, sends one packet: the next queued
frame (a key press packet, or audio from :meth:`RtpPeer.play`) or silence. The far end is
learned from the first RTP packet that arrives (symmetric RTP, RFC 4961: the switch plays its
ringback in the early media from the socket it listens on), so the test needs no SDP parsing.

Key presses follow RFC 4733 section 2.5: every packet of one press carries the timestamp of
its first packet (which has the marker bit), the duration grows by 160 per packet, and the end
packet (E bit) is sent three times; the stream's timestamp keeps counting 160 per packet
through the press, so each press has its own timestamp and two presses of the same key are
two events.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from interop.peers import LOOPBACK
from media import g711
from media.tones import dtmf_tone

FRAME = 160  # samples in 20 ms at 8 kHz
TICK = 0.020
PCMU = 0
TELEPHONE_EVENT = 101
KEYS = "0123456789*#"
SILENCE = g711.ulaw_encode(np.zeros(FRAME, dtype=np.int16))


@dataclass(frozen=True, slots=True)
class Received:
    """One RTP packet that arrived: when (``time.monotonic()``), from where, what."""

    time: float
    source: tuple[str, int]
    pt: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class _Frame:
    """One packet to send. ``event`` None: audio ``payload``; else a key press packet whose
    ``first`` starts the press (marker bit, new event timestamp)."""

    payload: bytes
    event: int | None = None
    first: bool = False


class RtpPeer:
    """The caller's media; see the module docstring. Use as a context manager."""

    def __init__(self, *, send: bool = True, event_pt: int = TELEPHONE_EVENT) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, 0))
        self.sock.setblocking(False)
        self.port = int(self.sock.getsockname()[1])
        self.event_pt = event_pt
        #: Whether the stream is sent once the far end is known (off: a carrier that drops
        #: the caller's early media, or a phone that sends nothing before the answer).
        self.sending = send
        self.remote: tuple[str, int] | None = None
        self._lock = threading.Lock()
        self._queue: deque[_Frame] = deque()
        self._received: list[Received] = []
        self._sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rtp-{self.port}", daemon=True)
        self._ssrc = random.getrandbits(32)
        self._seq = random.getrandbits(16)
        self._ts = random.getrandbits(32)
        self._event_ts = 0

    def __enter__(self) -> RtpPeer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        self.sock.close()

    # --- what the test does ----------------------------------------------------------------------

    def wait_for_remote(self, timeout: float) -> tuple[str, int]:
        """The far end's address, once its first RTP packet arrived; raise after ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.remote is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"no RTP reached port {self.port} within {timeout} s")
            time.sleep(0.01)
        return self.remote

    def press(
        self, keys: str, *, on_ms: int = 100, gap_ms: int = 120, timeout: float = 10.0
    ) -> None:
        """Press ``keys`` one after the other (RFC 4733 events, silence between them) and
        return once the last packet has been sent."""
        frames: list[_Frame] = []
        for key in keys:
            code = KEYS.index(key)
            packets = max(1, on_ms // 20)
            for i in range(packets):
                payload = struct.pack("!BBH", code, 10, (i + 1) * FRAME)
                frames.append(_Frame(payload, code, first=i == 0))
            end = struct.pack("!BBH", code, 0x80 | 10, packets * FRAME)
            frames += [_Frame(end, code)] * 3
            frames += [_Frame(SILENCE)] * max(1, gap_ms // 20)
        self._enqueue(frames, timeout)

    def press_tones(self, keys: str, *, on_ms: int = 100, gap_ms: int = 120) -> None:
        """Press ``keys`` in-band, as DTMF tones in the audio (-6 dBm0, a tone-only phone)."""
        gap = np.zeros(gap_ms * 8, dtype=np.int16)
        self.play(np.concatenate([p for key in keys for p in (dtmf_tone(key, on_ms, -6.0), gap)]))

    def play(self, pcm: NDArray[np.int16], *, timeout: float = 30.0) -> None:
        """Send ``pcm`` (8 kHz) as PCMU, 20 ms per packet; return once it has all been sent."""
        frames = [_Frame(g711.ulaw_encode(pcm[i : i + FRAME])) for i in range(0, len(pcm), FRAME)]
        self._enqueue(frames, timeout)

    def received(self, *, since: float = 0.0, pt: int | None = None) -> list[Received]:
        """The packets that arrived at or after ``since`` (monotonic), of type ``pt`` if set."""
        with self._lock:
            got = list(self._received)
        return [r for r in got if r.time >= since and (pt is None or r.pt == pt)]

    def heard(self, *, since: float = 0.0, until: float = float("inf")) -> NDArray[np.int16]:
        """The PCMU audio that arrived between ``since`` and ``until``, decoded."""
        payloads = [r.payload for r in self.received(since=since, pt=PCMU) if r.time < until]
        return g711.ulaw_decode(b"".join(payloads))

    @property
    def sent(self) -> int:
        """How many packets were sent so far."""
        return self._sent

    # --- the thread -------------------------------------------------------------------------------

    def _enqueue(self, frames: list[_Frame], timeout: float) -> None:
        if self.remote is None or not self.sending:
            raise AssertionError("nothing can be sent yet: no far end, or sending is off")
        with self._lock:
            self._queue.extend(frames)
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if not self._queue:
                    return
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise AssertionError(f"RTP peer {self.port}: frames not sent within {timeout} s")
            time.sleep(0.005)

    def _run(self) -> None:
        next_tick = time.monotonic()
        while not self._stop.is_set():
            self._drain()
            now = time.monotonic()
            if now >= next_tick:
                # A late tick sends one packet, not a burst: the stream slips, it never bunches.
                next_tick = max(next_tick + TICK, now - TICK)
                if self.remote is not None and self.sending:
                    self._send_one()
            time.sleep(min(0.005, max(0.0, next_tick - time.monotonic())))

    def _drain(self) -> None:
        while True:
            try:
                data, source = self.sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if len(data) < 12 or data[0] >> 6 != 2:
                continue
            got = Received(time.monotonic(), (source[0], source[1]), data[1] & 0x7F, data[12:])
            with self._lock:
                self._received.append(got)
            if self.remote is None:
                self.remote = got.source

    def _send_one(self) -> None:
        with self._lock:
            frame = self._queue[0] if self._queue else _Frame(SILENCE)
        marker = 0
        if frame.event is None:
            pt, ts = PCMU, self._ts
        else:
            if frame.first:
                self._event_ts = self._ts
                marker = 0x80
            pt, ts = self.event_pt, self._event_ts
        header = struct.pack("!BBHII", 0x80, marker | pt, self._seq, ts & 0xFFFFFFFF, self._ssrc)
        assert self.remote is not None
        try:
            self.sock.sendto(header + frame.payload, self.remote)
        except OSError:
            return  # the far end closed its port (ICMP): the next tick tries again
        with self._lock:
            if self._queue and self._queue[0] is frame:
                self._queue.popleft()
        self._seq = (self._seq + 1) & 0xFFFF
        self._ts = (self._ts + FRAME) & 0xFFFFFFFF
        self._sent += 1
