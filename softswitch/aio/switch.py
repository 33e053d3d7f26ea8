"""The callback service on a running node: sessions, media, store and SIP legs joined.

:class:`Switch` is the runtime the sans-IO service needs. It takes the node's trigger
callbacks, queues them durably (:class:`softswitch.store.repos.CallbackQueue`), claims them,
and runs one :class:`softswitch.service.callflow.CustomerCall` per callback. Every action the
state machine returns is carried out here: SIP legs through :class:`softswitch.outbound.
OutboundCalls`, audio through the media engine (:class:`media.aio.MediaShell`), questions about
rates, credit and speed dials through the store (as tasks whose answers come back as events),
timers with ``loop.call_at``, CDRs written durably before the session may forget them.

Times: the state machines run on ``loop.time()``; the store keeps wall-clock UTC seconds, so
times crossing that boundary are converted with one offset taken at start.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from media import engine as me
from media.aio import MediaShell
from media.player import Tone
from softswitch.config import Config
from softswitch.node.node import Node, TriggerCall
from softswitch.node.outbound import LegAnswered, LegEnded, LegFailed, LegRinging
from softswitch.prompts import prompt_path
from softswitch.service import callflow as cf
from softswitch.service import dialplan, rating
from softswitch.sip import sdp
from softswitch.store.db import Database
from softswitch.store.models import Account, Cdr, LegKind, PendingCallback
from softswitch.store.repos import (
    AccountRepo,
    CallbackQueue,
    CdrRepo,
    CreditRepo,
    RateRepo,
    SpeedDialRepo,
)

log = logging.getLogger("softswitch.switch")
T = TypeVar("T")
R = TypeVar("R")

#: How long a claimed callback stays ours before another node may take it over.
CALLBACK_LEASE = 300.0
#: How often due callbacks (retries, other nodes' leftovers, a restart's backlog) are claimed.
CLAIM_INTERVAL = 1.0
#: How often trigger numbers are re-read from the store (accounts added by the CLI).
TRIGGER_REFRESH = 10.0

_LEG_KINDS = {
    cf.CALLBACK: LegKind.CALLBACK,
    cf.DESTINATION: LegKind.DESTINATION,
    cf.OPERATOR: LegKind.OPERATOR,
}


def callback_failure(status: int) -> str:
    """SIP final status of a callback attempt -> the service's failure reason."""
    if status in (486, 600):
        return "busy"
    if status in (408, 480, 487):
        return "no_answer"
    if status in (403, 603):
        return "rejected"
    return "unreachable"


def destination_failure(status: int) -> str:
    if status in (486, 600):
        return "busy"
    if status in (408, 480, 487):
        return "no_answer"
    if status in (403, 404, 484, 603, 604):
        return "rejected"
    if status in (503, 502):
        return "congestion"
    return "unreachable"


class GroupCommit(Generic[T, R]):
    """Run store writes in batches: whatever queued while one batch commits goes in the next.

    Each commit costs milliseconds whatever it holds, so a busy node (hundreds of triggers or
    CDRs per second) writes them together; each caller still waits until its item is durable.
    """

    def __init__(self, run: Callable[[list[T]], Awaitable[list[R]]]) -> None:
        self._run = run
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._draining = False
        self._task: asyncio.Future[None] | None = None

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if not self._draining:
            self._draining = True
            # Keep a reference: the loop holds tasks only weakly.
            self._task = asyncio.ensure_future(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    results = await self._run([item for item, _ in batch])
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._draining = False


@dataclass(slots=True)
class Session:
    """One customer's callback session and the resources it holds."""

    sid: str
    account: Account
    callback: PendingCallback | None  # None until its queue row is committed
    call: cf.CustomerCall
    trigger: str = ""
    #: The session's queue row once committed (None: nothing to settle: absorbed or failed).
    row: asyncio.Future[PendingCallback | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    legs: dict[str, str] = field(default_factory=dict)  # callflow leg name -> leg id
    offers: dict[str, sdp.SessionDescription] = field(default_factory=dict)
    timers: dict[str, asyncio.TimerHandle] = field(default_factory=dict)
    reserved: bool = False
    finished: bool = False
    writes: list[asyncio.Future[Any]] = field(default_factory=list)
    #: How each of the customer's recent keys arrived, oldest first ("rfc4733" / "inband").
    key_sources: deque[tuple[str, str]] = field(default_factory=lambda: deque(maxlen=32))


class Switch:
    """Runs callback sessions on one node."""

    def __init__(
        self, config: Config, node: Node, db: Database, *, transmit: Callable[[], None]
    ) -> None:
        self.config = config
        self.node = node
        self.db = db
        self.transmit = transmit
        self.node_id = f"{os.uname().nodename}:{os.getpid()}"
        self.accounts = AccountRepo(db)
        self.rates = RateRepo(db)
        self.credit = CreditRepo(db)
        self.cdrs = CdrRepo(db)
        self.speed_dials = SpeedDialRepo(db)
        self.queue = CallbackQueue(db)
        self.sessions: dict[str, Session] = {}
        self._by_leg: dict[str, tuple[Session, str]] = {}
        self._tasks: set[asyncio.Future[Any]] = set()
        self._loop = asyncio.get_running_loop()
        self._wall_offset = time.time() - self._loop.time()
        self.media = MediaShell(
            me.MediaEngine(),
            host=config.media_host,
            port_range=config.rtp_ports,
            on_event=self._media_event,
        )
        self._claim_timer: asyncio.TimerHandle | None = None
        self._stopping = False
        self._claiming = False
        self._account_triggers: dict[str, Account] = {}
        self._next_refresh = self._loop.time() + TRIGGER_REFRESH
        self._enqueues: GroupCommit[tuple[int, str], tuple[PendingCallback, bool]] = GroupCommit(
            lambda items: self.queue.enqueue_many(
                items, now=time.time(), claim_for=(self.node_id, CALLBACK_LEASE)
            )
        )
        self._cdr_writes: GroupCommit[Cdr, Cdr] = GroupCommit(self.cdrs.write_many)
        self._settlements: GroupCommit[tuple[int, str, str | None], bool] = GroupCommit(
            lambda items: self.queue.settle_many(items, node_id=self.node_id)
        )
        node.keep_trigger_calls = True

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.db.migrate()
        await self._refresh_triggers()
        self.media.start()
        self._schedule_claim()
        log.info("callback service ready (node %s, store %s)", self.node_id, self.db.url)

    async def stop(self) -> None:
        self._stopping = True
        if self._claim_timer is not None:
            self._claim_timer.cancel()
        for session in list(self.sessions.values()):
            # A stopping node hangs up its live calls: each ends as if the customer had hung
            # up, so its CDRs are written and its callback settled before the store closes.
            self._feed(session, cf.CustomerHungUp())
        self.transmit()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5.0)
        self.media.stop()

    def wall(self, now: float) -> float:
        return now + self._wall_offset

    # --- driven by the server after every input -----------------------------------------------

    def poll(self) -> None:
        """Take what the node produced: new callback requests and leg events."""
        node = self.node
        # A trigger that schedules a callback and the session it starts share one call_uuid,
        # so the trigger, callback and destination CDRs of a customer's call group together.
        sids: dict[str, str] = {}
        while node.callbacks:
            request = node.callbacks.pop(0)
            sid = sids[request.trigger] = uuid.uuid4().hex
            self._spawn(self._enqueue(request.trigger, request.caller, sid))
        while node.trigger_calls:
            call = node.trigger_calls.pop(0)
            # Static test triggers from the config belong to no account: no CDR for them.
            if call.trigger in self._account_triggers:
                shared = sids.pop(call.trigger, None) if call.callback else None
                self._spawn(self._trigger_cdr(call, shared or uuid.uuid4().hex))
        outbound = node.outbound
        if outbound is None:
            return
        while (event := outbound.next_event()) is not None:
            self._leg_event(event)

    # --- callbacks: queue, claim, start ---------------------------------------------------------

    async def _trigger_cdr(self, call: TriggerCall, call_uuid: str) -> None:
        """The trigger leg's CDR: never answered, never billed, but on record (SPEC 7)."""
        account = self._account_triggers.get(call.trigger)
        if account is None:
            return
        await self._cdr_writes.submit(
            Cdr(
                call_uuid=call_uuid,
                leg=LegKind.TRIGGER,
                account_id=account.id,
                from_number=call.caller,
                to_number=call.trigger,
                setup_at=self.wall(call.started_at),
                ring_at=self.wall(call.started_at),
                end_at=self.wall(call.ended_at),
                cause_code=call.status,
                cause_text=f"trigger ended by {call.how}"
                + ("" if call.callback else "; a callback was already pending"),
                node_id=self.node_id,
            )
        )

    async def _refresh_triggers(self) -> None:
        accounts = await self.accounts.list()
        self._account_triggers = {n: a for a in accounts for n in a.triggers}
        self.node.triggers.set_numbers(
            set(self._account_triggers) | set(self.config.trigger_numbers)
        )

    async def _enqueue(self, trigger: str, caller: str, sid: str) -> None:
        # The account as last read (every few seconds); the store is asked only for a trigger
        # number the cache does not know yet. Money questions always go to the store.
        account = self._account_triggers.get(trigger) or await self.accounts.by_trigger(trigger)
        if account is None:
            log.info(
                "trigger %s from %s: no account owns it (configured static trigger)",
                trigger,
                caller,
            )
            return
        if not account.active:
            log.warning(
                "trigger %s from %s: account %d (%s) is suspended, no callback",
                trigger,
                caller,
                account.id,
                account.name,
            )
            return
        # The callback leaves at once; its queue row (already claimed by this node, so a crash
        # leaves it to another node when the lease runs out) is committed alongside, in the
        # same few milliseconds, instead of in front of it: a store commit costs more than
        # the whole 50 ms budget allows under load.
        enqueued = asyncio.ensure_future(self._enqueues.submit((account.id, trigger)))
        session = await self._start_session(None, account, trigger, sid)
        try:
            pending, created = await enqueued
        except Exception:
            log.exception("trigger %s: the callback could not be queued", trigger)
            if session is not None:
                session.row.set_result(None)
            raise
        if session is None:
            await self._settlements.submit((pending.id, "fail", "cannot call back"))
            return
        if not created:
            # Another node (or an earlier trigger) owns an open callback for this account.
            log.info(
                "trigger %s: callback %d already pending for account %d, absorbed",
                trigger,
                pending.id,
                account.id,
            )
            session.row.set_result(None)
            self._feed(session, cf.CustomerHungUp())
            return
        session.callback = pending
        session.row.set_result(pending)

    def _schedule_claim(self) -> None:
        if self._stopping:
            return
        self._claim_timer = self._loop.call_later(CLAIM_INTERVAL, self._claim_tick)

    def _claim_tick(self) -> None:
        self._spawn(self._claim_and_refresh())
        self._schedule_claim()

    async def _claim_and_refresh(self) -> None:
        await self._claim()
        if self._loop.time() >= self._next_refresh:
            self._next_refresh = self._loop.time() + TRIGGER_REFRESH
            await self._refresh_triggers()

    async def _claim(self) -> None:
        if self._claiming or self._stopping:
            return
        self._claiming = True
        try:
            due = await self.queue.claim_due(self.node_id, time.time(), CALLBACK_LEASE)
            for pending in due:
                await self._start_session(pending)
        finally:
            self._claiming = False

    async def _start_session(
        self,
        pending: PendingCallback | None,
        account: Account | None = None,
        trigger: str = "",
        sid: str | None = None,
    ) -> Session | None:
        """Start calling back; ``pending`` is None while its queue row is being written."""
        if account is None:
            assert pending is not None
            account = await self.accounts.get(pending.account_id)
        location = account.location
        try:
            if location is None:
                raise dialplan.DestinationRefused(dialplan.RefusalReason.INVALID, "no location")
            dial = dialplan.normalize_destination(location.number, self._prefix()).dial_string
        except dialplan.DestinationRefused as exc:
            log.warning("account %d (%s): cannot call back: %s", account.id, account.name, exc)
            if pending is not None:
                await self._settlements.submit((pending.id, "fail", f"bad location: {exc}"))
            return None
        call = cf.CustomerCall(
            location=dial,
            caller_id=self._caller_id(),
            extension=location.extension or "",
            has_name=bool(account.recorded_name_path),
            preset_destination=account.hotline_destination,
            trigger_numbers=account.triggers,
            operator=self.config.operator,
        )
        sid = sid or uuid.uuid4().hex
        session = Session(
            sid,
            account,
            pending,
            call,
            trigger=trigger or (pending.trigger if pending is not None else ""),
        )
        if pending is not None:
            session.row.set_result(pending)
        self.sessions[sid] = session
        log.info(
            "session %s: calling back account %d (%s) at %s",
            sid[:8],
            account.id,
            account.name,
            location.number,
        )
        self._apply(session, call.start(self._loop.time()))
        self.transmit()
        return session

    def _prefix(self) -> str:
        trunk = self.config.trunk
        return trunk.international_prefix if trunk is not None else "+"

    def _caller_id(self) -> str | None:
        trunk = self.config.trunk
        return trunk.caller_id if trunk is not None else None

    # --- events into sessions -----------------------------------------------------------------

    def _feed(self, session: Session, event: cf.Event) -> None:
        if session.finished:
            return
        try:
            actions = session.call.handle(event, self._loop.time())
        except cf.CallFlowError as exc:
            log.info("session %s: %s ignored (%s)", session.sid[:8], type(event).__name__, exc)
            return
        self._apply(session, actions)
        self.transmit()

    def _leg_event(self, event: LegRinging | LegAnswered | LegFailed | LegEnded) -> None:
        found = self._by_leg.get(event.leg_id)
        if found is None:
            return
        session, name = found
        if isinstance(event, LegRinging):
            if event.sdp is not None:
                self._set_remote(session, name, event.sdp)
            if name == cf.CALLBACK:
                self._feed(session, cf.CallbackRinging())
            elif name == cf.DESTINATION:
                self._feed(session, cf.DestinationRinging(early_media=event.sdp is not None))
            else:
                self._feed(session, cf.OperatorRinging(early_media=event.sdp is not None))
        elif isinstance(event, LegAnswered):
            self._set_remote(session, name, event.sdp)
            if name == cf.CALLBACK:
                self._feed(session, cf.CallbackAnswered())
            else:
                self._feed(
                    session,
                    cf.DestinationAnswered() if name == cf.DESTINATION else cf.OperatorAnswered(),
                )
        elif isinstance(event, LegFailed):
            self._close_leg(event.leg_id)
            if name == cf.CALLBACK:
                self._feed(session, cf.CallbackFailed(callback_failure(event.status), event.status))
            else:
                cause = destination_failure(event.status)
                self._feed(
                    session,
                    cf.DestinationFailed(cause, event.status)
                    if name == cf.DESTINATION
                    else cf.OperatorFailed(cause, event.status),
                )
        elif isinstance(event, LegEnded) and event.by_remote:
            self._close_leg(event.leg_id)
            if name == cf.CALLBACK:
                self._feed(session, cf.CustomerHungUp())
            else:
                self._feed(
                    session,
                    cf.DestinationHungUp() if name == cf.DESTINATION else cf.OperatorHungUp(),
                )

    def _media_event(self, event: me.Event) -> None:
        found = self._by_leg.get(event.leg_id)
        if found is None:
            return
        session, name = found
        if isinstance(event, me.DigitReceived):
            if event.digit in cf.DTMF_KEYS and name == cf.CALLBACK:
                session.key_sources.append((event.digit, event.source))
                self._feed(session, cf.DigitReceived(event.digit, source=event.source))
        elif isinstance(event, me.PlayFinished):
            if not event.interrupted and name == cf.CALLBACK:
                self._feed(session, cf.PromptFinished())
        elif isinstance(event, me.RtpTimeout):
            log.warning(
                "session %s: no RTP from the %s leg for %.0f s",
                session.sid[:8],
                name,
                event.silent_s,
            )

    def _set_remote(self, session: Session, name: str, body: bytes) -> None:
        leg_id = session.legs.get(name)
        offer = session.offers.get(name)
        if leg_id is None or offer is None or not body:
            return
        try:
            media = sdp.parse_answer(offer, sdp.parse_sdp(body))
        except sdp.SdpError as exc:
            log.warning("session %s: bad SDP answer on the %s leg: %s", session.sid[:8], name, exc)
            return
        self.media.engine.set_remote(
            leg_id,
            media.remote_address,
            media.remote_port,
            media.codec,
            media.telephone_event_pt,
            self._loop.time(),
        )

    # --- actions out of sessions --------------------------------------------------------------

    def _apply(self, session: Session, actions: list[cf.Action]) -> None:
        for action in actions:
            try:
                self._do(session, action)
            except Exception:
                log.exception("session %s: action %r failed", session.sid[:8], action)

    def _do(self, session: Session, action: cf.Action) -> None:
        engine = self.media.engine
        now = self._loop.time()
        if isinstance(action, cf.Originate):
            self._spawn(self._originate(session, action))
        elif isinstance(action, cf.HangUp):
            leg_id = session.legs.get(action.leg)
            if leg_id is not None and self.node.outbound is not None:
                self.node.outbound.hangup(leg_id, now)
                self._close_leg(leg_id)
        elif isinstance(action, cf.Play):
            leg_id = session.legs[action.leg]
            items = [self._prompt(session, name) for name in action.prompts]
            log.debug(
                "session %s: playing %s on the %s leg",
                session.sid[:8],
                " + ".join(str(i) for i in items),
                action.leg,
            )
            engine.play(leg_id, items, barge_in=action.barge_in, mix=action.mix)
        elif isinstance(action, cf.PlayTone):
            engine.play(
                session.legs[action.leg],
                [Tone(action.tone, country=self.config.tone_country)],
                barge_in=False,
            )
        elif isinstance(action, cf.StopPlayback):
            leg_id = session.legs.get(action.leg)
            if leg_id is not None and leg_id in engine.legs:
                engine.stop_play(leg_id)
        elif isinstance(action, cf.SendDtmf):
            for digit in action.digits:
                engine.send_dtmf(session.legs[action.leg], digit, mode="both")
        elif isinstance(action, cf.ForwardDigit):
            leg_id = session.legs.get(action.to_leg)
            if leg_id is not None and self._key_source(session, action.digit) != "inband":
                # An in-band key already reached the far end inside the relayed audio; only
                # RFC 4733 keys (kept back from the bridge) are sent on.
                engine.send_dtmf(leg_id, action.digit, mode="rfc4733")
        elif isinstance(action, cf.Bridge):
            engine.bridge(session.legs[action.leg_a], session.legs[action.leg_b])
            session.key_sources.clear()  # keys dialled before the bridge are never forwarded
        elif isinstance(action, cf.Unbridge):
            leg_id = session.legs.get(action.leg_a)
            if leg_id is not None and leg_id in engine.legs:
                engine.unbridge(leg_id)
        elif isinstance(action, cf.Authorize):
            self._spawn(self._authorize(session, action.number))
        elif isinstance(action, cf.ResolveSpeedDial):
            self._spawn(self._speed_dial(session, action.code))
        elif isinstance(action, cf.StartTimer):
            self._start_timer(session, action.name, action.at)
        elif isinstance(action, cf.CancelTimer):
            handle = session.timers.pop(action.name, None)
            if handle is not None:
                handle.cancel()
        elif isinstance(action, cf.WriteCdr):
            session.writes.append(self._spawn(self._write_cdr(session, action)))
        elif isinstance(action, cf.Conference):
            for leg in action.legs:
                engine.join_conference(session.sid, session.legs[leg])
        elif isinstance(action, cf.Finished):
            self._spawn(self._finish(session, action.reason))
        # StartBilling / StopBilling: billing is computed from the CDR times.

    @staticmethod
    def _key_source(session: Session, digit: str) -> str:
        """How the oldest unforwarded ``digit`` arrived (and forget it)."""
        for index, (key, source) in enumerate(session.key_sources):
            if key == digit:
                del session.key_sources[index]
                return source
        return "rfc4733"

    def _prompt(self, session: Session, name: str) -> Path:
        if name == "name" and session.account.recorded_name_path:
            return Path(session.account.recorded_name_path)
        return prompt_path(session.account.language.value, name, self.config.prompts_dir)

    def _start_timer(self, session: Session, name: str, at: float) -> None:
        old = session.timers.pop(name, None)
        if old is not None:
            old.cancel()

        def fire() -> None:
            session.timers.pop(name, None)
            self._feed(session, cf.TimerFired(name))

        session.timers[name] = self._loop.call_at(at, fire)

    async def _originate(self, session: Session, action: cf.Originate) -> None:
        outbound = self.node.outbound
        if outbound is None:
            log.error("session %s: no trunk configured, cannot call out", session.sid[:8])
            self._feed(
                session,
                cf.CallbackFailed("unreachable", None)
                if action.leg == cf.CALLBACK
                else cf.DestinationFailed("unreachable", None)
                if action.leg == cf.DESTINATION
                else cf.OperatorFailed("unreachable", None),
            )
            return
        old = session.legs.get(action.leg)
        if old is not None:
            self._close_leg(old)
        leg_id = f"{session.sid[:8]}-{action.leg}-{action.attempt}-{uuid.uuid4().hex[:4]}"
        port = await self.media.open_leg(leg_id)
        self.media.engine.enable_dtmf(leg_id, inband=True, fax=True)
        if action.leg == cf.CALLBACK:
            # The service decides which of the customer's keys reach the destination (``**``
            # and ``##`` are commands, ``*``/``#`` are held back): no relaying by the bridge.
            self.media.engine.relay_dtmf_events(leg_id, False)
        offer = sdp.make_offer(self.config.media_host, port, session_id=int(time.time()))
        session.legs[action.leg] = leg_id
        session.offers[action.leg] = offer
        self._by_leg[leg_id] = (session, action.leg)
        timeout = (
            self.config.callback_ring_timeout
            if action.leg == cf.CALLBACK
            else self.config.destination_ring_timeout
        )
        outbound.originate(
            leg_id,
            action.dial_string,
            bytes(offer),
            self._loop.time(),
            caller_id=action.caller_id,
            ring_timeout=timeout,
        )
        self.transmit()

    async def _authorize(self, session: Session, number: str) -> None:
        account = await self.accounts.get(session.account.id)
        try:
            dial = dialplan.normalize_destination(
                number, self._prefix(), blocked_prefixes=self.config.blocked_prefixes
            )
        except dialplan.DestinationRefused as exc:
            self._feed(session, cf.Refused(exc.reason.value))
            return
        rate = await self.rates.lookup(number)
        if rate is None or rate.blocked:
            self._feed(session, cf.Refused("blocked" if rate is not None else "invalid"))
            return
        reservation = rating.reservation_for(
            account.available_credit, rate.price_per_minute, rate.minimum_s, rate.increment_s
        )
        if reservation.max_seconds <= 0:
            self._feed(session, cf.Refused("no_credit"))
            return
        ok = await self.credit.reserve(account.id, reservation.amount, session.sid, now=time.time())
        if not ok:
            self._feed(session, cf.Refused("no_credit"))
            return
        session.reserved = True
        self._feed(
            session,
            cf.Authorized(
                number,
                dial.dial_string,
                rate.price_per_minute,
                reservation.max_seconds,
                rate.minimum_s,
                rate.increment_s,
            ),
        )

    async def _speed_dial(self, session: Session, code: str) -> None:
        found = await self.speed_dials.get(session.account.id, code)
        self._feed(session, cf.SpeedDialResolved(found.number if found else None))

    async def _write_cdr(self, session: Session, cdr: cf.WriteCdr) -> None:
        record = Cdr(
            call_uuid=session.sid,
            leg=_LEG_KINDS.get(cdr.leg, LegKind.DESTINATION),
            account_id=session.account.id,
            from_number=self._caller_id() or "",
            # E.164 digits, whatever prefix the trunk wanted in the dial string.
            to_number=(
                session.account.location.number
                if cdr.leg == cf.CALLBACK and session.account.location is not None
                else cdr.number.lstrip("+")
            ),
            setup_at=self.wall(cdr.setup_at),
            ring_at=None if cdr.ring_at is None else self.wall(cdr.ring_at),
            answer_at=None if cdr.answer_at is None else self.wall(cdr.answer_at),
            end_at=self.wall(cdr.end_at),
            cause_code=cdr.sip_status,
            cause_text=cdr.cause,
            billed_seconds=cdr.billed_seconds,
            cost=cdr.cost,
            node_id=self.node_id,
        )
        await self._cdr_writes.submit(record)
        if cdr.leg == cf.DESTINATION and cdr.cost and session.reserved:
            await self.credit.commit(session.sid, cdr.cost)
            session.reserved = False
        log.info(
            "session %s: CDR %s leg to %s, %s, billed %d s, cost %d",
            session.sid[:8],
            cdr.leg,
            cdr.number,
            cdr.cause,
            cdr.billed_seconds,
            cdr.cost,
        )

    async def _finish(self, session: Session, reason: str) -> None:
        session.finished = True
        for handle in session.timers.values():
            handle.cancel()
        session.timers.clear()
        for leg_id in list(session.legs.values()):
            self._close_leg(leg_id)
        # This session's CDRs land before its callback is settled (and before it is forgotten).
        if session.writes:
            await asyncio.wait(session.writes, timeout=10.0)
        if session.reserved:
            await self.credit.release(session.sid)
        row = await session.row  # committed alongside the first attempt
        if row is not None:
            event = "fail" if reason.startswith("callback_") else "complete"
            await self._settlements.submit((row.id, event, reason if event == "fail" else None))
        self.node.triggers.callback_done(session.trigger)
        self.sessions.pop(session.sid, None)
        log.info("session %s: finished (%s)", session.sid[:8], reason)

    def _close_leg(self, leg_id: str) -> None:
        self._by_leg.pop(leg_id, None)
        if leg_id in self.media.transports:
            self.media.close_leg(leg_id)

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Future[Any]:
        task: asyncio.Future[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)

        def done(t: asyncio.Future[Any]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("switch task failed", exc_info=t.exception())

        task.add_done_callback(done)
        return task
