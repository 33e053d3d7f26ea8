"""A node with the callback service on a fake clock: the carrier, the store and the media.

:class:`Rig` drives a real :class:`~softswitch.node.node.Node` (SIP endpoint, transactions,
outbound legs, the call controller) the way ``softswitch serve`` does, with every outside
part played by the test in memory:

* the carrier: trigger INVITEs and CANCELs come from :data:`TRUNK`, the node's INVITEs to the
  trunk are answered by the test (180, 183 with SDP, 200 with SDP, 486 ...), BYEs both ways;
* the store: :class:`FakeStore` answers every store request as the repositories would
  (accounts, rates, credit reservations, speed dials, the callback queue, CDRs), at once, or
  later for the requests the test holds back;
* the media: :class:`FakeMedia` records every media command per leg (what plays, what is
  bridged) and the test injects the engine's events (a key press, a prompt's end).

Time moves only with :meth:`Rig.advance`, which fires every timer that falls due on the way,
so a whole call with its retries and two-minute timeouts runs in milliseconds.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path

from media import engine as me
from media.player import Tone
from softswitch.config import Config, TrunkConfig
from softswitch.node import commands as cmd
from softswitch.node.node import Node
from softswitch.sip.message import Address, Request, Response
from softswitch.sip.parser import parse_message
from softswitch.store.models import (
    Account,
    AccountKind,
    AccountStatus,
    CallbackState,
    Cdr,
    Language,
    LegKind,
    LiveCall,
    Location,
    PendingCallback,
    Rate,
)

TRUNK = Address("127.0.0.1", 5080)
NODE = ("127.0.0.1", 5060)
WALL0 = 1_800_000_000.0
TRIGGER = "815012345678"
CUSTOMER = "819012345678"
DESTINATION = "441234567890"
CALLER_ID = "81300000000"
ANSWER_SDP = (
    b"v=0\r\no=- 7 0 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n"
)


def account(
    account_id: int = 1,
    *,
    triggers: Iterable[str] = (TRIGGER,),
    location: str | None = CUSTOMER,
    extension: str | None = None,
    credit_limit: int = 10_000,
    status: AccountStatus = AccountStatus.ACTIVE,
    language: Language = Language.EN,
    name_path: str | None = None,
    hotline: str | None = None,
    kind: AccountKind = AccountKind.STANDARD,
) -> Account:
    return Account(
        id=account_id,
        name=f"Customer {account_id}",
        kind=kind,
        language=language,
        status=status,
        location=None if location is None else Location(location, extension),
        triggers=tuple(triggers),
        has_security_code=False,
        failed_code_count=0,
        locked_until=None,
        recorded_name_path=name_path,
        credit_limit=credit_limit,
        credit_used=0,
        credit_reserved=0,
        hotline_destination=hotline,
        created_at=0.0,
        updated_at=0.0,
    )


class FakeStore:
    """Answers the node's store requests as the repositories would, from memory."""

    def __init__(self, accounts: Iterable[Account], rates: Iterable[Rate]) -> None:
        self.accounts = {a.id: a for a in accounts}
        self.rates = {r.prefix: r for r in rates}
        self.speed_dials: dict[tuple[int, str], str] = {}
        self.cdrs: list[Cdr] = []
        self.queue: dict[int, PendingCallback] = {}
        self.reservations: dict[str, tuple[int, int]] = {}
        self.used: dict[int, int] = {}
        self.settled: list[tuple[int, str, str | None]] = []
        self.renewed: list[tuple[int, ...]] = []
        self.codes: dict[int, str] = {}  # account id -> security code
        self.live: dict[str, LiveCall] = {}  # call uuid -> the node's last description
        self.recovering: dict[str, str] = {}  # call uuid -> the node recovering it
        self.code_failures: dict[int, int] = {}
        self.max_code_failures = 3
        self._ids = itertools.count(1)

    def available(self, account_id: int) -> int:
        held = sum(a for acct, a in self.reservations.values() if acct == account_id)
        return self.accounts[account_id].credit_limit - self.used.get(account_id, 0) - held

    def open_row(self, account_id: int) -> PendingCallback | None:
        return next(
            (
                p
                for p in self.queue.values()
                if p.account_id == account_id
                and p.state in (CallbackState.PENDING, CallbackState.CLAIMED)
            ),
            None,
        )

    def add_pending(self, account_id: int, due_at: float, trigger: str = TRIGGER) -> int:
        row = PendingCallback(
            next(self._ids), account_id, trigger, due_at, due_at, 0,
            CallbackState.PENDING, None, None, None,
        )  # fmt: skip
        self.queue[row.id] = row
        return row.id

    def answer(self, request: cmd.StoreRequest) -> object:
        if isinstance(request, cmd.LoadAccounts):
            return tuple(self.accounts.values())
        if isinstance(request, cmd.EnqueueCallback):
            existing = self.open_row(request.account_id)
            if existing is not None:
                return (existing, False)
            if request.claimed:
                row = PendingCallback(
                    next(self._ids), request.account_id, request.trigger, request.at, request.at,
                    1, CallbackState.CLAIMED, request.node_id, request.at + request.lease_s, None,
                    request.sid,
                )  # fmt: skip
            else:
                row = PendingCallback(
                    next(self._ids), request.account_id, request.trigger, request.at, request.at,
                    0, CallbackState.PENDING, None, None, None, request.sid,
                )  # fmt: skip
            self.queue[row.id] = row
            return (row, True)
        if isinstance(request, cmd.ClaimCallbacks):
            out = []
            for row in list(self.queue.values()):
                if row.state is CallbackState.PENDING and row.due_at <= request.at:
                    claimed = replace(
                        row,
                        state=CallbackState.CLAIMED,
                        claimed_by=request.node_id,
                        attempts=row.attempts + 1,
                    )
                    self.queue[row.id] = claimed
                    out.append((claimed, self.accounts[row.account_id]))
            return tuple(out)
        if isinstance(request, cmd.RenewLeases):
            self.renewed.append(request.callback_ids)
            return len(request.callback_ids)
        if isinstance(request, cmd.SettleCallback):
            row = self.queue[request.callback_id]
            assert row.claimed_by == request.node_id, "settled by a node that has no claim"
            self.settled.append((request.callback_id, request.event, request.error))
            state = {
                "complete": CallbackState.DONE,
                "fail": CallbackState.FAILED,
                "reschedule": CallbackState.PENDING,
            }[request.event]
            row = self.queue[request.callback_id]
            due = row.due_at if request.due_at is None else request.due_at
            self.queue[row.id] = replace(row, state=state, claimed_by=None, due_at=due)
            return True
        if isinstance(request, cmd.QuoteRate):
            matches = [r for p, r in self.rates.items() if request.number.startswith(p)]
            rate = max(matches, key=lambda r: len(r.prefix)) if matches else None
            spent = 0
            if request.since is not None:
                spent = sum(
                    c.cost
                    for c in self.cdrs
                    if c.account_id == request.account_id and c.setup_at >= request.since
                )
                spent += sum(a for i, a in self.reservations.values() if i == request.account_id)
            return (rate, self.available(request.account_id), spent)
        if isinstance(request, cmd.ReserveCredit):
            if self.available(request.account_id) < request.amount:
                return False
            self.reservations[request.key] = (request.account_id, request.amount)
            return True
        if isinstance(request, cmd.CommitCredit):
            account_id, _ = self.reservations.pop(request.key)
            self.used[account_id] = self.used.get(account_id, 0) + request.cost
            return None
        if isinstance(request, cmd.ReleaseCredit):
            self.reservations.pop(request.key)
            return None
        if isinstance(request, cmd.LookUpSpeedDial):
            return self.speed_dials.get((request.account_id, request.code))
        if isinstance(request, cmd.WriteCdr):
            self.cdrs.append(request.cdr)
            return None
        if isinstance(request, cmd.TrackCalls):
            for call in request.calls:
                if call.call_uuid not in self.recovering:
                    self.live[call.call_uuid] = call
            return None
        if isinstance(request, cmd.ForgetCalls):
            for uuid in request.call_uuids:
                self.live.pop(uuid, None)
                self.recovering.pop(uuid, None)
            return None
        if isinstance(request, cmd.TakeStaleCalls):
            taken = []
            for call in self.live.values():
                mine = self.recovering.get(call.call_uuid) == request.node_id
                stale = (
                    call.alive_at < request.alive_before and call.call_uuid not in self.recovering
                )
                if call.node_id != request.node_id and (mine or stale):
                    self.recovering[call.call_uuid] = request.node_id
                    taken.append(call)
            return tuple(taken)
        if isinstance(request, cmd.ReleaseExpiredCredit):
            return 0
        if isinstance(request, cmd.CheckSecurityCode):
            failures = self.code_failures.get(request.account_id, 0)
            if failures >= self.max_code_failures:
                return "locked"
            if self.codes.get(request.account_id) == request.code:
                self.code_failures[request.account_id] = 0
                return "accepted"
            self.code_failures[request.account_id] = failures + 1
            return "locked" if failures + 1 >= self.max_code_failures else "rejected"
        if isinstance(request, cmd.SetLocation):
            old = self.accounts[request.account_id]
            where = Location(request.number, request.extension or None)
            self.accounts[old.id] = replace(old, location=where)
            return True
        if isinstance(request, cmd.SaveRecordedName):
            old = self.accounts[request.account_id]
            path = f"/var/recordings/name-{old.id}.wav"
            self.accounts[old.id] = replace(old, recorded_name_path=path)
            return path
        raise AssertionError(f"unexpected store request {request!r}")

    def cdrs_of(self, leg: LegKind) -> list[Cdr]:
        return [c for c in self.cdrs if c.leg is leg]


@dataclass
class FakeLeg:
    """What the media engine would hold for one leg."""

    leg_id: str
    port: int
    service_digits: bool
    remote: tuple[str, int] | None = None
    playing: tuple[Path | Tone, ...] = ()
    bridged_to: str | None = None
    early_media: bool = False
    conference: str | None = None
    sent_digits: list[tuple[str, str]] = field(default_factory=list)
    recording: str | None = None
    closed: bool = False


class FakeMedia:
    """Records media commands per leg (the media engine's side of the contract)."""

    def __init__(self) -> None:
        self.legs: dict[str, FakeLeg] = {}
        self._ports = itertools.count(20000, 2)

    def open(self, command: cmd.OpenMedia) -> int:
        port = next(self._ports)
        self.legs[command.leg_id] = FakeLeg(command.leg_id, port, command.service_digits)
        return port

    def apply(self, command: cmd.MediaCommand) -> None:
        if isinstance(command, cmd.CloseMedia):
            self.legs[command.leg_id].closed = True
        elif isinstance(command, cmd.SetRemote):
            self.legs[command.leg_id].remote = (command.host, command.port)
        elif isinstance(command, cmd.PlayMedia):
            self.legs[command.leg_id].playing = command.items
        elif isinstance(command, cmd.StopMedia):
            self.legs[command.leg_id].playing = ()
        elif isinstance(command, cmd.SendDigits):
            self.legs[command.leg_id].sent_digits.append((command.digits, command.mode))
        elif isinstance(command, cmd.BridgeMedia):
            a, b = self.legs[command.leg_a], self.legs[command.leg_b]
            a.bridged_to, b.bridged_to = b.leg_id, a.leg_id
            a.early_media = b.early_media = command.early_media
            a.conference = b.conference = None
        elif isinstance(command, cmd.UnbridgeMedia):
            leg = self.legs[command.leg_id]
            if leg.bridged_to is not None:
                self.legs[leg.bridged_to].bridged_to = None
            leg.bridged_to = None
            leg.conference = None
        elif isinstance(command, cmd.RecordMedia):
            self.legs[command.leg_id].recording = command.recording
        elif isinstance(command, cmd.ConferenceMedia):
            for leg_id in command.legs:
                leg = self.legs[leg_id]
                leg.conference, leg.bridged_to = command.conf_id, None

    def live(self) -> list[FakeLeg]:
        return [leg for leg in self.legs.values() if not leg.closed]


def reply(
    req: Request, status: int, *, tag: str = "far", extra: str = "", body: bytes = b""
) -> bytes:
    """A response from the carrier to a request the node sent."""
    via = "".join(f"Via: {v}\r\n" for v in req.vias)
    ctype = "Content-Type: application/sdp\r\n" if body else ""
    contact = f"Contact: <sip:far@{TRUNK.host}:{TRUNK.port}>\r\n" if status < 300 else ""
    return (
        f"SIP/2.0 {status} X\r\n{via}From: {req.from_}\r\nTo: {req.to}"
        f"{';tag=' + tag if tag else ''}\r\nCall-ID: {req.call_id}\r\nCSeq: {req.cseq}\r\n"
        f"{contact}{extra}{ctype}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


@dataclass
class TriggerCall:
    """A trigger call the test made with an SDP offer (early media, maybe the menu)."""

    n: int
    number: str
    caller: str
    call_id: str
    branch: str
    leg_id: str = ""


@dataclass
class Call:
    """An INVITE the node sent the carrier, and the dialog the test answers it in."""

    invite: Request
    leg_id: str
    number: str
    tag: str = ""
    status: int | None = None  # the final status the test answered with
    hung_up: bool = False  # the far end sent BYE


class Rig:
    """The node and everything around it; see the module docstring."""

    def __init__(
        self,
        *,
        accounts: Iterable[Account] = (),
        rates: Iterable[Rate] = (Rate("44", "United Kingdom", Decimal(20), 6, 30),),
        hold: Iterable[type] = (),
        start: bool = True,
        store: FakeStore | None = None,
        node_id: str = "test-node",
        wall0: float = WALL0,
        **config: object,
    ) -> None:
        trunk = TrunkConfig(
            proxy=(TRUNK.host, TRUNK.port),
            ip_auth=True,
            keepalive_interval=0,
            caller_id=CALLER_ID,
        )
        self.config = Config(
            trunk=trunk,
            listen=(NODE,),
            rtp_ports=(20000, 29999),
            **config,  # type: ignore[arg-type]
        )
        tokens = itertools.count(1)
        ids = itertools.count(1)
        self.node = Node(
            self.config,
            token=lambda: f"t{next(tokens)}",
            service=True,
            node_id=node_id,
            new_id=lambda: f"{next(ids):08x}" * 4,
        )
        calls = self.node.calls
        assert calls is not None
        self.calls = calls
        self.store = store or FakeStore(list(accounts) or [account()], rates)
        self.media = FakeMedia()
        self.hold = tuple(hold)
        self.held: list[cmd.StoreRequest] = []
        self.commands: list[cmd.Command] = []
        self.now = 0.0
        self.requests: list[Request] = []  # every request the node sent the carrier
        self.responses: list[Response] = []
        self.calls_out: list[Call] = []
        self._trigger_seq = itertools.count(1)
        self.node.sync_clock(0.0, wall0)
        if start:
            self.node.start(self.now)
            self.pump()

    # --- the shell's side --------------------------------------------------------------------

    def pump(self) -> None:
        """Carry out every command the node has, the way ``aio.service`` does; read the wire."""
        node = self.node
        while True:
            command = node.next_event()
            if command is None:
                break
            assert not isinstance(command, type(None))
            self.commands.append(command)  # type: ignore[arg-type]
            if isinstance(command, cmd.OpenMedia):
                node.media_opened(command.leg_id, self.media.open(command), self.now)
            elif isinstance(
                command,
                cmd.CloseMedia
                | cmd.SetRemote
                | cmd.PlayMedia
                | cmd.StopMedia
                | cmd.SendDigits
                | cmd.BridgeMedia
                | cmd.UnbridgeMedia
                | cmd.ConferenceMedia
                | cmd.RecordMedia,
            ):
                self.media.apply(command)
            elif isinstance(command, self.hold):
                self.held.append(command)  # type: ignore[arg-type]
            else:
                node.store_done(command, self.store.answer(command), self.now)  # type: ignore[arg-type]
        answers: list[bytes] = []
        for data, addr in node.datagrams_to_send():
            msg = parse_message(data)
            assert addr == TRUNK, f"the node sent {msg} to {addr}, not the trunk"
            if isinstance(msg, Request):
                if msg in self.requests:
                    continue  # a retransmission
                self.requests.append(msg)
                if msg.method == "INVITE" and msg.to.tag is None and msg.cseq.seq == 1:
                    leg_id = self._leg_for(msg)
                    self.calls_out.append(Call(msg, leg_id, msg.uri.user or ""))
                    answers.append(reply(msg, 100, tag=""))  # the carrier's Trying
                elif msg.method in ("BYE", "CANCEL"):
                    # The carrier answers the node's BYE and CANCEL at once.
                    answers.append(reply(msg, 200, tag=""))
            elif isinstance(msg, Response):
                self.responses.append(msg)
        for answer in answers:
            node.receive_datagram(answer, TRUNK, self.now)
        if answers:
            self.pump()

    def release(self, kind: type | None = None) -> None:
        """Answer the held store requests (of ``kind``, or all) now."""
        keep = []
        for request in self.held:
            if kind is None or isinstance(request, kind):
                self.node.store_done(request, self.store.answer(request), self.now)
            else:
                keep.append(request)
        self.held = keep
        self.pump()

    def fail_held(self, kind: type, error: str = "OperationalError: database is locked") -> None:
        keep = []
        for request in self.held:
            if isinstance(request, kind):
                self.node.store_failed(request, error, self.now)
            else:
                keep.append(request)
        self.held = keep
        self.pump()

    def _leg_for(self, invite: Request) -> str:
        opened = [c for c in self.commands if isinstance(c, cmd.OpenMedia)]
        port_line = next(
            line for line in invite.body.decode().splitlines() if line.startswith("m=audio")
        )
        port = int(port_line.split()[1])
        for command in reversed(opened):
            if self.media.legs[command.leg_id].port == port:
                return command.leg_id
        raise AssertionError(f"INVITE offers port {port}, which no leg opened")

    def advance(self, seconds: float) -> None:
        """Move the clock, firing every timer that falls due on the way."""
        end = self.now + seconds
        while True:
            due = self.node.get_timer()
            if due is None or due > end:
                break
            self.now = max(self.now, due)
            self.node.handle_timer(self.now)
            self.pump()
        self.now = end
        self.pump()

    # --- the carrier's side ------------------------------------------------------------------

    def trigger(
        self,
        number: str = TRIGGER,
        caller: str = CUSTOMER,
        *,
        ring: float = 1.0,
        how: str = "CANCEL",
    ) -> None:
        """A customer rings ``number`` and hangs up after ``ring`` seconds (never answered)."""
        n = next(self._trigger_seq)
        call_id, branch = f"trigger-{n}", f"z9hG4bK-trigger-{n}"
        invite = (
            f"INVITE sip:{number}@127.0.0.1:5060 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {TRUNK.host}:{TRUNK.port};branch={branch}\r\n"
            f"From: <sip:{caller}@carrier.test>;tag=caller{n}\r\n"
            f"To: <sip:{number}@carrier.test>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n"
            "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        self.node.receive_datagram(invite.encode(), TRUNK, self.now)
        self.pump()
        ringing = [r for r in self.responses if r.call_id == call_id and r.status == 180]
        assert ringing, "the trigger did not ring"
        self.advance(ring)
        if how == "CANCEL":
            cancel = (
                f"CANCEL sip:{number}@127.0.0.1:5060 SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {TRUNK.host}:{TRUNK.port};branch={branch}\r\n"
                f"From: <sip:{caller}@carrier.test>;tag=caller{n}\r\n"
                f"To: <sip:{number}@carrier.test>\r\nCall-ID: {call_id}\r\nCSeq: 1 CANCEL\r\n"
                "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            )
            self.node.receive_datagram(cancel.encode(), TRUNK, self.now)
            self.pump()
            ack = (
                f"ACK sip:{number}@127.0.0.1:5060 SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {TRUNK.host}:{TRUNK.port};branch={branch}\r\n"
                f"From: <sip:{caller}@carrier.test>;tag=caller{n}\r\n"
                f"To: <sip:{number}@carrier.test>;tag={ringing[0].to.tag}\r\n"
                f"Call-ID: {call_id}\r\nCSeq: 1 ACK\r\n"
                "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            )
            self.node.receive_datagram(ack.encode(), TRUNK, self.now)
        else:
            tag = ringing[0].to.tag
            bye = (
                f"BYE sip:{number}@127.0.0.1:5060 SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {TRUNK.host}:{TRUNK.port};branch={branch}-bye\r\n"
                f"From: <sip:{caller}@carrier.test>;tag=caller{n}\r\n"
                f"To: <sip:{number}@carrier.test>;tag={tag}\r\nCall-ID: {call_id}\r\n"
                "CSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            )
            self.node.receive_datagram(bye.encode(), TRUNK, self.now)
        self.pump()

    def ring_trigger(self, number: str = TRIGGER, caller: str = CUSTOMER) -> TriggerCall:
        """A customer rings ``number`` from a phone that offers SDP (and stays on the line)."""
        n = next(self._trigger_seq)
        call = TriggerCall(n, number, caller, f"trigger-{n}", f"z9hG4bK-trigger-{n}")
        body = ANSWER_SDP.replace(b"40000", b"41000")
        invite = (
            f"INVITE sip:{number}@127.0.0.1:5060 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {TRUNK.host}:{TRUNK.port};branch={call.branch}\r\n"
            f"From: <sip:{caller}@carrier.test>;tag=caller{n}\r\n"
            f"To: <sip:{number}@carrier.test>\r\nCall-ID: {call.call_id}\r\n"
            "CSeq: 1 INVITE\r\nContact: <sip:caller@127.0.0.1:5080>\r\nMax-Forwards: 70\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        self.node.receive_datagram(invite, TRUNK, self.now)
        self.pump()
        opened = [
            c.leg_id
            for c in self.commands
            if isinstance(c, cmd.OpenMedia) and c.leg_id.endswith("-trigger")
        ]
        call.leg_id = opened[-1] if opened else ""
        return call

    def trigger_responses(self, call: TriggerCall) -> list[Response]:
        return [r for r in self.responses if r.call_id == call.call_id]

    def trigger_key(self, call: TriggerCall, digits: str, gap: float = 0.3) -> None:
        for digit in digits:
            self.advance(gap)
            self.node.media_event(me.DigitReceived(call.leg_id, digit, "rfc4733", 0), self.now)
            self.pump()

    def trigger_request(self, call: TriggerCall, method: str) -> None:
        """The caller sends ``method`` (CANCEL before the answer; ACK or BYE after it)."""
        tag = ""
        answered = [
            r for r in self.trigger_responses(call) if r.status == 200 and r.cseq.method == "INVITE"
        ]
        if answered:
            tag = answered[-1].to.tag or ""
        seq, branch = (1, call.branch) if method in ("CANCEL", "ACK") else (2, call.branch + "b")
        if method == "ACK" and answered:
            branch = call.branch + "ack"
        to = f"<sip:{call.number}@carrier.test>" + (f";tag={tag}" if tag else "")
        request = (
            f"{method} sip:{call.number}@127.0.0.1:5060 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {TRUNK.host}:{TRUNK.port};branch={branch}\r\n"
            f"From: <sip:{call.caller}@carrier.test>;tag=caller{call.n}\r\nTo: {to}\r\n"
            f"Call-ID: {call.call_id}\r\nCSeq: {seq} {method}\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        self.node.receive_datagram(request.encode(), TRUNK, self.now)
        self.pump()

    def last_call(self, number: str | None = None) -> Call:
        """The latest INVITE the node sent (to ``number``)."""
        found = [c for c in self.calls_out if number is None or c.number.endswith(number)]
        assert found, f"no INVITE to {number} (sent: {[c.number for c in self.calls_out]})"
        return found[-1]

    def ring(self, call: Call, *, early_media: bool = False) -> None:
        call.tag = call.tag or f"far-{call.leg_id}"
        if early_media:
            self._reply(call, 183, body=ANSWER_SDP)
        else:
            self._reply(call, 180)

    def answer(self, call: Call) -> None:
        call.tag = call.tag or f"far-{call.leg_id}"
        self._reply(call, 200, body=ANSWER_SDP)

    def reject(self, call: Call, status: int) -> None:
        self._reply(call, status)

    def _reply(self, call: Call, status: int, *, body: bytes = b"") -> None:
        if status >= 200:
            call.status = status
        self.node.receive_datagram(
            reply(call.invite, status, tag=call.tag or "far", body=body), TRUNK, self.now
        )
        self.pump()

    def hang_up(self, call: Call) -> None:
        """The far end of an answered call sends BYE."""
        inv = call.invite
        bye = (
            f"BYE sip:{inv.from_.uri.user}@127.0.0.1:5060 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {TRUNK.host}:{TRUNK.port};branch=z9hG4bK-bye-{call.leg_id}\r\n"
            f"From: {inv.to};tag={call.tag}\r\nTo: {inv.from_}\r\n"
            f"Call-ID: {inv.call_id}\r\nCSeq: 1 BYE\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        call.hung_up = True
        self.node.receive_datagram(bye.encode(), TRUNK, self.now)
        self.pump()

    def reinvite_from(self, call: Call, body: bytes, seq: int = 2) -> str:
        """The far end of an answered call sends a re-INVITE with ``body``; its Call-ID."""
        inv = call.invite
        request = (
            f"INVITE sip:{inv.from_.uri.user}@127.0.0.1:5060 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {TRUNK.host}:{TRUNK.port};branch=z9hG4bK-re-{call.leg_id}-{seq}\r\n"
            f"From: {inv.to};tag={call.tag}\r\nTo: {inv.from_}\r\n"
            f"Call-ID: {inv.call_id}\r\nCSeq: {seq} INVITE\r\nMax-Forwards: 70\r\n"
            f"Contact: <sip:far@{TRUNK.host}:{TRUNK.port}>\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        self.node.receive_datagram(request, TRUNK, self.now)
        self.pump()
        return inv.call_id

    def answer_request(self, request: Request, status: int, body: bytes = b"") -> None:
        """The carrier answers an in-dialog request the node sent (its To has the tag)."""
        self.node.receive_datagram(reply(request, status, tag="", body=body), TRUNK, self.now)
        self.pump()

    # --- the media's side --------------------------------------------------------------------

    def keys(self, call: Call, digits: str, gap: float = 0.3, source: str = "rfc4733") -> None:
        """The customer presses ``digits`` on ``call``'s leg, ``gap`` seconds apart."""
        for digit in digits:
            self.advance(gap)
            self.node.media_event(me.DigitReceived(call.leg_id, digit, source, 0), self.now)
            self.pump()

    def prompt_done(self, call: Call) -> None:
        self.node.media_event(me.PlayFinished(call.leg_id, False), self.now)
        self.pump()

    def recorded(self, call: Call, duration: float, reason: str = "key") -> None:
        """The recording on ``call``'s leg ended after ``duration`` seconds."""
        leg = self.media.legs[call.leg_id]
        assert leg.recording is not None, "nothing is being recorded"
        event = me.RecordFinished(call.leg_id, leg.recording, duration, reason)
        leg.recording = None
        self.node.media_event(event, self.now)
        self.pump()

    def playing(self, call: Call) -> list[str]:
        """What plays on the leg: prompt names (file stems) and tone names."""
        items = self.media.legs[call.leg_id].playing
        return [i.name if isinstance(i, Tone) else i.stem for i in items]

    def requests_to(self, call: Call, method: str) -> list[Request]:
        return [r for r in self.requests if r.call_id == call.invite.call_id and r.method == method]
