"""The demo's emulated carrier against scripted counterparts built from the same stack.

Real UDP sockets on 127.0.0.1: a test-side Endpoint plays the node (REGISTER client with the
stack's own Registration, a trigger UAS that rings, a UAC calling the phones), and a test-side
MediaShell plays the node's media.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from media.aio import MediaShell
from media.engine import DigitReceived, Event
from media.g711 import ULAW_DECODE, ulaw_encode
from media.tones import dtmf_tone, sine
from softswitch import fsm
from softswitch.demo.carrier import (
    PHONE_TABLE,
    CarrierConfig,
    CustomerScript,
    EmulatedCarrier,
    PhoneError,
    PhoneState,
    TapEngine,
    call_checks,
    heard_prompt,
    heard_tone,
    nonsilent_seconds,
    tone_seconds,
    verify_digest,
)
from softswitch.demo.carrier import _In as PhoneInput
from softswitch.sip import auth, sdp
from softswitch.sip import endpoint as ep
from softswitch.sip import registration as reg
from softswitch.sip.dialog import Dialog
from softswitch.sip.message import URI, Address, CSeq, NameAddr, Request, Response
from softswitch.sip.uri import parse_uri

RATE = 8000


# --- a scripted counterpart: one Endpoint on one socket ------------------------------------


class Peer(asyncio.DatagramProtocol):
    """The node's side of the wire, driven by the test; every endpoint event goes to a queue."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[ep.EndpointEvent] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None
        self.endpoint = ep.Endpoint()
        self._timer: asyncio.TimerHandle | None = None
        self.on_event: Callable[[ep.EndpointEvent], bool] | None = None

    async def start(self) -> Peer:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=("127.0.0.1", 0)
        )
        port = transport.get_extra_info("sockname")[1]
        self.endpoint = ep.Endpoint(ep.EndpointConfig(host="127.0.0.1", port=port))
        return self

    @property
    def address(self) -> Address:
        return Address("127.0.0.1", self.endpoint.config.port)

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.endpoint.receive_datagram(data, Address(addr[0], addr[1]), self.now())
        self.pump()

    def pump(self) -> None:
        while (event := self.endpoint.next_event()) is not None:
            if self.on_event is None or not self.on_event(event):
                self.events.put_nowait(event)
        assert self.transport is not None
        for data, dest in self.endpoint.datagrams_to_send():
            self.transport.sendto(data, (dest.host, dest.port))
        if self._timer is not None:
            self._timer.cancel()
        deadline = self.endpoint.get_timer()
        if deadline is not None:
            self._timer = asyncio.get_running_loop().call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self.endpoint.handle_timer(self.now())
        self.pump()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    async def next(self, kind: type[Any], timeout: float = 3.0) -> Any:
        while True:
            event = await asyncio.wait_for(self.events.get(), timeout)
            if isinstance(event, kind):
                return event

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.transport is not None:
            self.transport.close()


@pytest.fixture
async def carrier() -> Any:
    c = EmulatedCarrier(
        CarrierConfig(
            ring_s=0.2,
            customer_answer_after=0.05,
            destination_answer_after=0.05,
            script=CustomerScript(
                digits="12*", listen_s=0.5, prompt_timeout=3, connect_timeout=0.5
            ),
        )
    )
    await c.start()
    yield c
    await c.stop()


@pytest.fixture
async def peer() -> Any:
    p = await Peer().start()
    yield p
    p.close()


# --- audio checks on synthetic audio ---------------------------------------------------------


def test_heard_tone_on_synthetic_audio_through_g711() -> None:
    def through_ulaw(pcm: np.ndarray) -> np.ndarray:
        return ULAW_DECODE[np.frombuffer(ulaw_encode(pcm), dtype=np.uint8)]

    silence = np.zeros(RATE, dtype=np.int16)
    khz = through_ulaw(sine((1000.0,), 1500, -10.0))
    a440 = through_ulaw(sine((440.0,), 1000, -20.0))
    both = np.concatenate([silence, khz, silence])
    assert heard_tone(both, 1000.0)
    assert tone_seconds(both, 1000.0) == pytest.approx(1.5, abs=0.03)
    assert not heard_tone(both, 440.0)
    assert heard_tone(a440, 440.0)
    assert not heard_tone(a440, 1000.0)
    # A DTMF pair splits the energy between two tones: neither dominates.
    assert not heard_tone(dtmf_tone("5", 1000), 770.0)
    # Noise and silence are no tone at all.
    noise = np.random.default_rng(1).normal(0, 3000, RATE).astype(np.int16)
    assert not heard_tone(noise, 1000.0)
    assert not heard_tone(silence, 1000.0)
    assert nonsilent_seconds(both) == pytest.approx(1.5, abs=0.03)
    assert nonsilent_seconds(silence) == 0.0
    assert tone_seconds(np.zeros(0, dtype=np.int16), 1000.0) == 0.0


def test_verify_digest_against_the_stacks_digest_client() -> None:
    client = auth.DigestClient("alice", "secret", peers=[("127.0.0.1", 5060)])
    nonce = "abc123"
    challenge = auth.DigestChallenge(realm="carrier.test", nonce=nonce, qop=("auth",))
    header = client.authorize(
        challenge, ("127.0.0.1", 5060), method="REGISTER", uri="sip:carrier.test"
    )
    assert isinstance(header, auth.AuthHeader)
    check = {"method": "REGISTER", "username": "alice", "realm": "carrier.test"}
    assert verify_digest(header.value, password="secret", nonces={nonce}, **check) is None
    assert "wrong password" in (
        verify_digest(header.value, password="nope", nonces={nonce}, **check) or ""
    )
    assert verify_digest(header.value, password="secret", nonces=set(), **check) == "stale"
    assert verify_digest("Basic YWxpY2U=", password="secret", nonces={nonce}, **check)


# --- registrar ---------------------------------------------------------------------------------


async def register_with(peer: Peer, carrier: EmulatedCarrier, password: str) -> reg.Registration:
    """Run the stack's own Registration client against the carrier until it settles."""
    registration = reg.Registration(
        reg.RegistrationConfig(
            registrar=parse_uri("sip:carrier.test"),
            aor=URI(user="alice", host="carrier.test"),
            contact=URI(user="alice", host="127.0.0.1", port=peer.address.port),
            proxy=carrier.address,
            local_via=peer.endpoint.local_via(),
            username="alice",
            password=password,
            expires=7200,
        )
    )
    request: Request | None = registration.start(peer.now())
    while request is not None:
        peer.endpoint.send_request(request, carrier.address, peer.now())
        peer.pump()
        event = await peer.next(ep.ResponseReceived)
        request = registration.receive_response(event.response, event.source, peer.now())
    return registration


async def test_register_challenge_verify_and_unregister(
    carrier: EmulatedCarrier, peer: Peer
) -> None:
    registration = await register_with(peer, carrier, "secret")
    assert registration.state is reg.RegState.REGISTERED
    assert [s for _, s, _ in carrier.registrations] == [401, 200]
    assert carrier.node_address == peer.address
    # Granted no more than the carrier's maximum, and said so in the Contact.
    assert carrier.binding_expires == 3600
    assert registration.expires_at == pytest.approx(peer.now() + 3600, abs=5)
    assert await carrier.wait_registered(0.1)

    request = registration.stop(peer.now())
    while request is not None:
        peer.endpoint.send_request(request, carrier.address, peer.now())
        peer.pump()
        event = await peer.next(ep.ResponseReceived)
        request = registration.receive_response(event.response, event.source, peer.now())
    assert registration.state.value == "unregistered"
    assert await carrier.wait_unregistered(0.1)
    assert carrier.binding is None
    assert [s for _, s, _ in carrier.registrations] == [401, 200, 401, 200]
    lines = [text for _, text in carrier.timeline]
    assert "node -> registrar  REGISTER sip:carrier.test SIP/2.0" in lines
    assert "registrar -> node  SIP/2.0 401 Unauthorized" in lines


async def test_register_with_a_wrong_password_is_refused(
    carrier: EmulatedCarrier, peer: Peer
) -> None:
    registration = await register_with(peer, carrier, "guess")
    assert registration.state is reg.RegState.BACKING_OFF
    assert [s for _, s, _ in carrier.registrations] == [401, 403]
    assert "wrong password" in carrier.registrations[-1][2]
    assert carrier.binding is None
    assert not carrier.registered.is_set()


# --- the trigger call --------------------------------------------------------------------------


async def test_trigger_rings_is_cancelled_and_gets_487(
    carrier: EmulatedCarrier, peer: Peer
) -> None:
    def ring(event: ep.EndpointEvent) -> bool:
        if isinstance(event, ep.RequestReceived) and event.request.method == "INVITE":
            assert event.request.uri.user == "815012345678"
            assert event.request.from_.uri.user == "819012345678"
            assert sdp.parse_sdp(event.request.body).media[0].port > 0
            peer.endpoint.respond(event.tx, 180, now=peer.now())
            return True
        return False

    peer.on_event = ring
    result = await carrier.trigger("815012345678", target=peer.address)
    assert result.ok, result
    assert [s for _, s in result.statuses] == [180, 487]
    assert result.ringing_at is not None and result.cancel_sent_at is not None
    assert result.cancel_sent_at - result.ringing_at == pytest.approx(0.2, abs=0.1)
    cancelled = await peer.next(ep.RequestCancelled)
    assert cancelled.request.call_id == result.call_id
    lines = [text for _, text in carrier.timeline]
    assert "node -> customer phone  SIP/2.0 180 Ringing" in lines
    assert any(t.startswith("customer phone -> node  CANCEL sip:815012345678@") for t in lines)
    assert any(t.startswith("customer phone -> node  ACK sip:815012345678@") for t in lines)


async def test_an_answered_trigger_is_a_failure_and_is_hung_up(
    carrier: EmulatedCarrier, peer: Peer
) -> None:
    def answer(event: ep.EndpointEvent) -> bool:
        if isinstance(event, ep.RequestReceived) and event.request.method == "INVITE":
            headers = (("Contact", f"<sip:node@127.0.0.1:{peer.address.port}>"),)
            peer.endpoint.respond(event.tx, 200, headers=headers, now=peer.now())
            return True
        return False

    peer.on_event = answer
    result = await carrier.trigger("815012345678", target=peer.address)
    assert not result.ok
    assert result.answered and result.final_status == 200
    assert "must never" in (result.error or "")
    ack = await peer.next(ep.AckReceived)
    assert ack.request.call_id == result.call_id
    bye = await peer.next(ep.RequestReceived)
    assert bye.request.method == "BYE"


async def test_trigger_without_a_registered_node_is_an_error(carrier: EmulatedCarrier) -> None:
    with pytest.raises(RuntimeError, match="not registered"):
        await carrier.trigger("815012345678")


# --- phones ------------------------------------------------------------------------------------


class NodeMedia:
    """The node's RTP legs, with a tap on what each hears and the digits each gets."""

    def __init__(self) -> None:
        self.engine = TapEngine(max_legs=4)
        self.heard: dict[str, list[np.ndarray]] = {}
        self.digits: dict[str, list[str]] = {}
        self.ports: dict[str, int] = {}
        self.shell: MediaShell | None = None

    async def start(self, *legs: str) -> NodeMedia:
        self.shell = MediaShell(self.engine, port_range=None, on_event=self._event)
        self.shell.start()
        for leg in legs or ("node",):
            self.heard[leg] = []
            self.digits[leg] = []
            self.engine.taps[leg] = lambda p, leg=leg: self.heard[leg].append(  # type: ignore[misc]
                ULAW_DECODE[np.frombuffer(p, dtype=np.uint8)]
            )
            self.ports[leg] = await self.shell.open_leg(leg)
        return self

    def _event(self, event: Event) -> None:
        if isinstance(event, DigitReceived):
            self.digits[event.leg_id].append(event.digit)

    def audio(self, leg: str = "node") -> np.ndarray:
        chunks = self.heard[leg]
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)

    def stop(self) -> None:
        assert self.shell is not None
        self.shell.stop()


async def call_phone(
    peer: Peer, carrier: EmulatedCarrier, number: str, media: NodeMedia, leg: str = "node"
) -> tuple[Dialog, Response]:
    """INVITE the carrier for ``number`` as the node's trunk leg would; ACK the 200."""
    offer = sdp.make_offer("127.0.0.1", media.ports[leg], session_id=7)
    endpoint = peer.endpoint
    invite = Request(
        method="INVITE",
        uri=URI(user=f"+{number}", host="carrier.test"),
        vias=(),
        from_=NameAddr(URI(user="alice", host="carrier.test")).with_tag(endpoint.new_tag()),
        to=NameAddr(URI(user=f"+{number}", host="carrier.test")),
        call_id=endpoint.new_call_id(),
        cseq=CSeq(1, "INVITE"),
        headers=(
            ("Max-Forwards", "70"),
            ("Contact", f"<sip:alice@127.0.0.1:{peer.address.port}>"),
            ("Content-Type", "application/sdp"),
        ),
        body=bytes(offer),
    )
    tx = endpoint.send_request(invite, carrier.address, peer.now())
    peer.pump()
    statuses = []
    while True:
        event = await peer.next(ep.ResponseReceived)
        statuses.append(event.response.status)
        if event.response.status >= 200:
            break
    assert statuses[-1] == 200 and 180 in statuses, statuses
    response = event.response
    dialog = Dialog.from_uac(tx.request, response, now=peer.now())
    endpoint.send_ack(dialog.create_ack(response), carrier.address)
    peer.pump()
    answer = sdp.parse_answer(offer, sdp.parse_sdp(response.body))
    assert answer.codec == "PCMU" and answer.telephone_event_pt == 101
    assert media.shell is not None
    media.engine.set_remote(
        leg, answer.remote_address, answer.remote_port, "PCMU", 101, media.shell.time()
    )
    return dialog, response


async def test_destination_phone_answers_and_exchanges_tones_both_ways(
    carrier: EmulatedCarrier, peer: Peer
) -> None:
    media = await NodeMedia().start()
    try:
        dialog, _ = await call_phone(peer, carrier, carrier.config.destination_number, media)
        phone = carrier.destination
        await asyncio.wait_for(phone.connected.wait(), 2)
        assert phone.state is PhoneState.CONNECTED
        # The "customer" (this side) talks at 1 kHz while the phone sends 440 Hz.
        media.engine.play("node", [sine((1000.0,), 1200, -10.0)], barge_in=False)
        await asyncio.sleep(1.4)
        bye = dialog.create_request("BYE", now=peer.now())
        peer.endpoint.send_request(bye, carrier.address, peer.now())
        peer.pump()
        ok = await peer.next(ep.ResponseReceived)
        assert ok.response.status == 200
        await asyncio.wait_for(phone.ended.wait(), 1)
        assert phone.state.value == "ended" and phone.ended_by == "node"
        assert heard_tone(phone.audio("talk"), 1000.0, min_s=0.8)
        assert not heard_tone(phone.audio("talk"), 440.0)
        assert heard_tone(media.audio(), 440.0, min_s=1.0)
        assert phone.leg_id not in carrier.engine.legs
        lines = [text for _, text in carrier.timeline]
        target = f"sip:441234567890@127.0.0.1:{carrier.address.port}"
        assert f"node -> destination phone  BYE {target} SIP/2.0" in lines
        assert "destination phone -> node  SIP/2.0 200 OK" in lines
        assert "destination phone: BYE from the node, answered 200" in lines
    finally:
        media.stop()


async def test_customer_phone_listens_dials_rfc4733_and_hangs_up_itself(
    carrier: EmulatedCarrier, peer: Peer
) -> None:
    media = await NodeMedia().start()
    try:
        # The phone's own BYE arrives as a request; answer it like the node would.
        def on_bye(event: ep.EndpointEvent) -> bool:
            if isinstance(event, ep.RequestReceived) and event.request.method == "BYE":
                peer.endpoint.respond(event.tx, 200, now=peer.now())
                peer.events.put_nowait(event)
                return True
            return False

        peer.on_event = on_bye
        await call_phone(peer, carrier, carrier.config.customer_number, media)
        phone = carrier.customer
        await asyncio.wait_for(phone.connected.wait(), 2)
        # The "prompt": 0.8 s of audio; the phone must dial only after listen_s (0.5 s) of it.
        media.engine.play("node", [sine((600.0,), 800, -12.0)], barge_in=False)
        await asyncio.wait_for(phone.script_done.wait(), 4)
        assert "".join(media.digits["node"]) == "12*"
        assert heard_prompt(phone, min_s=0.45)
        assert phone.dialled_at is not None and phone.connected_at is not None
        # 0.5 s of audio, counted by packets that may arrive a few ms apart early on.
        assert phone.dialled_at - phone.connected_at >= 0.45
        # No destination ever connects (connect_timeout 0.5 s): the customer hangs up.
        bye = await peer.next(ep.RequestReceived)
        assert bye.request.method == "BYE"
        assert phone.state is PhoneState.ENDED and phone.ended_by == "phone"
        assert "destination to answer" in (phone.error or "")
        checks = {c.name: c.ok for c in call_checks(carrier)}
        assert checks["customer heard the prompts before dialling"]
        assert not checks["destination phone answered"]
    finally:
        media.stop()


async def test_unknown_number_gets_404_and_a_busy_phone_486(
    carrier: EmulatedCarrier, peer: Peer
) -> None:
    endpoint = peer.endpoint
    for user in ("15550000000", carrier.config.destination_number):
        invite = Request(
            method="INVITE",
            uri=URI(user=user, host="carrier.test"),
            vias=(),
            from_=NameAddr(URI(user="alice", host="carrier.test")).with_tag(endpoint.new_tag()),
            to=NameAddr(URI(user=user, host="carrier.test")),
            call_id=endpoint.new_call_id(),
            cseq=CSeq(1, "INVITE"),
            headers=(("Contact", f"<sip:alice@127.0.0.1:{peer.address.port}>"),),
        )
        endpoint.send_request(invite, carrier.address, peer.now())
        peer.pump()
        while True:
            event = await peer.next(ep.ResponseReceived)
            if event.response.status >= 200:
                break
        if user == "15550000000":
            assert event.response.status == 404
        else:
            # No offer in the INVITE: the phone offers in its 200 (late offer).
            assert event.response.status == 200
            assert sdp.parse_sdp(event.response.body).media[0].port > 0
    # A second call to the same phone while it has one: busy.
    again = Request(
        method="INVITE",
        uri=URI(user=carrier.config.destination_number, host="carrier.test"),
        vias=(),
        from_=NameAddr(URI(user="alice", host="carrier.test")).with_tag(endpoint.new_tag()),
        to=NameAddr(URI(user=carrier.config.destination_number, host="carrier.test")),
        call_id=endpoint.new_call_id(),
        cseq=CSeq(1, "INVITE"),
        headers=(("Contact", f"<sip:alice@127.0.0.1:{peer.address.port}>"),),
    )
    endpoint.send_request(again, carrier.address, peer.now())
    peer.pump()
    while True:
        event = await peer.next(ep.ResponseReceived)
        if event.response.status >= 200:
            break
    assert event.response.status == 486


async def test_whole_callback_call_against_a_scripted_bridging_node(peer: Peer) -> None:
    """The phones' side of the demo end to end: prompt, digits, bridge, tones, ``**``, BYE."""
    carrier = EmulatedCarrier(
        CarrierConfig(
            customer_answer_after=0.05,
            destination_answer_after=0.1,
            script=CustomerScript(digits="44*", listen_s=0.5, talk_s=1.0, settle_s=0.2),
        )
    )
    await carrier.start()
    media = await NodeMedia().start("cb", "dst")
    sent = []

    def answer_byes(event: ep.EndpointEvent) -> bool:
        return isinstance(event, ep.ResponseReceived) and event.response.cseq.method == "BYE"

    peer.on_event = answer_byes
    try:
        cb, _ = await call_phone(peer, carrier, carrier.config.customer_number, media, "cb")
        media.engine.play("cb", [sine((600.0,), 3000, -12.0)], barge_in=True)
        for _ in range(200):
            if "*" in media.digits["cb"]:
                break
            await asyncio.sleep(0.02)
        assert "".join(media.digits["cb"]) == "44*"
        dst, _ = await call_phone(peer, carrier, carrier.config.destination_number, media, "dst")
        media.engine.bridge("cb", "dst")
        for _ in range(250):
            if "".join(media.digits["cb"]).endswith("***"):
                break
            await asyncio.sleep(0.02)
        assert "".join(media.digits["cb"]) == "44***"
        for dialog in (cb, dst):
            bye = dialog.create_request("BYE", now=peer.now())
            sent.append(peer.endpoint.send_request(bye, carrier.address, peer.now()))
        peer.pump()
        assert await carrier.wait_call_over(2)
        checks = call_checks(carrier)
        assert all(c.ok for c in checks), checks
        # The barge-in digit cut the prompt: the customer heard it only until it dialled.
        assert heard_prompt(carrier.customer, 0.5)
        assert not heard_tone(carrier.customer.audio("talk"), 600.0)
        lines = [text for _, text in carrier.timeline]
        assert "customer phone: dials 44* (RFC 4733)" in lines
        assert "customer phone: presses ** to end the call" in lines
    finally:
        media.stop()
        await carrier.stop()


# --- the phone's state machine ----------------------------------------------------------------


def test_every_missing_phone_pair_is_a_phone_error() -> None:
    phone = EmulatedCarrier().destination
    missing = 0
    for state in PhoneState:
        for inp in PhoneInput:
            if PHONE_TABLE.accepts(state, inp):
                continue
            phone.state = state
            with pytest.raises(PhoneError) as info:
                phone._fire(inp)
            assert info.value.state is state and info.value.input is inp
            assert phone.state is state
            # What the node sends, or what comes after the call, is dropped instead.
            assert phone._if_entry(inp) is False and phone.state is state
            missing += 1
    assert missing == len(PhoneState) * len(PhoneInput) - len(PHONE_TABLE)


def test_phone_table_reaches_every_state_and_the_diagram_names_them() -> None:
    assert PHONE_TABLE.reachable() == PHONE_TABLE.states() == frozenset(PhoneState)
    assert issubclass(PhoneError, fsm.TransitionError) and PHONE_TABLE.error is PhoneError
    text = PHONE_TABLE.mermaid()
    for state in PhoneState:
        assert state.name in text
