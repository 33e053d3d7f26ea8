"""Kamailio as the carrier and baresip as the customer's phone, proven without the switch.

SIPp plays the switch (REGISTER with digest, outgoing calls with proxy authentication), the
trigger caller, and the called party on the "PSTN". Each test starts its own Kamailio and, where
needed, baresip on free loopback ports; a test's RTP sink is a socket bound here, named in the
SDP offer, so the phone's media (G.711 and RFC 4733 telephone-events) is checked byte for byte.
Numbers: customer 815011110000 -> baresip, destination 441234567890 -> SIPp UAS, trigger
815012345678 -> the switch (whatever registered as ``switch``).
"""

from __future__ import annotations

import socket
import struct
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from interop.baresip import CUSTOMER_NUMBER
from interop.conftest import BaresipFactory, KamailioFactory, SippFactory
from interop.kamailio import DESTINATION_NUMBER, SCENARIOS
from interop.peers import LOOPBACK, TRIGGER_NUMBER, Sipp, SippResult, check_authorization, free_port
from media.g711 import ulaw_decode, ulaw_encode
from media.tones import dtmf_tone
from media.tools import detect_dtmf, detect_dtmf_file, gen_dtmf_file

pytestmark = pytest.mark.interop

SWITCH_USER, SWITCH_PASSWORD = "switch", "secret"
DTMF_EVENTS = "0123456789*#ABCD"


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """The RTP header fields the tests look at, and the payload."""

    payload_type: int
    marker: bool
    seq: int
    timestamp: int
    ssrc: int
    payload: bytes


def parse_rtp(data: bytes) -> RtpPacket | None:
    """An RTP packet (RFC 3550 section 5.1), or None if ``data`` is not version 2 RTP."""
    if len(data) < 12 or data[0] >> 6 != 2:
        return None
    csrc_count = data[0] & 0x0F
    seq, timestamp, ssrc = struct.unpack("!HII", data[2:12])
    return RtpPacket(
        payload_type=data[1] & 0x7F,
        marker=bool(data[1] & 0x80),
        seq=seq,
        timestamp=timestamp,
        ssrc=ssrc,
        payload=data[12 + 4 * csrc_count :],
    )


def telephone_events(packets: list[RtpPacket], payload_type: int = 101) -> str:
    """Digits of RFC 4733 events that ended: one per RTP timestamp, however many end packets."""
    digits: dict[int, str] = {}
    for p in packets:
        if p.payload_type == payload_type and len(p.payload) >= 4 and p.payload[1] & 0x80:
            digits.setdefault(p.timestamp, DTMF_EVENTS[p.payload[0]])
    return "".join(digits[ts] for ts in sorted(digits))


class RtpSink:
    """A UDP socket on 127.0.0.1 that the SDP offer names: collects the RTP that arrives and,
    once the peer's address is known from its first packet (symmetric RTP), can talk back."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, free_port() & ~1))
        self.port = int(self.sock.getsockname()[1])
        self.packets: list[RtpPacket] = []
        self.peer: tuple[str, int] | None = None

    def collect_while(self, sipp: Sipp, timeout: float, talk: bytes = b"") -> None:
        """Read packets until the SIPp run ends (or ``timeout``); meanwhile send ``talk``
        (PCMU bytes) to the peer as 20 ms packets in real time."""
        self.sock.settimeout(0.005)
        deadline = time.monotonic() + timeout
        frames = [talk[i : i + 160] for i in range(0, len(talk), 160)]
        sent = 0
        started = 0.0
        while time.monotonic() < deadline and sipp.proc is not None and sipp.proc.poll() is None:
            self.drain()
            if self.peer is None or sent >= len(frames):
                continue
            if not started:
                started = time.monotonic()
            if time.monotonic() >= started + sent * 0.02:
                header = struct.pack("!BBHII", 0x80, 0x80 if sent == 0 else 0, sent, sent * 160, 7)
                self.sock.sendto(header + frames[sent], self.peer)
                sent += 1

    def drain(self) -> None:
        try:
            while True:
                data, source = self.sock.recvfrom(2048)
                packet = parse_rtp(data)
                if packet is not None:
                    self.packets.append(packet)
                    self.peer = source
        except (TimeoutError, BlockingIOError):
            pass

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def rtp_sink() -> Iterator[RtpSink]:
    sink = RtpSink()
    yield sink
    sink.close()


def register(sipp: SippFactory, carrier: str, contact_port: int, password: str) -> SippResult:
    return sipp(
        str(SCENARIOS / "register_auth.xml"),
        remote=carrier,
        service=SWITCH_USER,
        timeout_s=5,
        extra=["-au", SWITCH_USER, "-ap", password, "-key", "contact_port", str(contact_port)],
    ).run()


def call(sipp: SippFactory, carrier: str, number: str, rtp_port: int, talk_ms: int) -> Sipp:
    """Start (not wait for) the switch's authenticated call to ``number`` through ``carrier``."""
    return sipp(
        str(SCENARIOS / "call_auth.xml"),
        remote=carrier,
        service=number,
        timeout_s=10,
        extra=[
            *("-au", SWITCH_USER, "-ap", SWITCH_PASSWORD),
            *("-key", "rtp_port", str(rtp_port), "-d", str(talk_ms), "-mp", str(free_port())),
        ],
    ).start()


# --- (1) registrar -----------------------------------------------------------------------------


def test_switch_registers_with_digest(start_kamailio: KamailioFactory, sipp: SippFactory) -> None:
    carrier = start_kamailio(switch_password=SWITCH_PASSWORD)
    contact_port = free_port()
    result = register(sipp, carrier.address, contact_port, SWITCH_PASSWORD)
    assert result.returncode == 0, result.describe()
    assert [m.status for m in result.received()] == [401, 200]
    challenge = result.received(status=401)[0].header("WWW-Authenticate")
    assert challenge is not None and 'realm="carrier.test"' in challenge and "qop" in challenge
    authorized = [m for m in result.messages if m.direction == "sent" and m.method == "REGISTER"]
    authz = authorized[-1].header("Authorization")
    assert authz is not None
    problems = check_authorization(
        authz, challenge, method="REGISTER", username=SWITCH_USER, password=SWITCH_PASSWORD
    )
    assert problems == []
    binding = result.received(status=200)[0].header("Contact")
    assert binding is not None and f"{LOOPBACK}:{contact_port}" in binding
    assert "expires=60" in binding
    assert carrier.wait_for_log(f"carrier: registered {SWITCH_USER}", 2)


def test_wrong_password_is_challenged_again(
    start_kamailio: KamailioFactory, sipp: SippFactory
) -> None:
    carrier = start_kamailio(switch_password=SWITCH_PASSWORD)
    result = register(sipp, carrier.address, free_port(), "not-the-password")
    assert result.returncode != 0
    assert [m.status for m in result.received()] == [401, 401]
    assert carrier.wait_for_log(f"REGISTER auth failed for {SWITCH_USER}", 2)
    assert "carrier: registered" not in carrier.log()


# --- (2) and (3): the switch calls the customer's phone ----------------------------------------


@pytest.mark.parametrize("routing", ["static", "registered"])
def test_call_to_customer_reaches_baresip(
    routing: str,
    start_kamailio: KamailioFactory,
    start_baresip: BaresipFactory,
    sipp: SippFactory,
    rtp_sink: RtpSink,
) -> None:
    # "static": the carrier knows the phone's address; "registered": the phone registered.
    phone_port = free_port()
    carrier = start_kamailio(
        switch_password=SWITCH_PASSWORD,
        customer_target=f"{LOOPBACK}:{phone_port}" if routing == "static" else None,
    )
    phone = start_baresip(
        carrier=carrier.address,
        sip_port=phone_port,
        register_password="phone" if routing == "registered" else None,
    )
    if routing == "registered":
        phone.wait_for_registered(5)
        assert carrier.wait_for_log(f"carrier: registered {CUSTOMER_NUMBER}", 2)
    uac = call(sipp, carrier.address, CUSTOMER_NUMBER, rtp_sink.port, talk_ms=1000)
    rtp_sink.collect_while(uac, 12)
    result = uac.wait(5)
    rtp_sink.close()
    assert result.returncode == 0, result.describe() + phone.log()[-2000:]
    assert [m.status for m in result.received() if m.status and m.status >= 200] == [407, 200, 200]
    established = phone.wait_for_call_established(1)
    assert established["peeruri"].startswith(f"sip:{SWITCH_USER}@")
    phone.wait_for_call_closed(3)
    answer = result.received(status=200)[0]
    assert "baresip" in answer.text and f"c=IN IP4 {LOOPBACK}" in answer.text
    assert answer.header("Record-Route"), "the carrier must stay in the dialog"
    # One second of talk: G.711 from the phone at 50 packets/s, from one SSRC.
    pcmu = [p for p in rtp_sink.packets if p.payload_type == 0]
    assert len(pcmu) >= 30, f"{len(pcmu)} PCMU packets from baresip"
    assert len({p.ssrc for p in pcmu}) == 1
    assert all(len(p.payload) == 160 for p in pcmu)
    dump = phone.sent_audio()
    assert dump is not None
    with wave.open(str(dump)) as sent:
        assert (sent.getframerate(), sent.getnchannels()) == (8000, 1)


def test_baresip_sends_rfc4733_dtmf(
    start_kamailio: KamailioFactory,
    start_baresip: BaresipFactory,
    sipp: SippFactory,
    rtp_sink: RtpSink,
) -> None:
    phone_port = free_port()
    carrier = start_kamailio(
        switch_password=SWITCH_PASSWORD, customer_target=f"{LOOPBACK}:{phone_port}"
    )
    phone = start_baresip(carrier=carrier.address, sip_port=phone_port)
    uac = call(sipp, carrier.address, CUSTOMER_NUMBER, rtp_sink.port, talk_ms=2500)
    phone.wait_for_call_established(5)
    phone.send_dtmf("15#*")
    rtp_sink.collect_while(uac, 12)
    result = uac.wait(5)
    rtp_sink.close()
    assert result.returncode == 0, result.describe()
    assert telephone_events(rtp_sink.packets) == "15#*"
    events = [p for p in rtp_sink.packets if p.payload_type == 101]
    for timestamp in sorted({p.timestamp for p in events}):
        event = [p for p in events if p.timestamp == timestamp]
        # RFC 4733 section 2.5.1: marker on the first packet, the end packet sent three times.
        assert event[0].marker and not any(p.marker for p in event[1:])
        assert sum(1 for p in event if p.payload[1] & 0x80) == 3
    assert len({p.ssrc for p in rtp_sink.packets}) == 1, "events share the audio stream's SSRC"


def test_baresip_audio_both_ways(
    start_kamailio: KamailioFactory,
    start_baresip: BaresipFactory,
    sipp: SippFactory,
    rtp_sink: RtpSink,
    tmp_path: Path,
) -> None:
    # The phone speaks a WAV of in-band DTMF; the far end speaks other digits back, which the
    # phone's recording of what it received must contain.
    spoken = tmp_path / "spoken.wav"
    gen_dtmf_file("4711", spoken, on_ms=80, off_ms=80)
    phone_port = free_port()
    carrier = start_kamailio(
        switch_password=SWITCH_PASSWORD, customer_target=f"{LOOPBACK}:{phone_port}"
    )
    phone = start_baresip(carrier=carrier.address, sip_port=phone_port, audio_file=spoken)
    gap = np.zeros(640, np.int16)  # 80 ms
    back = np.concatenate([gap, *(part for d in "9*0" for part in (dtmf_tone(d, 80, -6.0), gap))])
    uac = call(sipp, carrier.address, CUSTOMER_NUMBER, rtp_sink.port, talk_ms=1500)
    rtp_sink.collect_while(uac, 12, talk=ulaw_encode(back))
    result = uac.wait(5)
    rtp_sink.close()
    assert result.returncode == 0, result.describe()
    pcmu = b"".join(p.payload for p in rtp_sink.packets if p.payload_type == 0)
    assert "".join(d for d, _, _ in detect_dtmf(ulaw_decode(pcmu))) == "4711"
    received = phone.received_audio()
    assert received is not None
    assert "".join(d for d, _, _ in detect_dtmf_file(received)) == "9*0"


# --- (4) the switch calls a destination on the PSTN --------------------------------------------


def test_destination_number_routes_to_pstn_uas(
    start_kamailio: KamailioFactory, sipp: SippFactory, rtp_sink: RtpSink
) -> None:
    pstn_port = free_port()
    pstn = sipp(
        str(SCENARIOS / "uas_answer.xml"),
        local_port=pstn_port,
        timeout_s=10,
        extra=["-mp", str(free_port())],
    ).start()
    carrier = start_kamailio(switch_password=SWITCH_PASSWORD, pstn_target=f"{LOOPBACK}:{pstn_port}")
    uac = call(sipp, carrier.address, DESTINATION_NUMBER, rtp_sink.port, talk_ms=200)
    result = uac.wait(15)
    rtp_sink.close()
    pstn_result = pstn.wait(5)
    assert result.returncode == 0, result.describe()
    assert pstn_result.returncode == 0, pstn_result.describe()
    (invite,) = pstn_result.received(method="INVITE")
    assert invite.first_line.startswith(f"INVITE sip:{DESTINATION_NUMBER}@")
    assert invite.header("Record-Route"), "the carrier record-routes"
    assert invite.header("Proxy-Authorization") is None, "credentials must not leak downstream"
    assert [m.method for m in pstn_result.received()] == ["INVITE", "ACK", "BYE"]


def test_unknown_number_without_pstn_route_is_404(
    start_kamailio: KamailioFactory, sipp: SippFactory, rtp_sink: RtpSink
) -> None:
    carrier = start_kamailio(switch_password=SWITCH_PASSWORD)
    result = call(sipp, carrier.address, DESTINATION_NUMBER, rtp_sink.port, talk_ms=0).wait(10)
    rtp_sink.close()
    assert result.returncode != 0
    assert 404 in [m.status for m in result.received()]


# --- the trigger call goes to whatever registered as the switch ----------------------------------


def test_trigger_call_routes_to_registered_switch(
    start_kamailio: KamailioFactory, sipp: SippFactory
) -> None:
    switch_port = free_port()
    switch = sipp("uas_trigger.xml", local_port=switch_port, timeout_s=10).start()
    carrier = start_kamailio(switch_password=SWITCH_PASSWORD)
    registered = register(sipp, carrier.address, switch_port, SWITCH_PASSWORD)
    assert registered.returncode == 0, registered.describe()
    caller = sipp(
        "invite_cancel_via_proxy.xml", remote=carrier.address, service=TRIGGER_NUMBER
    ).run()
    switch_result = switch.wait(5)
    assert caller.returncode == 0, caller.describe()
    assert switch_result.returncode == 0, switch_result.describe()
    (invite,) = switch_result.received(method="INVITE")
    # The Request-URI keeps the dialled trigger number: the switch matches triggers on it.
    assert invite.first_line.startswith(f"INVITE sip:{TRIGGER_NUMBER}@{LOOPBACK}:{switch_port}")
    assert "Proxy-Authorization" not in invite.text
    assert carrier.wait_for_log("registered switch", 1)


def test_trigger_call_without_switch_is_480(
    start_kamailio: KamailioFactory, sipp: SippFactory
) -> None:
    carrier = start_kamailio(switch_password=SWITCH_PASSWORD)
    caller = sipp(
        "invite_cancel_via_proxy.xml", remote=carrier.address, service=TRIGGER_NUMBER
    ).run()
    assert caller.returncode != 0
    assert 480 in [m.status for m in caller.received()]
