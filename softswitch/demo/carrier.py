"""The emulated carrier of ``softswitch demo``: a trunk, the customer's calls and phones.

Theory of operation. :class:`EmulatedCarrier` is the other side of the node's trunk, built only
from the project's own SIP stack (one :class:`~softswitch.sip.endpoint.Endpoint` on one UDP
socket) and media engine (one :class:`~media.aio.MediaShell` for every phone's RTP), on real
loopback sockets. It plays three parts:

* **Registrar.** A REGISTER without credentials gets 401 with an MD5 ``qop=auth`` challenge for
  realm ``carrier.test``; the Authorization of the retry is verified here with hashlib against
  the configured username and password (403 when wrong, a fresh 401 with ``stale=true`` for a
  nonce we never issued). A good REGISTER records the node's Contact and is answered 200 with
  that Contact and its ``expires``; ``Expires: 0`` removes the binding.
* **The customer ringing a trigger number.** :meth:`EmulatedCarrier.trigger` sends an INVITE
  with an SDP offer to the node, waits for 180/183, lets it ring ``ring_s`` ("hangs up after
  the first ring"), CANCELs and expects 200 (CANCEL) and 487 (INVITE), which the transaction
  layer ACKs. A 2xx is a failure: the switch must never answer a trigger (it is ACKed and
  ended with BYE so nothing is left hanging).
* **The customer staying on the line.** A :class:`Caller` rings a trigger number and keeps
  ringing: the switch's 183 with SDP opens the early media (its ringback is heard, keys reach
  it as RFC 4733), a 2xx is ACKed and the call is up until the node's BYE or the caller's.
  Its life is the table :data:`CALLER_TABLE`; what the customer does on it is a scenario's
  script (:mod:`softswitch.demo.location`: ``#`` in the early media and the Location menu).
* **Phones.** INVITEs from the node are routed by Request-URI user: the customer's number to
  :class:`CustomerPhone`, the destination's to :class:`DestinationPhone`, any other phone put
  behind the carrier with :meth:`EmulatedCarrier.add_phone` to it, anything else 404.
  A phone sends 180, answers 200 with an SDP answer for its own RTP leg after ``answer_after``
  seconds, retransmits the 200 until the ACK (RFC 3261 section 13.3.1.4), answers BYE with 200
  and can hang up itself. Its life is the table :data:`PHONE_TABLE`: what the phone does itself
  without an entry raises :class:`PhoneError`; what the node sends without one (a CANCEL after
  the 200, say) is logged and dropped.

Every RTP payload a phone accepts is decoded (G.711) and kept per *phase* of its script, so the
demo checks audio instead of assuming it: :func:`heard_prompt` (more than a second of non-silent
audio before the customer dialled) and :func:`heard_tone` (a tone's energy dominates enough
20 ms frames, by a single-bin DFT per frame). The customer's script: listen until ``listen_s``
of non-silent audio (name and dial prompt), dial the destination as RFC 4733 events, wait until
the destination phone is connected, send a 1 kHz tone while measuring what comes back, then
press ``**``. The destination sends 440 Hz from its answer until BYE.

Every SIP message sent or received and every phone event goes into ``timeline`` as
``(time.time(), text)``, so the demo can merge it with the node's log.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from media.aio import MediaShell
from media.engine import DigitReceived, Event, Leg, MediaEngine
from media.g711 import ALAW_DECODE, ULAW_DECODE
from media.rtp import RtpError, parse_header
from media.session import Addr
from media.tones import sine
from softswitch import fsm
from softswitch.node.testline import next_hop
from softswitch.sip import endpoint as ep
from softswitch.sip import sdp
from softswitch.sip import transaction as txl
from softswitch.sip.dialog import AckTimeout, Dialog, DialogError, InviteResponder
from softswitch.sip.message import URI, Address, CSeq, NameAddr, Request, Response
from softswitch.sip.uri import parse_name_addr

__all__ = [
    "CALLER_TABLE",
    "FRAME",
    "PHONE_TABLE",
    "RATE",
    "AudioCheck",
    "Caller",
    "CallerError",
    "CallerState",
    "CarrierConfig",
    "CustomerPhone",
    "CustomerScript",
    "DestinationPhone",
    "EmulatedCarrier",
    "Handset",
    "Phone",
    "PhoneError",
    "PhoneState",
    "TapEngine",
    "TriggerResult",
    "call_checks",
    "heard_prompt",
    "heard_tone",
    "nonsilent_seconds",
    "tone_seconds",
    "verify_digest",
]

log = logging.getLogger("softswitch.demo.carrier")

RATE = 8000
FRAME = 160
FRAME_S = FRAME / RATE
#: A 20 ms frame whose RMS is below this is silence (about -50 dBm0; G.711 idle is 0).
SILENCE_RMS = 100.0
#: Share of a frame's energy a tone must hold to "dominate" it.
DOMINANCE = 0.6
#: RFC 4733 end packets the engine repeats after each digit (3 x 20 ms).
_DTMF_END_S = 0.06
_ALLOW = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "REGISTER")
_CALL_ID = re.compile(rb"^(?:call-id|i)[ \t]*:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)
_CSEQ_METHOD = re.compile(rb"^cseq[ \t]*:[ \t]*\d+[ \t]+(\w+)", re.IGNORECASE | re.MULTILINE)
_AUTH_PARAM = re.compile(r'([A-Za-z-]+)[ \t]*=[ \t]*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')

Pcm = npt.NDArray[np.int16]


# --- audio checks ---------------------------------------------------------------------------


def _frames(samples: Pcm) -> npt.NDArray[np.float64]:
    whole = len(samples) // FRAME * FRAME
    return np.asarray(samples[:whole], dtype=np.float64).reshape(-1, FRAME)


def nonsilent_seconds(samples: Pcm) -> float:
    """Seconds of 20 ms frames in ``samples`` (8 kHz int16) louder than silence."""
    frames = _frames(samples)
    if not len(frames):
        return 0.0
    rms = np.sqrt(np.mean(frames * frames, axis=1))
    return float(np.count_nonzero(rms > SILENCE_RMS)) * FRAME_S


def tone_seconds(samples: Pcm, freq: float, *, dominance: float = DOMINANCE) -> float:
    """Seconds of non-silent frames whose energy is mostly a sine at ``freq`` Hz.

    Per 20 ms frame: the DFT at exactly ``freq`` (a single Goertzel bin, any frequency), scaled
    so a pure sine gives 1.0, against the frame's total energy.
    """
    frames = _frames(samples)
    if not len(frames):
        return 0.0
    energy = np.sum(frames * frames, axis=1)
    n = np.arange(FRAME)
    bin_ = frames @ np.exp(-2j * np.pi * freq * n / RATE)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(energy > 0, 2 * np.abs(bin_) ** 2 / (FRAME * energy), 0.0)
    loud = energy / FRAME > SILENCE_RMS**2
    return float(np.count_nonzero(loud & (share >= dominance))) * FRAME_S


def heard_tone(
    samples: Pcm, freq: float, *, min_s: float = 0.5, dominance: float = DOMINANCE
) -> bool:
    """True if a ``freq`` Hz tone dominated at least ``min_s`` seconds of ``samples``."""
    return tone_seconds(samples, freq, dominance=dominance) >= min_s


def heard_prompt(phone: Phone, min_s: float = 1.0) -> bool:
    """True if ``phone`` heard at least ``min_s`` of non-silent audio before it dialled."""
    return nonsilent_seconds(phone.audio("prompt")) >= min_s


# --- configuration and results --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CustomerScript:
    """What the customer does once the callback is answered (times in seconds)."""

    digits: str = "441234567890*"
    listen_s: float = 1.0
    digit_ms: int = 100
    gap_ms: int = 100
    talk_hz: float = 1000.0
    talk_s: float = 2.0
    #: Pause after the destination is connected (the node bridges on its 200) before talking.
    settle_s: float = 0.3
    hangup_digits: str = "**"
    prompt_timeout: float = 15.0
    connect_timeout: float = 30.0
    bye_timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class CarrierConfig:
    """The emulated carrier: its address, the trunk account, the phones' numbers."""

    host: str = "127.0.0.1"
    port: int = 0
    realm: str = "carrier.test"
    username: str = "alice"
    password: str = "secret"
    #: The most a binding is granted; a shorter request gets what it asked for.
    max_expires: int = 3600
    customer_number: str = "819012345678"
    destination_number: str = "441234567890"
    customer_answer_after: float = 0.3
    destination_answer_after: float = 1.0
    destination_tone_hz: float = 440.0
    ring_s: float = 1.0
    #: Prefixes the node may put before a country code (its trunk's international_prefix).
    international_prefixes: tuple[str, ...] = ("+", "00", "011")
    #: RTP port range for the phones; None: ports chosen by the kernel.
    rtp_port_range: tuple[int, int] | None = None
    script: CustomerScript = field(default_factory=CustomerScript)


@dataclass(frozen=True, slots=True)
class TriggerResult:
    """What happened to one trigger call; times are ``time.time()``."""

    call_id: str
    started_at: float
    statuses: tuple[tuple[float, int], ...]
    ringing_at: float | None
    cancel_sent_at: float | None
    cancel_status: int | None
    final_status: int | None
    final_at: float | None
    answered: bool
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Rang, CANCEL answered 200, INVITE ended 487, never answered."""
        return (
            self.ringing_at is not None
            and self.cancel_status == 200
            and self.final_status == 487
            and not self.answered
            and self.error is None
        )


@dataclass(frozen=True, slots=True)
class AudioCheck:
    """One verdict for the demo: what was checked, whether it held, the measured figure."""

    name: str
    ok: bool
    detail: str


# --- digest verification --------------------------------------------------------------------


def _parse_credentials(value: str) -> dict[str, str] | None:
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        return None
    params: dict[str, str] = {}
    for match in _AUTH_PARAM.finditer(rest):
        name = match.group(1).lower()
        quoted = match.group(2)
        raw = quoted.replace('\\"', '"').replace("\\\\", "\\") if quoted is not None else None
        params.setdefault(name, raw if raw is not None else match.group(3))
    return params


def verify_digest(
    header: str, *, method: str, username: str, password: str, realm: str, nonces: set[str]
) -> str | None:
    """Check an Authorization header (MD5, qop=auth or none); ``None`` if good, else why not.

    The expected response is computed here with hashlib (RFC 2617 section 3.2.2), not with the
    stack's digest client, so the demo tests that client against an independent computation.
    """
    params = _parse_credentials(header)
    if params is None:
        return "not Digest credentials"
    for name in ("username", "realm", "nonce", "uri", "response"):
        if name not in params:
            return f"no {name}"
    if params["username"] != username:
        return f"unknown user {params['username']!r}"
    if params["realm"] != realm:
        return f"wrong realm {params['realm']!r}"
    if params.get("algorithm", "MD5").upper() != "MD5":
        return f"algorithm {params['algorithm']} not offered"
    if params["nonce"] not in nonces:
        return "stale"

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    ha1 = md5(f"{username}:{realm}:{password}")
    ha2 = md5(f"{method}:{params['uri']}")
    qop = params.get("qop")
    if qop is None:
        expected = md5(f"{ha1}:{params['nonce']}:{ha2}")
    elif qop == "auth" and "nc" in params and "cnonce" in params:
        expected = md5(f"{ha1}:{params['nonce']}:{params['nc']}:{params['cnonce']}:auth:{ha2}")
    else:
        return f"qop {qop!r} without nc/cnonce, or not offered"
    if not hmac.compare_digest(expected, params["response"].lower()):
        return "wrong password (digest response does not match)"
    return None


# --- phones ---------------------------------------------------------------------------------


class PhoneError(fsm.TransitionError):
    """An input the phone's state machine has no entry for."""


class PhoneState(enum.Enum):
    IDLE = "idle"
    RINGING = "ringing"
    ANSWERED = "answered"  # 200 sent, waiting for the ACK
    CONNECTED = "connected"
    ENDED = "ended"


class _In(enum.Enum):
    INVITE = "INVITE"
    ANSWER = "200 sent"
    CANCEL = "CANCEL"
    ACK = "ACK"
    BYE = "BYE from the node"
    HANGUP = "BYE from the phone"
    ACK_TIMEOUT = "no ACK in 64*T1"
    FAILURE = "could not answer"


_PhoneHandler = Callable[["Phone", Request | None], None]


class Handset:
    """What every emulated handset shares: one RTP leg, the audio it hears, the keys it sends.

    Audio it receives is decoded (by the carrier's :class:`TapEngine`) and kept per *phase* of
    its script (:meth:`set_phase`, :meth:`audio`, :meth:`loud_seconds`); keys go out as RFC 4733
    events (:meth:`press`). ``ended`` is set when its call is over.
    """

    def __init__(self, carrier: EmulatedCarrier, name: str, leg_id: str) -> None:
        self.carrier = carrier
        self.name = name
        self.leg_id = leg_id
        self.codec: str | None = None
        self.dtmf_pt: int | None = None
        self.error: str | None = None
        self.ended = asyncio.Event()
        self.phase = "idle"
        self._audio: dict[str, list[Pcm]] = {}
        self._loud: dict[str, int] = {}
        self.digits_received: list[str] = []

    # --- audio --------------------------------------------------------------------------------

    def set_phase(self, phase: str) -> None:
        """Start keeping received audio under ``phase``."""
        self.phase = phase

    def audio(self, phase: str | None = None) -> Pcm:
        """Decoded audio received in ``phase`` (every phase if None), 8 kHz int16."""
        if phase is None:
            chunks = [c for p in self._audio.values() for c in p]
        else:
            chunks = self._audio.get(phase, [])
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)

    def loud_seconds(self, phase: str) -> float:
        """Non-silent audio received in ``phase`` so far, counted as it arrives."""
        return self._loud.get(phase, 0) * FRAME_S

    def _on_payload(self, payload: bytes) -> None:
        table = ALAW_DECODE if self.codec == "PCMA" else ULAW_DECODE
        pcm = table[np.frombuffer(payload, dtype=np.uint8)].astype(np.int16)
        self._audio.setdefault(self.phase, []).append(pcm)
        rms = float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) if len(pcm) else 0.0
        if rms > SILENCE_RMS:
            self._loud[self.phase] = self._loud.get(self.phase, 0) + max(1, len(pcm) // FRAME)

    def _play(self, freq: float | None, seconds: float) -> None:
        """Send a sine (or silence: a real phone keeps sending RTP) for ``seconds``."""
        engine = self.carrier.engine
        if self.leg_id not in engine.legs:
            return
        if freq is None:
            pcm: Pcm = np.zeros(round(seconds * RATE), dtype=np.int16)
        else:
            pcm = sine((freq,), seconds * 1000, -10.0)
        engine.play(self.leg_id, [pcm], barge_in=False, mix=False)

    def _note(self, text: str) -> None:
        self.carrier.note(f"{self.name}: {text}")

    async def until(self, condition: Callable[[], bool], timeout: float, what: str) -> bool:
        """Wait for ``condition`` (polled every 20 ms) unless the call ends or time runs out.

        False (and :attr:`error` says why) when the call ended or ``timeout`` passed first.
        """
        deadline = time.monotonic() + timeout
        while not condition():
            if self.ended.is_set():
                self.error = self.error or f"the call ended while waiting for {what}"
                return False
            if time.monotonic() >= deadline:
                self.error = self.error or f"timed out waiting for {what}"
                return False
            await asyncio.sleep(FRAME_S)
        return True

    async def press(self, keys: str, digit_ms: int = 100, gap_ms: int = 100) -> None:
        """Send ``keys`` as RFC 4733 events, one after the other (stops if the call ends)."""
        for key in keys:
            if self.ended.is_set() or self.leg_id not in self.carrier.engine.legs:
                return
            self.carrier.engine.send_dtmf(self.leg_id, key, digit_ms, mode="rfc4733")
            await asyncio.sleep((digit_ms + gap_ms) / 1000 + _DTMF_END_S)

    def on_digit(self, digit: str) -> None:
        self.digits_received.append(digit)
        self._note(f"received DTMF {digit}")


class Phone(Handset):
    """One emulated phone behind the carrier: answers one call from the node.

    Audio it receives is decoded and kept per phase (:meth:`audio`); times are ``time.time()``.
    A second INVITE while it has had a call gets 486 (one call per phone and demo).
    """

    def __init__(
        self, carrier: EmulatedCarrier, name: str, number: str, answer_after: float
    ) -> None:
        super().__init__(carrier, name, f"phone-{number}")
        self.number = number
        self.answer_after = answer_after
        self.state = PhoneState.IDLE
        self.dialog: Dialog | None = None
        self.call_id: str | None = None
        self.invite_tx: txl.ServerTransaction | None = None
        self.responder: InviteResponder | None = None
        self.remote: Address | None = None
        self.rtp_port: int | None = None
        self._our_sdp = b""
        self._offer: sdp.SessionDescription | None = None
        self.bye_tx: txl.ClientTransaction | None = None
        self.invited_at: float | None = None
        self.answered_at: float | None = None
        self.connected_at: float | None = None
        self.ended_at: float | None = None
        self.ended_by: str | None = None
        self.connected = asyncio.Event()

    # --- state --------------------------------------------------------------------------------

    def _fire(self, event: _In, req: Request | None = None) -> None:
        """Move as :data:`PHONE_TABLE` says, then run the entry's handler in the new state."""
        transition = PHONE_TABLE.fire(self.state, event, who=self.name)
        self.state = PHONE_TABLE.move(
            log, self.name, self.state, transition.target, transition, event
        )
        if transition.handler is not None:
            transition.handler(self, req)

    def _if_entry(self, event: _In, req: Request | None = None) -> bool:
        """:meth:`_fire` where the table has an entry, else drop ``event`` and return False.

        For what the node sends (a CANCEL after our 200) and what may come after the call is
        over (a hang-up, the ACK timer of a re-INVITE's 200): not the phone's protocol errors.
        """
        if not PHONE_TABLE.accepts(self.state, event):
            log.debug("%s: %s dropped while %s", self.name, event.value, self.state.value)
            return False
        self._fire(event, req)
        return True

    # --- SIP (called by the carrier with the endpoint's events) -------------------------------

    def on_invite(self, tx: txl.ServerTransaction, req: Request, source: Address) -> None:
        carrier = self.carrier
        if not PHONE_TABLE.accepts(self.state, _In.INVITE):
            carrier.endpoint.respond(tx, 486, now=carrier.now())  # one call per phone
            return
        self._fire(_In.INVITE)
        self.invited_at = time.time()
        self.invite_tx = tx
        self.call_id = req.call_id
        self.remote = source
        carrier.label(req.call_id, self.name)
        carrier.endpoint.respond(tx, 100, now=carrier.now())
        carrier.spawn(self._answer(tx, req))

    async def _answer(self, tx: txl.ServerTransaction, req: Request) -> None:
        carrier = self.carrier
        endpoint = carrier.endpoint
        try:
            self.rtp_port = await carrier.media.open_leg(self.leg_id)
            self._negotiate(req.body)
            local = endpoint.config
            tag = endpoint.new_tag()
            dialog = Dialog.from_uas(
                req,
                tag,
                URI(user=self.number, host=local.host, port=local.port),
                local_via=endpoint.local_via("UDP"),
                new_id=endpoint.new_tag,
            )
        except (sdp.SdpError, DialogError, OSError) as exc:
            self.error = f"could not answer: {exc}"
            self._note(self.error)
            if tx.can_send_final():
                endpoint.respond(
                    tx, 488 if isinstance(exc, sdp.SdpError) else 500, now=carrier.now()
                )
            self._fire(_In.FAILURE)
            carrier.flush()
            return
        self.dialog = dialog
        if self.state is not PhoneState.RINGING:
            carrier.close_leg(self.leg_id)  # cancelled while the socket was being opened
            return
        now = carrier.now()
        endpoint.respond(
            tx, 180, headers=dialog.response_headers(req, 180, now=now), now=now, to_tag=tag
        )
        carrier.flush()
        await asyncio.sleep(self.answer_after)
        if self.state is not PhoneState.RINGING or not tx.can_send_final():
            return
        now = carrier.now()
        headers = (
            *dialog.response_headers(req, 200, now=now),
            ("Content-Type", "application/sdp"),
        )
        response = endpoint.respond(
            tx, 200, headers=headers, body=self._our_sdp, now=now, to_tag=tag
        )
        t = carrier.timers
        self.responder = InviteResponder(response, now, t1=t.T1, t2=t.T2)
        self._fire(_In.ANSWER)
        self.answered_at = time.time()
        self._note("answered (200 OK)")
        carrier.flush()

    def _negotiate(self, offer_body: bytes) -> bytes:
        """Our SDP for the 200: the answer to the node's offer, or our offer (late offer)."""
        assert self.rtp_port is not None
        host = self.carrier.config.host
        session_id = secrets.randbelow(1 << 31)
        if not offer_body:
            self._offer = sdp.make_offer(host, self.rtp_port, session_id=session_id)
            self._our_sdp = bytes(self._offer)
            return self._our_sdp
        result = sdp.negotiate_answer(
            sdp.parse_sdp(offer_body), host, self.rtp_port, session_id=session_id
        )
        if result.audio is None:
            raise sdp.NoCommonCodec("no audio stream to answer")
        self._apply(result.audio)
        self._our_sdp = bytes(result.answer)
        return self._our_sdp

    def _apply(self, media: sdp.NegotiatedMedia) -> None:
        self.codec = media.codec
        self.dtmf_pt = media.telephone_event_pt
        carrier = self.carrier
        if self.leg_id in carrier.engine.legs:
            carrier.engine.set_remote(
                self.leg_id,
                media.remote_address,
                media.remote_port,
                media.codec,
                media.telephone_event_pt,
                carrier.media.time(),
            )

    def on_cancel(self) -> None:
        self._if_entry(_In.CANCEL)

    def on_ack(self, req: Request) -> None:
        if self.responder is not None:
            self.responder.ack_received()
        self._if_entry(_In.ACK, req)

    def on_request(self, tx: txl.ServerTransaction, req: Request) -> None:
        """A request inside our dialog (BYE, re-INVITE, ...)."""
        carrier = self.carrier
        endpoint = carrier.endpoint
        assert self.dialog is not None
        now = carrier.now()
        answer = self.dialog.receive_request(req, now)
        if answer is None and req.method == "INVITE":
            try:
                body = self._reanswer(req.body)
            except sdp.SdpError:
                answer = self.dialog.create_response(req, 488, "Not Acceptable Here", now=now)
            else:
                answer = self.dialog.create_response(
                    req,
                    200,
                    "OK",
                    headers=(("Content-Type", "application/sdp"),),
                    body=body,
                    now=now,
                )
                t = carrier.timers
                self.responder = InviteResponder(answer, now, t1=t.T1, t2=t.T2)
        elif answer is None:
            answer = self.dialog.create_response(req, 200, "OK", now=now)
        endpoint.send_response(tx, answer, now)
        if req.method == "BYE":
            self._if_entry(_In.BYE)

    def _reanswer(self, body: bytes) -> bytes:
        if not body:
            return self._our_sdp
        assert self.rtp_port is not None
        result = sdp.negotiate_answer(
            sdp.parse_sdp(body), self.carrier.config.host, self.rtp_port, session_id=1, version=1
        )
        if result.audio is not None:
            self._apply(result.audio)
        self._our_sdp = bytes(result.answer)
        return self._our_sdp

    def on_response(self, tx: txl.ClientTransaction, response: Response) -> bool:
        if tx is not self.bye_tx:
            return False
        if response.status >= 200:
            self._note(f"BYE answered {response.status}")
        return True

    def get_timer(self) -> float | None:
        return None if self.responder is None else self.responder.get_timer()

    def handle_timer(self, now: float) -> None:
        if self.responder is None or self.invite_tx is None:
            return
        for item in self.responder.handle_timer(now):
            if isinstance(item, AckTimeout):
                self.error = "no ACK for our 200"
                self._note("no ACK for our 200 within 64*T1: hanging up")
                self._if_entry(_In.ACK_TIMEOUT)
            else:
                self.carrier.endpoint.send_response(self.invite_tx, item, now)

    async def hangup(self) -> None:
        """The phone hangs up: BYE to the node (nothing if the call is not up)."""
        if self._if_entry(_In.HANGUP):
            self.carrier.flush()

    def _bye(self) -> None:
        assert self.dialog is not None and self.remote is not None
        carrier = self.carrier
        bye = self.dialog.create_request("BYE", now=carrier.now())
        self.bye_tx = carrier.endpoint.send_request(bye, next_hop(bye, self.remote), carrier.now())

    # --- handlers: what each entry of PHONE_TABLE does, once the phone is in its new state ---

    def _connected(self, req: Request | None) -> None:
        assert req is not None
        if self._offer is not None and req.body:
            try:
                self._apply(sdp.parse_answer(self._offer, sdp.parse_sdp(req.body)))
            except sdp.SdpError as exc:
                self.error = f"bad SDP answer in the ACK: {exc}"
        self.connected_at = time.time()
        self.connected.set()
        self.on_connected()

    def _cancelled(self, req: Request | None) -> None:
        self._note("the node cancelled the call before it was answered")
        self._finish("cancel")

    def _failed(self, req: Request | None) -> None:
        self._finish("error")

    def _node_hung_up(self, req: Request | None) -> None:
        self._note("BYE from the node, answered 200")
        self._finish("node")

    def _ack_timed_out(self, req: Request | None) -> None:
        self._bye()
        self._finish("timeout", stop_200=False)

    def _hung_up(self, req: Request | None) -> None:
        self._note("hangs up (BYE)")
        self._bye()
        self._finish("phone")

    def _finish(self, by: str, *, stop_200: bool = True) -> None:
        self.ended_at = time.time()
        self.ended_by = by
        self.set_phase("ended")
        if self.responder is not None and stop_200:
            self.responder.ack_received()
        self.carrier.close_leg(self.leg_id)
        self.ended.set()
        self.on_ended()

    # --- hooks --------------------------------------------------------------------------------

    def on_connected(self) -> None:
        """The call is up (ACK received)."""

    def on_ended(self) -> None:
        """The call is over."""


_P = PhoneState
#: One emulated phone's call: (state, input) -> (what it does in the new state, new state).
PHONE_TABLE: fsm.Table[PhoneState, _In, _PhoneHandler] = fsm.Table(
    "phone",
    {
        (_P.IDLE, _In.INVITE): (None, _P.RINGING),
        (_P.RINGING, _In.ANSWER): (None, _P.ANSWERED),
        (_P.RINGING, _In.CANCEL): (Phone._cancelled, _P.ENDED),
        (_P.RINGING, _In.FAILURE): (Phone._failed, _P.ENDED),
        (_P.ANSWERED, _In.ACK): (Phone._connected, _P.CONNECTED),
        # A BYE may overtake the ACK (RFC 3261 section 15): the call still ends cleanly.
        (_P.ANSWERED, _In.BYE): (Phone._node_hung_up, _P.ENDED),
        (_P.ANSWERED, _In.ACK_TIMEOUT): (Phone._ack_timed_out, _P.ENDED),
        (_P.ANSWERED, _In.HANGUP): (Phone._hung_up, _P.ENDED),
        (_P.CONNECTED, _In.ACK): (None, _P.CONNECTED),  # the ACK of a re-INVITE's 200
        (_P.CONNECTED, _In.BYE): (Phone._node_hung_up, _P.ENDED),
        (_P.CONNECTED, _In.HANGUP): (Phone._hung_up, _P.ENDED),
    },
    initial=_P.IDLE,
    final={_P.ENDED},
    error=PhoneError,
)


class DestinationPhone(Phone):
    """The number the customer dials: answers, then sends a steady tone until BYE."""

    def __init__(
        self,
        carrier: EmulatedCarrier,
        number: str,
        answer_after: float,
        tone_hz: float,
    ) -> None:
        super().__init__(carrier, "destination phone", number, answer_after)
        self.tone_hz = tone_hz

    def on_connected(self) -> None:
        self.set_phase("talk")
        self._note(f"connected; sends a {self.tone_hz:.0f} Hz tone")
        self._play(self.tone_hz, 60.0)

    def on_ended(self) -> None:
        if self.connected_at is None:
            return
        hz = self.carrier.config.script.talk_hz
        heard = tone_seconds(self.audio("talk"), hz)
        self._note(f"heard the customer's {hz:.0f} Hz for {heard:.1f} s")


class CustomerPhone(Phone):
    """The customer's phone: answers the callback and follows a :class:`CustomerScript`."""

    def __init__(
        self,
        carrier: EmulatedCarrier,
        number: str,
        answer_after: float,
        script: CustomerScript,
        destination: DestinationPhone,
    ) -> None:
        super().__init__(carrier, "customer phone", number, answer_after)
        self.script = script
        self.destination = destination
        self.dialled_at: float | None = None
        self.talk_started_at: float | None = None
        self.hangup_sent_at: float | None = None
        self.script_done = asyncio.Event()

    def on_connected(self) -> None:
        self._note("connected; listening for the prompt")
        self.carrier.spawn(self._run_script())

    async def _run_script(self) -> None:
        s = self.script
        try:
            self.set_phase("prompt")
            self._play(None, s.prompt_timeout + s.connect_timeout)
            if not await self.until(
                lambda: self.loud_seconds("prompt") >= s.listen_s, s.prompt_timeout, "the prompt"
            ):
                self._note(f"FAILED: {self.error}")
                await self.hangup()
                return
            self._note(f"heard {self.loud_seconds('prompt'):.1f} s of prompt audio")
            self.set_phase("dialling")
            self.dialled_at = time.time()
            self._note(f"dials {s.digits} (RFC 4733)")
            await self.press(s.digits, s.digit_ms, s.gap_ms)
            if not await self.until(
                lambda: self.destination.state is PhoneState.CONNECTED,
                s.connect_timeout,
                "the destination to answer",
            ):
                self._note(f"FAILED: {self.error}")
                await self.hangup()
                return
            await asyncio.sleep(s.settle_s)
            if self.state is not PhoneState.CONNECTED:
                return
            self.set_phase("talk")
            self.talk_started_at = time.time()
            self._note(f"talks: sends a {s.talk_hz:.0f} Hz tone for {s.talk_s:.1f} s")
            self._play(s.talk_hz, s.talk_s)
            await asyncio.sleep(s.talk_s)
            hz = self.destination.tone_hz
            heard = tone_seconds(self.audio("talk"), hz)
            self._note(f"heard the destination's {hz:.0f} Hz for {heard:.1f} s")
            if self.state is not PhoneState.CONNECTED:
                return
            self.set_phase("release")
            self._play(None, s.bye_timeout + 5)
            self.hangup_sent_at = time.time()
            self._note(f"presses {s.hangup_digits} to end the call")
            await self.press(s.hangup_digits, s.digit_ms, s.gap_ms)
            if not await self.until(
                lambda: self.state is PhoneState.ENDED, s.bye_timeout, "the node's BYE"
            ):
                self._note(f"FAILED: {self.error}; hanging up")
                await self.hangup()
        finally:
            self.script_done.set()


# --- the customer calling the node: a trigger call that may be answered ------------------------


class CallerError(fsm.TransitionError):
    """An input the caller's state machine has no entry for."""


class CallerState(enum.Enum):
    IDLE = "idle"
    CALLING = "calling"  # INVITE sent, no early media yet
    EARLY = "early media"  # 183 with the switch's SDP: its ringback heard, keys reach it
    CANCELLING = "cancelling"  # CANCEL sent, waiting for the INVITE's final response
    CONNECTED = "connected"  # 2xx received and ACKed
    ENDED = "ended"


class _Call(enum.Enum):
    INVITE = "INVITE sent"
    PROVISIONAL = "1xx"
    EARLY_MEDIA = "183 with SDP"
    ANSWERED = "2xx"
    REFUSED = "3xx-6xx"
    TIMEOUT = "no final response"
    CANCEL = "CANCEL from the phone"
    BYE = "BYE from the node"
    HANGUP = "BYE from the phone"


_CallerHandler = Callable[["Caller", Response | None], None]


class Caller(Handset):
    """The customer's phone calling the node (a trigger number) and staying on the line.

    It sends an INVITE with an SDP offer for its own RTP leg; a 183 with SDP opens the early
    media (the switch's ringback is heard, and keys pressed now reach the switch as RFC 4733);
    a 2xx is ACKed (every retransmission too, RFC 3261 section 13.2.2.4) and the call is up;
    the node's BYE is answered 200. :meth:`hangup` CANCELs an unanswered call and BYEs an
    answered one. Its life is :data:`CALLER_TABLE`: what the caller does itself without an
    entry raises :class:`CallerError`; what the node sends without one is logged and dropped.
    What the customer does on the call (keys, listening) is the scenario's script.
    """

    def __init__(self, carrier: EmulatedCarrier, number: str, name: str = "customer phone") -> None:
        carrier._trigger_count += 1
        super().__init__(carrier, name, f"caller-{carrier._trigger_count}")
        self.number = number
        self.state = CallerState.IDLE
        self.call_id: str | None = None
        self.invite: Request | None = None
        self.invite_tx: txl.ClientTransaction | None = None
        self.cancel_tx: txl.ClientTransaction | None = None
        self.bye_tx: txl.ClientTransaction | None = None
        self.dest: Address | None = None
        self.dialog: Dialog | None = None
        self._offer: sdp.SessionDescription | None = None
        self.statuses: list[tuple[float, int]] = []
        self.final_status: int | None = None
        self.invited_at: float | None = None
        self.early_at: float | None = None
        self.answered_at: float | None = None
        self.ended_at: float | None = None
        self.ended_by: str | None = None
        self.connected = asyncio.Event()

    async def call(self, number: str, target: Address | None = None) -> None:
        """Ring ``number`` at ``target`` (else the node's registered Contact)."""
        carrier = self.carrier
        dest = target or carrier.node_address
        if dest is None:
            raise RuntimeError("the node is not registered and no target was given")
        port = await carrier.media.open_leg(self.leg_id)
        self._offer = sdp.make_offer(
            carrier.config.host, port, session_id=secrets.randbelow(1 << 31)
        )
        invite = carrier.trigger_invite(number, self.number, dest, self._offer)
        self.call_id = invite.call_id
        self.dest = dest
        carrier.label(invite.call_id, self.name)
        carrier.add_caller(self)
        self._note(f"rings trigger number {number} as {self.number} and stays on the line")
        self._fire(_Call.INVITE)
        self.invite_tx = carrier.endpoint.send_request(invite, dest, carrier.now())
        self.invite = self.invite_tx.request
        self.invited_at = time.time()
        carrier.flush()

    async def hangup(self) -> None:
        """Hang up: CANCEL while unanswered, BYE once answered (nothing once over)."""
        if self._if_entry(_Call.CANCEL) or self._if_entry(_Call.HANGUP):
            self.carrier.flush()

    # --- state --------------------------------------------------------------------------------

    def _fire(self, event: _Call, response: Response | None = None) -> None:
        """Move as :data:`CALLER_TABLE` says, then run the entry's handler in the new state."""
        transition = CALLER_TABLE.fire(self.state, event, who=self.name)
        self.state = CALLER_TABLE.move(
            log, self.name, self.state, transition.target, transition, event
        )
        if transition.handler is not None:
            transition.handler(self, response)

    def _if_entry(self, event: _Call, response: Response | None = None) -> bool:
        """:meth:`_fire` where the table has an entry, else drop ``event`` and return False."""
        if not CALLER_TABLE.accepts(self.state, event):
            log.debug("%s: %s dropped while %s", self.name, event.value, self.state.value)
            return False
        self._fire(event, response)
        return True

    # --- SIP (called by the carrier with the endpoint's events) -------------------------------

    def on_response(self, tx: txl.ClientTransaction, response: Response) -> bool:
        """A response to one of our requests (False: not ours)."""
        if tx is self.invite_tx:
            status = response.status
            self.statuses.append((time.time(), status))
            if status < 200:
                early = status == 183 and bool(response.body)
                self._if_entry(_Call.EARLY_MEDIA if early else _Call.PROVISIONAL, response)
            else:
                self._if_entry(_Call.ANSWERED if status < 300 else _Call.REFUSED, response)
            return True
        if tx is self.cancel_tx or tx is self.bye_tx:
            if response.status >= 200:
                self._note(f"{tx.request.method} answered {response.status}")
            return True
        return False

    def on_stray(self, response: Response) -> None:
        """A 2xx retransmitted after the INVITE transaction ended: ACK it again."""
        if response.cseq.method == "INVITE" and 200 <= response.status < 300:
            self._if_entry(_Call.ANSWERED, response)

    def on_timeout(self, tx: txl.ClientTransaction) -> bool:
        """A transaction of ours timed out (False: not ours)."""
        if tx is self.invite_tx:
            self._if_entry(_Call.TIMEOUT)
            return True
        return tx is self.cancel_tx or tx is self.bye_tx

    def on_request(self, tx: txl.ServerTransaction, req: Request) -> None:
        """A request inside our dialog: the node's BYE (anything else is refused)."""
        carrier = self.carrier
        now = carrier.now()
        if self.dialog is None:
            carrier.endpoint.respond(tx, 481, now=now)
            return
        answer = self.dialog.receive_request(req, now)
        if answer is None:
            status, reason = (488, "Not Acceptable Here") if req.method == "INVITE" else (200, "OK")
            answer = self.dialog.create_response(req, status, reason, now=now)
        carrier.endpoint.send_response(tx, answer, now)
        if req.method == "BYE":
            self._if_entry(_Call.BYE)

    # --- handlers: what each entry of CALLER_TABLE does, once the caller is in its new state --

    def _media_from(self, response: Response) -> None:
        """Point our RTP leg at the address in the switch's SDP answer."""
        assert self._offer is not None
        carrier = self.carrier
        try:
            media = sdp.parse_answer(self._offer, sdp.parse_sdp(response.body))
        except sdp.SdpError as exc:
            self.error = f"bad SDP in the {response.status}: {exc}"
            self._note(self.error)
            return
        self.codec = media.codec
        self.dtmf_pt = media.telephone_event_pt
        if self.leg_id in carrier.engine.legs:
            carrier.engine.set_remote(
                self.leg_id,
                media.remote_address,
                media.remote_port,
                media.codec,
                media.telephone_event_pt,
                carrier.media.time(),
            )

    def _early(self, response: Response | None) -> None:
        assert response is not None
        self._media_from(response)
        if self.early_at is None:
            self.early_at = time.time()
            self._note(f"early media from the switch ({response.status} with SDP, {self.codec})")

    def _answered(self, response: Response | None) -> None:
        assert response is not None and self.invite is not None and self.dest is not None
        carrier = self.carrier
        now = carrier.now()
        self.final_status = response.status
        self.dialog = Dialog.from_uac(
            self.invite, response, now=now, new_id=carrier.endpoint.new_tag
        )
        self._ack(response)
        if response.body:
            self._media_from(response)
        self.answered_at = time.time()
        self._note(f"the switch answered ({response.status}): ACK")
        self.connected.set()
        self.on_connected()

    def _ack(self, response: Response | None) -> None:
        assert response is not None and self.dialog is not None and self.dest is not None
        ack = self.dialog.create_ack(response)
        self.carrier.endpoint.send_ack(ack, next_hop(ack, self.dest))

    def _refused(self, response: Response | None) -> None:
        assert response is not None
        self.final_status = response.status
        self._note(f"the call ended with {response.status}")
        self._finish("refused")

    def _cancelled(self, response: Response | None) -> None:
        assert response is not None
        self.final_status = response.status
        self._note(f"cancelled: {response.status}")
        self._finish("cancel")

    def _timed_out(self, response: Response | None) -> None:
        self.error = self.error or "the node did not answer the INVITE (transaction timeout)"
        self._note(self.error)
        self._finish("timeout")

    def _cancel(self, response: Response | None) -> None:
        assert self.invite is not None and self.dest is not None
        carrier = self.carrier
        self._note("hangs up before the answer (CANCEL)")
        cancel = txl.make_cancel(self.invite)
        self.cancel_tx = carrier.endpoint.send_request(cancel, self.dest, carrier.now())

    def _answered_after_cancel(self, response: Response | None) -> None:
        """The 2xx crossed our CANCEL: ACK it and hang up at once."""
        assert response is not None and self.invite is not None
        self.dialog = Dialog.from_uac(
            self.invite, response, now=self.carrier.now(), new_id=self.carrier.endpoint.new_tag
        )
        self._ack(response)
        self._bye()
        self._finish("phone")

    def _node_hung_up(self, response: Response | None) -> None:
        self._note("BYE from the node, answered 200")
        self._finish("node")

    def _hung_up(self, response: Response | None) -> None:
        self._note("hangs up (BYE)")
        self._bye()
        self._finish("phone")

    def _bye(self) -> None:
        assert self.dialog is not None and self.dest is not None
        carrier = self.carrier
        bye = self.dialog.create_request("BYE", now=carrier.now())
        self.bye_tx = carrier.endpoint.send_request(bye, next_hop(bye, self.dest), carrier.now())

    def _finish(self, by: str) -> None:
        self.ended_at = time.time()
        self.ended_by = by
        self.set_phase("ended")
        self.carrier.close_leg(self.leg_id)
        self.ended.set()
        self.on_ended()

    # --- hooks --------------------------------------------------------------------------------

    def on_connected(self) -> None:
        """The switch answered (2xx ACKed)."""

    def on_ended(self) -> None:
        """The call is over."""


_C = CallerState
#: The customer's call to the node: (state, input) -> (what it does in the new state, new state).
CALLER_TABLE: fsm.Table[CallerState, _Call, _CallerHandler] = fsm.Table(
    "caller",
    {
        (_C.IDLE, _Call.INVITE): (None, _C.CALLING),
        (_C.CALLING, _Call.PROVISIONAL): (None, _C.CALLING),
        (_C.CALLING, _Call.EARLY_MEDIA): (Caller._early, _C.EARLY),
        (_C.CALLING, _Call.ANSWERED): (Caller._answered, _C.CONNECTED),
        (_C.CALLING, _Call.REFUSED): (Caller._refused, _C.ENDED),
        (_C.CALLING, _Call.TIMEOUT): (Caller._timed_out, _C.ENDED),
        (_C.CALLING, _Call.CANCEL): (Caller._cancel, _C.CANCELLING),
        (_C.EARLY, _Call.PROVISIONAL): (None, _C.EARLY),
        (_C.EARLY, _Call.EARLY_MEDIA): (Caller._early, _C.EARLY),
        (_C.EARLY, _Call.ANSWERED): (Caller._answered, _C.CONNECTED),
        (_C.EARLY, _Call.REFUSED): (Caller._refused, _C.ENDED),
        (_C.EARLY, _Call.TIMEOUT): (Caller._timed_out, _C.ENDED),
        (_C.EARLY, _Call.CANCEL): (Caller._cancel, _C.CANCELLING),
        (_C.CANCELLING, _Call.PROVISIONAL): (None, _C.CANCELLING),
        (_C.CANCELLING, _Call.EARLY_MEDIA): (None, _C.CANCELLING),
        (_C.CANCELLING, _Call.REFUSED): (Caller._cancelled, _C.ENDED),
        (_C.CANCELLING, _Call.TIMEOUT): (Caller._timed_out, _C.ENDED),
        # The 2xx crossed the CANCEL (RFC 3261 section 9.1): ACK it, then BYE.
        (_C.CANCELLING, _Call.ANSWERED): (Caller._answered_after_cancel, _C.ENDED),
        (_C.CONNECTED, _Call.ANSWERED): (Caller._ack, _C.CONNECTED),  # a retransmitted 2xx
        (_C.CONNECTED, _Call.BYE): (Caller._node_hung_up, _C.ENDED),
        (_C.CONNECTED, _Call.HANGUP): (Caller._hung_up, _C.ENDED),
    },
    initial=_C.IDLE,
    final={_C.ENDED},
    error=CallerError,
)


# --- the media engine, with a tap on what the phones receive ---------------------------------


class TapEngine(MediaEngine):
    """A MediaEngine that hands each accepted audio payload of a tapped leg to a callback.

    The phones' legs are never bridged, so the engine itself would not decode what they hear;
    the tap decodes in arrival order (loopback neither loses nor reorders).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.taps: dict[str, Callable[[bytes], None]] = {}

    def receive_on(
        self, leg: Leg, data: bytes, addr: Addr, now: float
    ) -> tuple[bytes, Addr] | None:
        session = leg.session
        before = session.packets_received
        out = super().receive_on(leg, data, addr, now)
        tap = self.taps.get(leg.leg_id)
        if tap is not None and session.packets_received != before:
            try:
                header = parse_header(data)
            except RtpError:
                return out
            if header.payload_type == session.pt:
                tap(data[header.payload_offset : header.payload_end])
        return out


class _SipProtocol(asyncio.DatagramProtocol):
    def __init__(self, carrier: EmulatedCarrier) -> None:
        self.carrier = carrier

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.carrier.receive(data, Address(addr[0], addr[1], "UDP"))

    def error_received(self, exc: Exception) -> None:
        log.debug("carrier SIP socket: %s", exc)


@dataclass(slots=True)
class _Trigger:
    invite: Request
    tx: txl.ClientTransaction
    queue: asyncio.Queue[tuple[str, Response | None]]
    cancel_tx: txl.ClientTransaction | None = None


# --- the carrier --------------------------------------------------------------------------------


class EmulatedCarrier:
    """Registrar, trigger caller and phones on one loopback UDP port; see the module docstring.

    Use ``async with EmulatedCarrier(config) as carrier:`` (or :meth:`start` / :meth:`stop`).
    """

    def __init__(self, config: CarrierConfig | None = None) -> None:
        self.config = config or CarrierConfig()
        self.timeline: list[tuple[float, str]] = []
        self.timers = ep.EndpointConfig().timers
        self._endpoint: ep.Endpoint | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._media: MediaShell | None = None
        self.engine = TapEngine(max_legs=16)
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._labels: dict[str, str] = {}
        self._triggers: dict[int, _Trigger] = {}
        self._nonces: set[str] = set()
        self._trigger_count = 0
        #: The node's registered Contact (where trigger calls go), None when not registered.
        self.binding: URI | None = None
        self.binding_expires: int | None = None
        self.registrations: list[tuple[float, int, str]] = []  # (time, status, why)
        self.registered = asyncio.Event()
        self.unregistered = asyncio.Event()
        cfg = self.config
        self.destination = DestinationPhone(
            self, cfg.destination_number, cfg.destination_answer_after, cfg.destination_tone_hz
        )
        self.customer = CustomerPhone(
            self, cfg.customer_number, cfg.customer_answer_after, cfg.script, self.destination
        )
        #: Every phone the node can call, routed by Request-URI user (:meth:`add_phone`).
        self.phones: list[Phone] = []
        #: Calls placed to the node by :class:`Caller` (a trigger that may be answered).
        self.callers: list[Caller] = []
        self.add_phone(self.customer)
        self.add_phone(self.destination)

    def add_phone(self, phone: Phone) -> None:
        """Put ``phone`` behind the carrier: INVITEs for its number reach it, its audio is kept."""
        self.phones.append(phone)
        self.engine.taps[phone.leg_id] = phone._on_payload

    def add_caller(self, caller: Caller) -> None:
        """A call placed to the node: its responses and in-dialog requests reach ``caller``."""
        self.callers.append(caller)
        self.engine.taps[caller.leg_id] = caller._on_payload

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the SIP socket and start the phones' media clock."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _SipProtocol(self), local_addr=(self.config.host, self.config.port)
        )
        self._transport = transport
        port = int(transport.get_extra_info("sockname")[1])
        self._endpoint = ep.Endpoint(
            ep.EndpointConfig(
                host=self.config.host,
                port=port,
                allow=_ALLOW,
                allow_from=("127.0.0.0/8", "::1/128"),
                user_agent="softswitch-demo-carrier",
            )
        )
        self.timers = self._endpoint.config.timers
        self._media = MediaShell(
            self.engine,
            host=self.config.host,
            port_range=self.config.rtp_port_range,
            on_event=self._media_event,
        )
        self._media.start()
        self.note(f"carrier listening on udp:{self.config.host}:{port}")

    async def stop(self) -> None:
        """Cancel the phones' scripts and close every socket."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._media is not None:
            self._media.stop()
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    async def __aenter__(self) -> EmulatedCarrier:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def endpoint(self) -> ep.Endpoint:
        if self._endpoint is None:
            raise RuntimeError("the carrier is not started")
        return self._endpoint

    @property
    def media(self) -> MediaShell:
        if self._media is None:
            raise RuntimeError("the carrier is not started")
        return self._media

    @property
    def address(self) -> Address:
        """Where the node's trunk must point (its ``proxy``)."""
        cfg = self.endpoint.config
        return Address(cfg.host, cfg.port, "UDP")

    @property
    def node_address(self) -> Address | None:
        """The node's registered Contact as a transport address."""
        if self.binding is None:
            return None
        return Address(self.binding.host, self.binding.port or 5060, "UDP")

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def note(self, text: str) -> None:
        """Append ``text`` to the timeline, stamped with ``time.time()``."""
        self.timeline.append((time.time(), text))
        log.info("%s", text)

    def label(self, call_id: str, who: str) -> None:
        """Name the carrier-side party of a Call-ID in the timeline."""
        self._labels[call_id] = who

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.note(f"carrier task failed: {task.exception()!r}")

    def close_leg(self, leg_id: str) -> None:
        if self._media is not None and leg_id in self.engine.legs:
            self._media.close_leg(leg_id)

    async def wait_call_over(self, timeout: float) -> bool:
        """Wait until both phones' calls have ended (True) or ``timeout`` passes (False)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(self.customer.ended.wait(), self.destination.ended.wait()),
                timeout,
            )
        return self.customer.ended.is_set() and self.destination.ended.is_set()

    # --- the socket and the timer -------------------------------------------------------------

    def receive(self, data: bytes, addr: Address) -> None:
        """One datagram from ``addr`` (the protocol's entry point)."""
        stamp = time.time()
        self.endpoint.receive_datagram(data, addr, self.now())
        self._process()
        # Noted after processing, so a call the message created already has its label.
        self.timeline.append((stamp, f"node -> {self._who(data)}  {_first_line(data)}"))
        self.flush()

    def flush(self) -> None:
        """Send what the endpoint has queued and re-arm the one timer."""
        if self._transport is None:
            return
        stamp = time.time()
        for data, dest in self.endpoint.datagrams_to_send():
            self.timeline.append((stamp, f"{self._who(data)} -> node  {_first_line(data)}"))
            self._transport.sendto(data, (dest.host, dest.port))
        self._arm()

    def _arm(self) -> None:
        deadlines = [
            t
            for t in (self.endpoint.get_timer(), *(p.get_timer() for p in self.phones))
            if t is not None
        ]
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if deadlines:
            self._timer = asyncio.get_running_loop().call_at(min(deadlines), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        now = self.now()
        self.endpoint.handle_timer(now)
        for phone in self.phones:
            phone.handle_timer(now)
        self._process()
        self.flush()

    def _who(self, data: bytes) -> str:
        match = _CALL_ID.search(data)
        if match is not None:
            who = self._labels.get(match.group(1).decode(errors="replace"))
            if who is not None:
                return who
        method = _CSEQ_METHOD.search(data)
        if method is not None and method.group(1).upper() == b"REGISTER":
            return "registrar"
        return "carrier"

    # --- endpoint events ----------------------------------------------------------------------

    def _process(self) -> None:
        endpoint = self.endpoint
        while (event := endpoint.next_event()) is not None:
            if isinstance(event, ep.RequestReceived):
                self._request(event)
            elif isinstance(event, ep.RequestCancelled):
                phone = self._phone_by_call(event.request.call_id)
                if phone is not None:
                    phone.on_cancel()
            elif isinstance(event, ep.AckReceived):
                phone = self._phone_by_call(event.request.call_id)
                if phone is not None:
                    phone.on_ack(event.request)
            elif isinstance(event, ep.ResponseReceived):
                self._response(event.tx, event.response)
            elif isinstance(event, ep.StrayResponse):
                self._stray(event.response)
            elif isinstance(event, ep.TransactionTimedOut):
                self._timed_out(event.tx)

    def _request(self, event: ep.RequestReceived) -> None:
        req, tx = event.request, event.tx
        now = self.now()
        if req.method == "REGISTER":
            self._register(tx, req)
            return
        if req.to.tag is not None:
            caller = self._caller_by_call(req.call_id)
            if caller is not None:
                caller.on_request(tx, req)
                return
            phone = self._phone_by_call(req.call_id)
            if phone is None or phone.dialog is None or phone.dialog.local_tag != req.to.tag:
                self.endpoint.respond(tx, 481, now=now)
                return
            phone.on_request(tx, req)
            return
        if req.method == "INVITE":
            phone = self._phone_by_number(req.uri.user or "")
            if phone is None:
                self.note(f"carrier: no phone for {req.uri.user!r}: 404")
                self.endpoint.respond(tx, 404, now=now)
                return
            phone.on_invite(tx, req, event.source)
            return
        self.endpoint.respond(tx, 481 if req.method == "BYE" else 405, now=now)

    def _phone_by_number(self, user: str) -> Phone | None:
        number = _digits(user, self.config.international_prefixes)
        for phone in self.phones:
            if number == _digits(phone.number, self.config.international_prefixes):
                return phone
        return None

    def _phone_by_call(self, call_id: str) -> Phone | None:
        for phone in self.phones:
            if phone.call_id == call_id:
                return phone
        return None

    def _caller_by_call(self, call_id: str) -> Caller | None:
        for caller in self.callers:
            if caller.call_id == call_id:
                return caller
        return None

    def _response(self, tx: txl.ClientTransaction, response: Response) -> None:
        handsets: tuple[Phone | Caller, ...] = (*self.phones, *self.callers)
        for handset in handsets:
            if handset.on_response(tx, response):
                return
        trigger = self._triggers.get(id(tx))
        if trigger is None:
            return
        kind = "cancel" if tx is trigger.cancel_tx else "invite"
        trigger.queue.put_nowait((kind, response))

    def _stray(self, response: Response) -> None:
        caller = self._caller_by_call(response.call_id)
        if caller is not None:
            caller.on_stray(response)
            return
        for trigger in self._triggers.values():
            if trigger.invite.call_id == response.call_id:
                trigger.queue.put_nowait(("invite", response))
                return

    def _timed_out(self, tx: txl.Transaction) -> None:
        if isinstance(tx, txl.ClientTransaction):
            for caller in self.callers:
                if caller.on_timeout(tx):
                    return
            trigger = self._triggers.get(id(tx))
            if trigger is not None:
                trigger.queue.put_nowait(("timeout", None))

    def _media_event(self, event: Event) -> None:
        if isinstance(event, DigitReceived):
            for handset in (*self.phones, *self.callers):
                if handset.leg_id == event.leg_id:
                    handset.on_digit(event.digit)

    # --- registrar ----------------------------------------------------------------------------

    def _register(self, tx: txl.ServerTransaction, req: Request) -> None:
        cfg = self.config
        now = self.now()
        credentials = req.header("Authorization")
        if credentials is None:
            self._challenge(tx, stale=False)
            return
        why = verify_digest(
            credentials,
            method="REGISTER",
            username=cfg.username,
            password=cfg.password,
            realm=cfg.realm,
            nonces=self._nonces,
        )
        if why == "stale":
            self._challenge(tx, stale=True)
            return
        if why is not None:
            self.registrations.append((time.time(), 403, why))
            self.note(f"registrar: REGISTER refused: {why}")
            self.endpoint.respond(tx, 403, now=now)
            return
        contact, expires = _binding(req)
        if contact is None or expires is None:
            self.registrations.append((time.time(), 400, "no usable Contact/Expires"))
            self.endpoint.respond(tx, 400, "Missing Contact", now=now)
            return
        if expires == 0:
            self.binding = None
            self.binding_expires = None
            self.registrations.append((time.time(), 200, "unregistered"))
            self.note("registrar: binding removed (Expires: 0)")
            self.unregistered.set()
            self.registered.clear()
            self.endpoint.respond(tx, 200, now=now)
            return
        granted = min(expires, cfg.max_expires)
        self.binding = contact
        self.binding_expires = granted
        self.registrations.append((time.time(), 200, f"registered {contact} for {granted} s"))
        self.note(f"registrar: digest verified; {contact} registered for {granted} s")
        self.registered.set()
        self.unregistered.clear()
        self.endpoint.respond(
            tx,
            200,
            headers=(("Contact", f"<{contact}>;expires={granted}"),),
            now=now,
        )

    def _challenge(self, tx: txl.ServerTransaction, *, stale: bool) -> None:
        nonce = secrets.token_hex(16)
        self._nonces.add(nonce)
        value = (
            f'Digest realm="{self.config.realm}", nonce="{nonce}", opaque="carrier", '
            f'algorithm=MD5, qop="auth"'
        )
        if stale:
            value += ", stale=true"
        self.registrations.append((time.time(), 401, "challenge"))
        self.endpoint.respond(tx, 401, headers=(("WWW-Authenticate", value),), now=self.now())

    async def wait_registered(self, timeout: float) -> bool:
        """True once the node holds a binding (within ``timeout`` seconds)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.registered.wait(), timeout)
        return self.registered.is_set()

    async def wait_unregistered(self, timeout: float) -> bool:
        """True once the node removed its binding (within ``timeout`` seconds)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.unregistered.wait(), timeout)
        return self.unregistered.is_set()

    # --- the trigger call ---------------------------------------------------------------------

    async def trigger(
        self,
        trigger_number: str,
        from_number: str | None = None,
        *,
        ring_s: float | None = None,
        target: Address | None = None,
        timeout: float = 10.0,
    ) -> TriggerResult:
        """The customer rings ``trigger_number`` once and hangs up; what happened.

        Goes to ``target`` or else the node's registered Contact. ``from_number`` defaults to
        the customer's number (the caller ID the switch sees).
        """
        dest = target or self.node_address
        if dest is None:
            raise RuntimeError("the node is not registered and no target was given")
        ring_s = self.config.ring_s if ring_s is None else ring_s
        caller = from_number or self.config.customer_number
        endpoint = self.endpoint
        self._trigger_count += 1
        leg_id = f"trigger-{self._trigger_count}"
        port = await self.media.open_leg(leg_id)
        offer = sdp.make_offer(self.config.host, port, session_id=secrets.randbelow(1 << 31))
        invite = self.trigger_invite(trigger_number, caller, dest, offer)
        self.label(invite.call_id, "customer phone")
        started = time.time()
        self.note(f"customer phone: rings trigger number {trigger_number} as {caller}")
        tx = endpoint.send_request(invite, dest, self.now())
        trigger = _Trigger(tx.request, tx, asyncio.Queue())
        self._triggers[id(tx)] = trigger
        self.flush()
        try:
            return await self._run_trigger(trigger, dest, offer, leg_id, ring_s, timeout, started)
        finally:
            self._triggers = {k: v for k, v in self._triggers.items() if v is not trigger}
            self.close_leg(leg_id)

    def trigger_invite(
        self, trigger_number: str, caller: str, dest: Address, offer: sdp.SessionDescription
    ) -> Request:
        """An INVITE from ``caller`` to ``trigger_number`` at ``dest`` with the SDP ``offer``."""
        endpoint = self.endpoint
        local = endpoint.config
        return Request(
            method="INVITE",
            uri=URI(user=trigger_number, host=dest.host, port=dest.port),
            vias=(),
            from_=NameAddr(URI(user=caller, host=self.config.realm)).with_tag(endpoint.new_tag()),
            to=NameAddr(URI(user=trigger_number, host=self.config.realm)),
            call_id=endpoint.new_call_id(),
            cseq=CSeq(1, "INVITE"),
            headers=(
                ("Max-Forwards", "70"),
                ("Contact", f"<sip:{caller}@{URI(host=local.host, port=local.port).host_port}>"),
                ("Allow", ", ".join(_ALLOW)),
                ("User-Agent", local.user_agent),
                ("Content-Type", "application/sdp"),
            ),
            body=bytes(offer),
        )

    async def _run_trigger(
        self,
        trigger: _Trigger,
        dest: Address,
        offer: sdp.SessionDescription,
        leg_id: str,
        ring_s: float,
        timeout: float,
        started: float,
    ) -> TriggerResult:
        statuses: list[tuple[float, int]] = []
        ringing_at = cancel_at = final_at = None
        cancel_status = final_status = None
        answered = False
        error: str | None = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        cancel_due: float | None = None
        while final_status is None or (cancel_at is not None and cancel_status is None):
            wait_until = deadline if cancel_due is None else min(deadline, cancel_due)
            try:
                kind, response = await asyncio.wait_for(
                    trigger.queue.get(), max(0.0, wait_until - loop.time())
                )
            except TimeoutError:
                if cancel_due is not None and loop.time() >= cancel_due:
                    cancel_due = None
                    cancel_at = time.time()
                    self.note("customer phone: hangs up after the first ring (CANCEL)")
                    cancel = txl.make_cancel(trigger.invite)
                    trigger.cancel_tx = self.endpoint.send_request(cancel, dest, self.now())
                    self._triggers[id(trigger.cancel_tx)] = trigger
                    self.flush()
                    continue
                error = "timed out waiting for the node"
                break
            if kind == "timeout" or response is None:
                error = "the node did not answer (transaction timeout)"
                break
            if kind == "cancel":
                if response.status >= 200:
                    cancel_status = response.status
                continue
            status = response.status
            if status >= 200 and final_status is not None:
                continue  # a retransmitted final response
            statuses.append((time.time(), status))
            if status in (180, 183) and ringing_at is None:
                ringing_at = time.time()
                cancel_due = loop.time() + ring_s
                if status == 183 and response.body:
                    with contextlib.suppress(sdp.SdpError):
                        media = sdp.parse_answer(offer, sdp.parse_sdp(response.body))
                        self.engine.set_remote(
                            leg_id,
                            media.remote_address,
                            media.remote_port,
                            media.codec,
                            media.telephone_event_pt,
                            self.media.time(),
                        )
            elif status >= 200:
                final_status = status
                final_at = time.time()
                cancel_due = None
                if status < 300:
                    answered = True
                    error = "the switch answered a trigger call (it must never do that)"
                    self._end_answered_trigger(trigger, response, dest)
                    break
        return TriggerResult(
            call_id=trigger.invite.call_id,
            started_at=started,
            statuses=tuple(statuses),
            ringing_at=ringing_at,
            cancel_sent_at=cancel_at,
            cancel_status=cancel_status,
            final_status=final_status,
            final_at=final_at,
            answered=answered,
            error=error,
        )

    def _end_answered_trigger(self, trigger: _Trigger, response: Response, dest: Address) -> None:
        """ACK the unwanted 2xx and hang up at once, so no call is left open."""
        now = self.now()
        dialog = Dialog.from_uac(trigger.invite, response, now=now, new_id=self.endpoint.new_tag)
        ack = dialog.create_ack(response)
        self.endpoint.send_ack(ack, next_hop(ack, dest))
        bye = dialog.create_request("BYE", now=now)
        self.endpoint.send_request(bye, next_hop(bye, dest), now)
        self.note("customer phone: the trigger was answered (failure): ACK and BYE")
        self.flush()


# --- helpers ------------------------------------------------------------------------------------


def _first_line(data: bytes) -> str:
    return data.split(b"\r\n", 1)[0].decode("utf-8", errors="replace")[:120]


def _digits(user: str, prefixes: tuple[str, ...]) -> str:
    """The number in a Request-URI user part, without visual separators or a dial prefix."""
    number = user.split(";", 1)[0]
    number = "".join(c for c in number if c not in "-.() ")
    for prefix in sorted(prefixes, key=len, reverse=True):
        if number.startswith(prefix):
            return number[len(prefix) :]
    return number


def _binding(req: Request) -> tuple[URI | None, int | None]:
    """The REGISTER's Contact and the expiry it asks for (Contact param, then Expires)."""
    values = req.header_all("Contact")
    if not values:
        return None, None
    try:
        contact = parse_name_addr(values[0])
    except ValueError:
        return None, None
    raw = contact.param("expires") or req.header("Expires")
    if raw is None:
        return contact.uri, 3600
    head = raw.strip()
    return contact.uri, int(head) if head.isdigit() else None


def call_checks(carrier: EmulatedCarrier) -> list[AudioCheck]:
    """The demo's verdicts on the whole callback call, each with its measured figure."""
    customer, destination = carrier.customer, carrier.destination
    script = customer.script
    prompt_s = nonsilent_seconds(customer.audio("prompt"))
    talk_in = tone_seconds(destination.audio("talk"), script.talk_hz)
    talk_back = tone_seconds(customer.audio("talk"), carrier.config.destination_tone_hz)
    return [
        AudioCheck(
            "customer phone answered the callback",
            customer.connected_at is not None,
            f"{customer.state.value}",
        ),
        AudioCheck(
            "customer heard the prompts before dialling",
            heard_prompt(customer, script.listen_s),
            f"{prompt_s:.1f} s of audio",
        ),
        AudioCheck(
            "destination phone answered",
            destination.connected_at is not None,
            f"{destination.state.value}",
        ),
        AudioCheck(
            f"destination heard the customer's {script.talk_hz:.0f} Hz",
            talk_in >= min(0.5, script.talk_s / 2),
            f"{talk_in:.1f} s",
        ),
        AudioCheck(
            f"customer heard the destination's {carrier.config.destination_tone_hz:.0f} Hz",
            talk_back >= min(0.5, script.talk_s / 2),
            f"{talk_back:.1f} s",
        ),
        AudioCheck(
            "the node ended both calls with BYE",
            customer.ended_by == "node" and destination.ended_by == "node",
            f"customer: {customer.ended_by}, destination: {destination.ended_by}",
        ),
    ]
