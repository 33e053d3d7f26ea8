"""The call controller: customers' calls joined to SIP legs, media and the store. Sans-IO.

Theory of operation. A trigger that ends (:class:`~softswitch.service.trigger.TriggerEnded`,
from the node) becomes a customer call: the controller writes the trigger leg's CDR, checks
the account (known trigger numbers come from the store every few seconds), de-duplicates
against the account's live call, then starts one :class:`~softswitch.service.callflow.
CustomerCall` and queues the callback durably *alongside* its first attempt (the INVITE leaves
at once; the queue row is committed in the same few milliseconds, already claimed by this
node). Callbacks due in the queue (retries of a restart's backlog, another node's leftovers)
are claimed every second; the leases of live calls are renewed, so a long call is never
called back a second time.

Every action the call flow returns becomes a command (:mod:`softswitch.node.commands`) or a
call into the node's outbound legs:

* ``Originate``: open the leg's media (``OpenMedia``), then, with its port, an SDP offer and an
  INVITE through the trunk (:class:`~softswitch.node.outbound.OutboundCalls`); ``HangUp``:
  CANCEL or BYE, and close the media;
* ``Play``/``PlayTone``/``Bridge``/``Conference``/...: media commands on the legs' ids, with
  prompts resolved to files in the account's language (and the recorded name);
* ``Authorize``: the dial plan (pure), then ``QuoteRate`` and ``ReserveCredit`` in the store,
  answered to the call flow as ``Authorized`` or ``Refused``; ``ResolveSpeedDial``:
  ``LookUpSpeedDial``;
* ``WriteCdr``: a store CDR in wall-clock time, plus the destination's credit committed (or
  released) under the reservation it was authorised with;
* ``StartTimer``/``CancelTimer``: named timers behind :meth:`get_timer` / :meth:`handle_timer`;
* ``Finished``: once the session's CDR writes are durable, its queue row is settled and the
  trigger number may ask again.

SIP outcomes become service reasons here (:func:`callback_failure`,
:func:`destination_failure`); digits and prompt ends from the media engine become call-flow
events. Nothing here reads a clock: ``now`` comes with every input and the wall-clock offset
with :meth:`sync_clock`.
"""

from __future__ import annotations

import heapq
import json
import logging
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from media import engine as me
from media.player import Tone
from softswitch import prompts
from softswitch.config import Config
from softswitch.logs import CallLog, call_log, security_event
from softswitch.node import commands as cmd
from softswitch.node.inbound import InboundCalls, InboundEnded
from softswitch.node.outbound import (
    LegAnswered,
    LegEnded,
    LegEvent,
    LegFailed,
    LegReinvite,
    LegReinviteAnswered,
    LegRinging,
    OutboundCalls,
)
from softswitch.service import callflow as cf
from softswitch.service import dialplan, rating
from softswitch.service import menu as mn
from softswitch.service.callbacks import (
    CALLBACK_LEASE,
    CLAIM_INTERVAL,
    LEASE_RENEWAL,
    LIVE_HEARTBEAT,
    RECOVERY_INTERVAL,
    RECOVERY_PASSES,
    STALE_AFTER,
    STATIC_TRIGGER_HOLD,
    TRIGGER_REFRESH,
    settlement,
)
from softswitch.service.ivr import DTMF_KEYS, Record, RecordFinished
from softswitch.service.ratelimit import OutboundLimit, TriggerLimits
from softswitch.service.trigger import TriggerEnded, TriggerService
from softswitch.sip import sdp
from softswitch.store.models import (
    Account,
    Cdr,
    LegKind,
    LiveCall,
    PendingCallback,
    Rate,
)

__all__ = [
    "CallController",
    "CallInfo",
    "LegInfo",
    "Session",
    "callback_failure",
    "callflow_config",
    "destination_failure",
]

log = logging.getLogger("softswitch.calls")

#: The node's own timers (not a session's).
_NODE = ""
#: The leg name of a trigger call the service took over (early media, the menu).
TRIGGER_LEG = "trigger"
_MENU_CALL_EVENTS = (
    cf.DigitReceived,
    cf.PromptFinished,
    RecordFinished,
    cf.TimerFired,
    mn.CodeChecked,
    mn.LocationSaved,
    mn.NameSaved,
    cf.CustomerHungUp,
    cf.Abort,
)


def _menu_actions(actions: list[mn.MenuCallAction]) -> list[cf.Action]:
    """A menu call's actions as the controller carries them out (the menu's end is inside)."""
    return [a for a in actions if not isinstance(a, mn.MenuDone)]


_LEG_KINDS = {
    cf.CALLBACK: LegKind.CALLBACK,
    cf.DESTINATION: LegKind.DESTINATION,
    cf.OPERATOR: LegKind.OPERATOR,
}


#: The daily spend cap's window (seconds): any 24 hours, whatever the time zone.
DAY = 86400.0
#: The outbound cap's ERROR is logged at most this often (seconds).
OUTBOUND_CAP_LOG_INTERVAL = 10.0
#: The timer heap is compacted when it holds more disarmed entries than armed ones plus this
#: many (amortized: one pass over the heap per at least this many arms).
HEAP_SLACK = 256


def callback_failure(status: int | None) -> str:
    """SIP final status of a callback attempt -> the call flow's failure reason.

    Busy and no answer are retried, as is a network that cannot reach the customer now (5xx,
    a timeout); a number that does not exist or refuses (403, 404, 484, 603, 604) is not.
    """
    if status in (486, 600):
        return "busy"
    if status in (408, 480, 487):
        return "no_answer"
    if status in (403, 404, 484, 603, 604):
        return "rejected"
    return "unreachable"


def destination_failure(status: int | None) -> str:
    """SIP final status of a destination (or operator) attempt -> the failure cause."""
    if status in (486, 600):
        return "busy"
    if status in (408, 480, 487):
        return "no_answer"
    if status in (403, 404, 484, 603, 604):
        return "rejected"
    if status in (503, 502):
        return "congestion"
    return "unreachable"


def menu_config(config: Config) -> mn.MenuConfig:
    """The Location menu's settings from the node configuration."""
    return mn.MenuConfig(blocked_prefixes=config.blocked_prefixes)


def callflow_config(config: Config) -> cf.CallFlowConfig:
    """The call flow's timing and limits from the node configuration (``[service]``)."""
    return cf.CallFlowConfig(
        callback_attempts=config.callback_attempts,
        callback_ring_timeout=config.callback_ring_timeout,
        callback_retry_pause=config.callback_retry_pause,
        destination_ring_timeout=config.destination_ring_timeout,
        silence_timeout=config.silence_timeout,
        after_call_idle=config.after_call_idle,
        first_digit_timeout=config.first_digit_timeout,
        inter_digit_timeout=config.inter_digit_timeout,
    )


@dataclass(slots=True)
class Session:
    """One customer's call and what it holds: legs, timers, store writes, credit, queue row."""

    sid: str
    account: Account
    #: The customer's callback call, or the Location menu on an answered trigger call (None
    #: while that trigger still rings).
    call: cf.CustomerCall | mn.MenuCall | None
    trigger: str
    #: The queue row being settled at the end (None: none, or the enqueue failed/absorbed).
    callback_id: int | None = None
    #: False while the enqueue that goes alongside the first attempt is unanswered.
    row_known: bool = True
    legs: dict[str, str] = field(default_factory=dict)  # call-flow leg name -> leg id
    offers: dict[str, sdp.SessionDescription] = field(default_factory=dict)
    #: The credit reservation of the destination being dialled or talked to.
    reservation: str | None = None
    reservations: int = 0
    #: Store requests of this session still unanswered: its CDR and credit writes must be
    #: durable (and its questions answered) before the row settles and the session goes.
    outstanding: set[int] = field(default_factory=set)
    authorizing: tuple[str, str] | None = None  # (number, dial string) being rated
    quote: tuple[Rate, rating.Reservation] | None = None  # its rate and reservation
    finished: str | None = None  # the reason, once the call flow said Finished
    answered: bool = False  # the customer answered a callback attempt
    started_at: float = 0.0  # the node's now when the session began
    key_source: str | None = None  # how the customer's last key came: rfc4733 or inband
    retry_at: float | None = None  # wall-clock due time of the next attempt (RetryLater)
    call_back_now: bool = False  # the Location menu asked for a callback at the new location
    recordings: int = 0  # recordings made at the name menu
    new_name: str | None = None  # the latest recording's file name (not yet saved)
    node: str = ""  # the node serving it (its call lines say so: a cluster's logs mix)
    name_path: str | None = None  # the recorded name saved in this call (newer than account's)
    #: A trigger call the service took over (early media, the menu): its key, its caller,
    #: our SDP answer, and how it was answered.
    key: str | None = None
    caller: str = ""
    answer_sdp: bytes | None = None
    answered_how: str | None = None
    answered_at: float | None = None
    #: Relayed re-INVITEs (T.38): the leg we offered it to -> the leg that asked.
    reinvites: dict[str, str] = field(default_factory=dict)
    #: Written down in the store as live (see ``_track``), to be forgotten at the end.
    tracked: bool = False
    #: The store writes (CDR, credit) of legs that ended while the call goes on, until they
    #: are durable: the description keeps those legs till then (see ``_track``).
    recording: set[int] = field(default_factory=set)

    @property
    def short(self) -> str:
        return self.sid[:8]

    @property
    def log(self) -> CallLog:
        """This call's logger: every line starts ``call=<uuid> leg=- account=<id> node=<id>:``."""
        return call_log(log, self.sid, self.account.id, node=self.node)


@dataclass(frozen=True, slots=True)
class LegInfo:
    """One leg of a live call, for the operators (``softswitch calls``)."""

    name: str
    leg_id: str
    state: str


@dataclass(frozen=True, slots=True)
class CallInfo:
    """A live customer call as an operator sees it: who, where in the flow, which legs."""

    sid: str
    account_id: int
    account_name: str
    trigger: str
    state: str
    started_at: float  # wall-clock UTC seconds
    duration: float
    legs: tuple[LegInfo, ...]
    key_source: str | None


class CallController:
    """Every customer call of one node; see the module docstring."""

    def __init__(
        self,
        config: Config,
        outbound: OutboundCalls | None,
        triggers: TriggerService,
        *,
        node_id: str = "node",
        new_id: Callable[[], str] | None = None,
        flow: cf.CallFlowConfig | None = None,
        inbound: InboundCalls | None = None,
    ) -> None:
        self.config = config
        self.outbound = outbound
        self.inbound = inbound
        self.triggers = triggers
        self.node_id = node_id
        self.flow = flow or callflow_config(config)
        self.menu = menu_config(config)
        #: Trigger numbers' use by phone, web and mail in one window (web and mail sources
        #: too: the web page and the mail listener check here), and the cap on call attempts.
        self.limits = TriggerLimits(config.limits)
        self.outbound_limit = OutboundLimit(config.limits.outbound_per_minute)
        self._cap_logged_at = -OUTBOUND_CAP_LOG_INTERVAL
        #: Where recordings are played from (the shell writes them there).
        self._recordings = recordings_dir(config)
        #: Settlements whose commit lets a new callback be queued (the Location menu's
        #: "call back now"): request id -> (account id, trigger).
        self._after_settle: dict[int, tuple[int, str]] = {}
        self._new_id = new_id or (lambda: uuid.uuid4().hex)
        self.sessions: dict[str, Session] = {}
        self._by_account: dict[int, Session] = {}
        self._by_leg: dict[str, tuple[Session, str]] = {}
        self._opening: dict[str, tuple[Session, cf.Originate]] = {}
        #: Trigger calls taken over: by trigger key, and their legs whose socket is binding.
        self._trigger_sessions: dict[str, Session] = {}
        self._trigger_opening: dict[str, Session] = {}
        self._accounts: dict[str, Account] = {}
        #: Accounts whose callback waits in the queue for its next attempt: (trigger, sid).
        self._retrying: dict[int, tuple[str, str]] = {}
        self._commands: deque[cmd.Command] = deque()
        self._pending: dict[int, Session | None] = {}  # store request id -> its session
        self._rid = 0
        self._heap: list[tuple[float, int, str, str]] = []
        self._armed: dict[tuple[str, str], int] = {}  # (sid, name) -> heap entry's sequence
        self._seq = 0
        self._wall_offset = 0.0
        self._claiming = False
        self._loading = False
        self._recovering = False
        #: Calls of dead nodes being recovered: their writes not yet answered (by rid); the
        #: writes that failed (the description stays, a later pass retries just those); and
        #: how many passes each has had.
        self._recoveries: dict[str, set[int]] = {}
        self._recovery_of: dict[int, tuple[str, cmd.StoreRequest]] = {}
        self._recovery_failed: dict[str, list[cmd.StoreRequest]] = {}
        self._recovery_passes: dict[str, int] = {}
        self._renew_at = 0.0
        self._heartbeat_at = 0.0
        self._recover_at = 0.0
        self.ready = False
        #: No new calls start (SIGTERM's drain): triggers are queued for later, claims stop.
        self.draining = False
        #: The node is stopping: the calls still up are hung up.
        self.stopping = False

    # --- inputs -----------------------------------------------------------------------------

    def sync_clock(self, now: float, wall: float) -> None:
        """``wall`` (UTC seconds, the store's clock) is what ``now`` is on the wall."""
        self._wall_offset = wall - now

    def wall(self, now: float) -> float:
        return now + self._wall_offset

    def start(self, now: float) -> None:
        """Load the accounts; claim due callbacks every second from then on."""
        self._load_accounts()
        self._arm(_NODE, "claim", now + CLAIM_INTERVAL)
        self._arm(_NODE, "refresh", now + TRIGGER_REFRESH)
        self._renew_at = now + LEASE_RENEWAL
        self._heartbeat_at = now + LIVE_HEARTBEAT
        # The calls a dead node (or this one, before a crash) left: recovered from the start.
        self._recover_at = now
        self._recover(now)

    def stop(self, now: float) -> None:
        """A stopping node hangs up its live calls (CANCEL or BYE on every leg, the customer's
        too), writes their CDRs and settles their callbacks by the usual path; the shell
        waits for those store writes before it closes the store."""
        self.stopping = self.draining = True
        for session in list(self.sessions.values()):
            if session.call is None:
                if session.key is not None:
                    self._trigger_sessions.pop(session.key, None)
                self._drop(session)
            elif session.finished is None:
                self._feed(session, cf.Abort("node_stopping"), now)
        for key in [k for k in self._armed if k[0] == _NODE]:
            del self._armed[key]

    def drain(self, now: float) -> None:
        """Start no new calls: live ones go on; triggers and due callbacks wait in the queue."""
        if not self.draining:
            log.info("draining: %d live calls go on, new triggers are queued", len(self.sessions))
        self.draining = True

    def calls(self, now: float) -> list[CallInfo]:
        """The live calls, oldest first (the admin API's ``/calls``)."""
        out = []
        for session in self.sessions.values():
            if session.finished is not None:
                continue
            legs = tuple(
                LegInfo(name, leg_id, self._leg_state(leg_id))
                for name, leg_id in session.legs.items()
            )
            out.append(
                CallInfo(
                    session.sid,
                    session.account.id,
                    session.account.name,
                    session.trigger,
                    "TRIGGER_RINGING" if session.call is None else session.call.state.name,
                    self.wall(session.started_at),
                    now - session.started_at,
                    legs,
                    session.key_source,
                )
            )
        return sorted(out, key=lambda c: c.started_at)

    def hang_up(self, sid: str, now: float) -> bool:
        """End a live call as an operator asked (every leg released, CDRs written).

        ``sid`` may be the session id or its first eight characters (what logs show).
        """
        for session in list(self.sessions.values()):
            if session.finished is None and (session.sid == sid or session.short == sid):
                session.log.info("hung up by an operator")
                return self._feed(session, cf.Abort("operator_hangup"), now)
        return False

    def _leg_state(self, leg_id: str) -> str:
        if leg_id in self._opening:
            return "opening"
        state = self.outbound.state(leg_id) if self.outbound is not None else None
        return "ended" if state is None else state.name.lower()

    @property
    def idle(self) -> bool:
        """No session left and no store request unanswered (a stop may close the store)."""
        return not self.sessions and not self._pending

    def next_command(self) -> cmd.Command | None:
        return self._commands.popleft() if self._commands else None

    def trigger_ended(self, ended: TriggerEnded, now: float) -> None:
        """A trigger call ended (the node answered it 487 or 480): CDR, then call back."""
        early = self._trigger_sessions.pop(ended.key, None)
        if early is not None:
            # Its early media ends with it (the customer hung up: the free signal).
            self._drop(early)
        account = self._accounts.get(ended.trigger)
        if account is None:
            log.info(
                "trigger %s from %s: no account owns it (a static [[trigger]]): no callback",
                ended.trigger,
                ended.caller,
            )
            if ended.callback:
                self._arm(_NODE, f"static {ended.trigger}", now + STATIC_TRIGGER_HOLD)
            return
        sid = self._new_id()
        live = self._by_account.get(account.id)
        limited = ended.callback and not self.limits.check_trigger(ended.trigger, now).allowed
        if limited:
            # Counted with the web's and mail's: one number cannot be made to call out
            # without end, whichever way it is triggered.
            security_event(
                "rate_limited",
                None,
                channel="phone",
                limit="trigger",
                trigger=ended.trigger,
                caller=ended.caller,
                account=account.id,
            )
            self.triggers.callback_done(ended.trigger)
        self._write_trigger_cdr(
            ended,
            account,
            sid,
            absorbed=not ended.callback or live is not None,
            limited=limited,
        )
        if ended.callback and not limited:
            self._schedule(account, ended.trigger, now, sid, f"from {ended.caller}")

    def callback_requested(
        self, trigger: str, now: float, *, source: str, destination: str | None = None
    ) -> str:
        """A trigger from the web page or an e-mail: the phone trigger's path, without a leg.

        ``destination``: call it together with the customer (no dialling: the hotline
        path with a one-off number). Returns what happened, for the caller's log and answer:
        ``"scheduled"``, ``"absorbed"`` (a callback is under way), ``"unknown"`` (not a trigger
        number of an account), ``"refused"`` (suspended, stopping, no valid location).
        """
        account = self._accounts.get(trigger)
        if account is None:
            return "unknown"
        if not self.triggers.request(trigger):
            log.info("trigger %s by %s: a callback is already under way, absorbed", trigger, source)
            return "absorbed"
        outcome = self._schedule(account, trigger, now, self._new_id(), f"by {source}", destination)
        return "scheduled" if outcome else "refused"

    def _schedule(
        self,
        account: Account,
        trigger: str,
        now: float,
        sid: str,
        origin: str,
        destination: str | None = None,
    ) -> bool:
        """Start the customer's call for a trigger now under way (or absorb or refuse it)."""
        live = self._by_account.get(account.id)
        retrying = self._retrying.get(account.id)
        if not account.active:
            log.warning(
                "trigger %s %s: account %d (%s) is suspended, no callback",
                trigger,
                origin,
                account.id,
                account.name,
            )
        elif live is not None:
            log.info(
                "trigger %s %s: account %d already has a live call (session %s), absorbed",
                trigger,
                origin,
                account.id,
                live.short,
            )
        elif retrying is not None:
            log.info(
                "trigger %s %s: account %d's callback waits for its next attempt, absorbed",
                trigger,
                origin,
                account.id,
            )
        elif self.draining:
            # The node is going away: the callback is queued for whichever node (or this one,
            # restarted) claims it next, not lost.
            log.info("trigger %s %s: node draining, callback queued for later", trigger, origin)
            self._store(
                cmd.EnqueueCallback(
                    self._next_rid(),
                    "",
                    account.id,
                    trigger,
                    self.wall(now),
                    self.node_id,
                    CALLBACK_LEASE,
                    claimed=False,
                )
            )
        else:
            session = self._start_session(account, trigger, now, sid, destination)
            if session is not None:
                session.row_known = False
                self._store(
                    cmd.EnqueueCallback(
                        self._next_rid(),
                        sid,
                        account.id,
                        trigger,
                        self.wall(now),
                        self.node_id,
                        CALLBACK_LEASE,
                    ),
                    session,
                )
                return True
        owner = live.trigger if live is not None else retrying[0] if retrying else None
        if owner != trigger:
            self.triggers.callback_done(trigger)
        return False

    # --- trigger calls with early media (SPEC section 4) --------------------------------------

    def trigger_ringing(self, key: str, trigger: str, caller: str, now: float) -> bool:
        """A trigger INVITE with an SDP offer rings: take it over (True) for early media?

        Only for an account that may use the Location menu; the node then leaves the 183 and
        the answer to us (:class:`InboundCalls`), and rings it plainly otherwise.
        """
        if self.inbound is None or self.draining:
            return False
        account = self._accounts.get(trigger)
        if account is None or not account.active or not self._may_change_location(account):
            return False
        sid = self._new_id()
        session = Session(
            sid, account, None, trigger, started_at=now, key=key, caller=caller, node=self.node_id
        )
        leg_id = f"{session.short}-{TRIGGER_LEG}"
        session.legs[TRIGGER_LEG] = leg_id
        self.sessions[sid] = session
        self._trigger_sessions[key] = session
        self._trigger_opening[leg_id] = session
        self._commands.append(cmd.OpenMedia(leg_id, service_digits=True, call=sid))
        return True

    def trigger_due(self, key: str, now: float) -> bool:
        """The caller stayed on the line (about 4 rings): answer into the menu if we can."""
        session = self._trigger_sessions.get(key)
        if session is None or session.call is not None or session.answer_sdp is None:
            return False
        after = self.config.trigger_answer_after
        return self._answer_trigger(session, f"the caller stayed on the line {after:.0f} s", now)

    def inbound_ended(self, event: InboundEnded, now: float) -> None:
        """The answered trigger call is over on the caller's side."""
        found = self._by_leg.get(event.leg_id)
        if found is None:
            return
        session, name = found
        self._leg_gone(session, name)
        self._feed(session, cf.CustomerHungUp(), now)

    def _trigger_media(self, session: Session, leg_id: str, port: int, now: float) -> None:
        """The trigger's RTP socket is bound: answer its SDP offer in a 183, play ringback."""
        assert self.inbound is not None and session.key is not None
        request = self.inbound.offered(session.key)
        if request is None or session.finished is not None:
            self._commands.append(cmd.CloseMedia(leg_id))
            return
        try:
            result = sdp.negotiate_answer(
                sdp.parse_sdp(request.body),
                self.config.media_host,
                port,
                session_id=int(self.wall(now)) & 0x7FFFFFFF,
            )
        except sdp.SdpError as exc:
            log.info("trigger %s: no early media (%s): plain ringing", session.trigger, exc)
            self.inbound.ring(session.key, now)
            self._trigger_sessions.pop(session.key, None)
            self._commands.append(cmd.CloseMedia(leg_id))
            self._drop(session)
            return
        media = result.audio
        assert media is not None
        session.answer_sdp = bytes(result.answer)
        self._by_leg[leg_id] = (session, TRIGGER_LEG)
        self._commands.append(
            cmd.SetRemote(
                leg_id,
                media.remote_address,
                media.remote_port,
                media.codec,
                media.telephone_event_pt,
            )
        )
        self.inbound.progress(session.key, session.answer_sdp, now)
        ringback = Tone("ringback", country=self.config.tone_country)
        self._commands.append(cmd.PlayMedia(leg_id, (ringback,), False, False))

    def _answer_trigger(self, session: Session, how: str, now: float) -> bool:
        """Answer the trigger call into the Location menu."""
        assert self.inbound is not None and session.key is not None
        leg_id = session.legs.get(TRIGGER_LEG)
        if leg_id is None or session.answer_sdp is None:
            return False
        if not self.inbound.answer(session.key, leg_id, session.answer_sdp, now):
            return False
        self._trigger_sessions.pop(session.key, None)
        session.answered_how = how
        session.answered_at = now
        log.info(
            "trigger %s from %s: answered (%s) into the location menu (session %s)",
            session.trigger,
            session.caller,
            how,
            session.short,
        )
        self._commands.append(cmd.StopMedia(leg_id))
        has_name = bool(session.account.recorded_name_path)
        config = self._menu_for(session.account)
        menu = mn.MenuCall(leg=TRIGGER_LEG, has_name=has_name, config=config, name=session.short)
        session.call = menu
        self._apply(session, _menu_actions(menu.start(now)), now)
        return True

    def _drop(self, session: Session) -> None:
        """Forget a trigger session that never became a call (nothing to record)."""
        for name in list(session.legs):
            self._leg_gone(session, name)
            self._trigger_opening.pop(f"{session.short}-{name}", None)
        session.finished = "trigger_ended"
        self.sessions.pop(session.sid, None)

    def leg_event(self, event: LegEvent, now: float) -> None:
        """A SIP leg rang, answered, failed or ended (from :class:`OutboundCalls`)."""
        found = self._by_leg.get(event.leg_id)
        if found is None:
            return  # a leg the call flow already let go (its HangUp was sent)
        session, name = found
        if isinstance(event, LegRinging):
            if event.sdp is not None:
                self._set_remote(session, name, event.sdp)
            early = event.sdp is not None
            if name == cf.CALLBACK:
                self._feed(session, cf.CallbackRinging(), now)
            elif name == cf.DESTINATION:
                self._feed(session, cf.DestinationRinging(early_media=early), now)
            else:
                self._feed(session, cf.OperatorRinging(early_media=early), now)
        elif isinstance(event, LegAnswered):
            self._set_remote(session, name, event.sdp)
            if name == cf.CALLBACK:
                session.answered = True
                self._feed(session, cf.CallbackAnswered(), now)
            elif name == cf.DESTINATION:
                self._feed(session, cf.DestinationAnswered(), now)
            else:
                self._feed(session, cf.OperatorAnswered(), now)
            # Written down at once, not at the next heartbeat: a survivor must know that the
            # customer was reached (no second callback) and when billing began.
            self._track([session], now)
        elif isinstance(event, LegFailed):
            self._leg_gone(session, name)
            self._feed(session, self._failure(name, event.status), now)
        elif isinstance(event, LegReinvite):
            self._relay_reinvite(session, name, event, now)
        elif isinstance(event, LegReinviteAnswered):
            self._reinvite_answered(session, event, now)
        elif isinstance(event, LegEnded) and event.by_remote:
            self._leg_gone(session, name)
            if name == cf.CALLBACK:
                self._feed(session, cf.CustomerHungUp(), now)
            elif name == cf.DESTINATION:
                self._feed(session, cf.DestinationHungUp(), now)
            else:
                self._feed(session, cf.OperatorHungUp(), now)

    def media_event(self, event: me.Event, now: float) -> None:
        """A digit, a prompt's end, silence on a leg (from the media engine)."""
        found = self._by_leg.get(event.leg_id)
        if found is None:
            return
        session, name = found
        if isinstance(event, me.MediaLost):
            self._media_lost(session, name, event.reason, now)
            return
        if name == TRIGGER_LEG and session.call is None:
            # A ringing trigger: "#" in its early media asks for the Location menu.
            if isinstance(event, me.DigitReceived) and event.digit == "#":
                self._answer_trigger(session, "# in the early media", now)
            return
        if isinstance(event, me.DigitReceived):
            # Only the customer's keys drive the call; the far legs' keys are theirs (relayed).
            if name in (cf.CALLBACK, TRIGGER_LEG) and event.digit in DTMF_KEYS:
                session.key_source = event.source
                self._feed(session, cf.DigitReceived(event.digit, source=event.source), now)
        elif isinstance(event, me.PlayFinished):
            if name in (cf.CALLBACK, TRIGGER_LEG) and not event.interrupted:
                self._feed(session, cf.PromptFinished(), now)
        elif isinstance(event, me.RecordFinished):
            if name in (cf.CALLBACK, TRIGGER_LEG):
                self._feed(session, RecordFinished(event.duration, event.reason), now)
        elif isinstance(event, me.RtpTimeout):
            session.log.warning(
                "no RTP from the %s leg for %.0f s",
                name,
                event.silent_s,
            )
        elif isinstance(event, me.FaxDetected):
            session.log.info(
                "%s tone on the %s leg, clear channel %s",
                event.kind,
                name,
                "on" if event.clear_channel else "impossible (the two legs' laws differ)",
            )
            self._feed(session, cf.FaxDetected(event.kind), now)

    def _media_lost(self, session: Session, name: str, reason: str, now: float) -> None:
        """The leg's media died with its worker: the call ends as an operator's hang-up would
        (every leg released, CDRs with cause ``media_lost``); a ringing trigger rings plainly."""
        session.log.warning("media of the %s leg lost (%s): ending the call", name, reason)
        if session.call is None:
            if session.key is not None:
                if self.inbound is not None:
                    self.inbound.ring(session.key, now)
                self._trigger_sessions.pop(session.key, None)
            self._drop(session)
            return
        self._feed(session, cf.Abort("media_lost"), now)

    def media_opened(self, leg_id: str, port: int, now: float) -> None:
        """The leg's RTP socket is bound to ``port``: offer it and place the call."""
        trigger = self._trigger_opening.pop(leg_id, None)
        if trigger is not None:
            self._trigger_media(trigger, leg_id, port, now)
            return
        opening = self._opening.pop(leg_id, None)
        if opening is None:
            # The call flow let the leg go while its socket was being bound.
            self._commands.append(cmd.CloseMedia(leg_id))
            return
        session, action = opening
        offer = sdp.make_offer(
            self.config.media_host, port, session_id=int(self.wall(now)) & 0x7FFFFFFF
        )
        session.offers[action.leg] = offer
        self._by_leg[leg_id] = (session, action.leg)
        if self.outbound is None:
            session.log.error("no trunk configured, cannot call out")
            self._leg_gone(session, action.leg)
            self._feed(session, self._failure(action.leg, None), now)
            return
        if not self.outbound_limit.allow(now):
            # As if the network were congested (503): a callback is tried again later, a
            # destination gets the "call failed" prompt.
            if now - self._cap_logged_at >= OUTBOUND_CAP_LOG_INTERVAL:
                self._cap_logged_at = now
                log.error(
                    "outbound call cap reached ([limits] outbound_per_minute = %d): "
                    "attempts refused (%d so far); a loop or a flood of triggers?",
                    self.outbound_limit.per_minute,
                    self.outbound_limit.refused,
                )
            session.log.warning("%s leg not placed: outbound call cap", action.leg)
            self._leg_gone(session, action.leg)
            self._feed(session, self._failure(action.leg, 503), now)
            return
        self.outbound.originate(
            leg_id, action.dial_string, bytes(offer), now, caller_id=action.caller_id
        )

    def media_failed(self, leg_id: str, error: str, now: float) -> None:
        """The leg's RTP socket could not be bound (no free port): the attempt fails."""
        trigger = self._trigger_opening.pop(leg_id, None)
        if trigger is not None and trigger.key is not None and self.inbound is not None:
            log.error("trigger %s: no media for early media: %s", trigger.trigger, error)
            self.inbound.ring(trigger.key, now)
            self._trigger_sessions.pop(trigger.key, None)
            trigger.legs.clear()
            self._drop(trigger)
            return
        opening = self._opening.pop(leg_id, None)
        if opening is None:
            return
        session, action = opening
        session.log.error("no media for the %s leg: %s", action.leg, error)
        session.legs.pop(action.leg, None)
        self._feed(session, self._failure(action.leg, None), now)

    def store_done(self, request: cmd.StoreRequest, result: object, now: float) -> None:
        """The answer to a store request."""
        session = self._pending.pop(request.rid, None)
        if session is not None:
            session.outstanding.discard(request.rid)
            self._recorded(session, request.rid, now)
        if isinstance(request, cmd.LoadAccounts):
            assert isinstance(result, tuple)
            self._accounts_loaded(result)
        elif isinstance(request, cmd.ClaimCallbacks):
            assert isinstance(result, tuple)
            self._claimed(result, now)
        elif isinstance(request, cmd.EnqueueCallback):
            assert isinstance(result, tuple)
            pending, created = result
            assert isinstance(pending, PendingCallback) and isinstance(created, bool)
            if session is not None:
                self._enqueued(session, pending, created, now)
        elif isinstance(request, cmd.QuoteRate):
            assert isinstance(result, tuple) and session is not None
            rate, available, spent = result
            assert rate is None or isinstance(rate, Rate)
            assert isinstance(available, int) and isinstance(spent, int)
            self._quoted(session, rate, self._spendable(session, available, spent), now)
        elif isinstance(request, cmd.ReserveCredit):
            assert isinstance(result, bool) and session is not None
            self._reserved(session, request, result, now)
        elif isinstance(request, cmd.LookUpSpeedDial):
            assert result is None or isinstance(result, str)
            assert session is not None
            self._feed(session, cf.SpeedDialResolved(result), now)
        elif isinstance(request, cmd.CheckSecurityCode):
            assert isinstance(result, str) and session is not None
            if result != "accepted":
                # src "-": a phone number is not an address fail2ban could ban.
                security_event(
                    "lockout" if result == "locked" else "bad_security_code",
                    None,
                    account=request.account_id,
                    call=session.sid,
                    via="trigger" if session.key is not None else "callback",
                )
            self._feed(session, mn.CodeChecked(result), now)
        elif isinstance(request, cmd.SetLocation):
            assert isinstance(result, bool) and session is not None
            if result:
                session.log.info(
                    "account %d moved to %s%s",
                    request.account_id,
                    request.number,
                    f" ext {request.extension}" if request.extension else "",
                )
            self._feed(session, mn.LocationSaved(result), now)
        elif isinstance(request, cmd.SaveRecordedName):
            assert isinstance(result, str | None) and session is not None
            if result is not None:
                session.name_path = result
                session.new_name = None
            self._feed(session, mn.NameSaved(result is not None), now)
        elif isinstance(request, cmd.SettleCallback):
            follow = self._after_settle.pop(request.rid, None)
            if follow is not None:
                self._queue_callback_now(follow, now)
        elif isinstance(request, cmd.TakeStaleCalls):
            assert isinstance(result, tuple)
            self._recovering = False
            for row in result:
                assert isinstance(row, LiveCall)
                if row.call_uuid in self._recoveries:
                    continue  # still in progress
                if row.call_uuid in self._recovery_failed:
                    self._retry_recovery(row.call_uuid)
                else:
                    self._recover_call(row)
        if request.rid in self._recovery_of:
            self._recovery_step(request.rid, failed=False)
        if session is not None:
            self._settle_if_done(session, now)

    def store_failed(self, request: cmd.StoreRequest, error: str, now: float) -> None:
        """A store request failed (the store is down, a constraint broke): degrade, log."""
        session = self._pending.pop(request.rid, None)
        if session is not None:
            session.outstanding.discard(request.rid)
            self._recorded(session, request.rid, now)
        if isinstance(request, cmd.LoadAccounts):
            self._loading = False
            log.error("cannot read the accounts: %s (keeping the last known)", error)
        elif isinstance(request, cmd.ClaimCallbacks):
            self._claiming = False
            log.error("cannot claim due callbacks: %s", error)
        elif isinstance(request, cmd.EnqueueCallback):
            log.error(
                "trigger %s of account %d: the callback could not be queued: %s",
                request.trigger,
                request.account_id,
                error,
            )
            if session is not None:
                session.row_known = True
        elif isinstance(request, cmd.QuoteRate | cmd.ReserveCredit):
            assert session is not None
            session.log.error("cannot rate or reserve credit: %s", error)
            session.authorizing = None
            # The customer hears "invalid number" rather than silence; nothing was held.
            self._feed(session, cf.Refused("invalid"), now)
        elif isinstance(request, cmd.LookUpSpeedDial):
            assert session is not None
            session.log.error("cannot read the speed dial: %s", error)
            self._feed(session, cf.SpeedDialResolved(None), now)
        elif isinstance(request, cmd.CheckSecurityCode):
            assert session is not None
            session.log.error("cannot check the security code: %s", error)
            self._feed(session, mn.CodeChecked("rejected"), now)
        elif isinstance(request, cmd.SetLocation):
            assert session is not None
            session.log.error("cannot save the location: %s", error)
            self._feed(session, mn.LocationSaved(False), now)
        elif isinstance(request, cmd.SaveRecordedName):
            assert session is not None
            session.log.error("cannot save the recorded name: %s", error)
            self._feed(session, mn.NameSaved(False), now)
        elif isinstance(request, cmd.TakeStaleCalls):
            self._recovering = False
            log.error("cannot look for interrupted calls: %s", error)
        elif isinstance(request, cmd.SettleCallback):
            log.error("callback %d: %s not settled: %s", request.callback_id, request.event, error)
            follow = self._after_settle.pop(request.rid, None)
            if follow is not None:
                self._queue_callback_now(follow, now)
        elif isinstance(request, cmd.WriteCdr):
            # Never silently lost: the whole record goes to the log for re-entry.
            log.error("CDR NOT WRITTEN (%s): %r", error, request.cdr)
        else:
            log.error("store request %s failed: %s", type(request).__name__, error)
        if request.rid in self._recovery_of:
            self._recovery_step(request.rid, failed=True)
        if session is not None:
            self._settle_if_done(session, now)

    # --- timers -----------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        heap = self._heap
        while heap and self._armed.get((heap[0][2], heap[0][3])) != heap[0][1]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def handle_timer(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, seq, sid, name = heapq.heappop(heap)
            if self._armed.get((sid, name)) != seq:
                continue
            del self._armed[(sid, name)]
            if sid == _NODE:
                self._node_timer(name, now)
                continue
            session = self.sessions.get(sid)
            if session is not None and session.finished is None:
                self._feed(session, cf.TimerFired(name), now)

    def _arm(self, sid: str, name: str, at: float) -> None:
        self._seq += 1
        self._armed[(sid, name)] = self._seq
        heap = self._heap
        if len(heap) > 2 * len(self._armed) + HEAP_SLACK:
            # Disarmed and re-armed timers leave their entries behind until they fall due,
            # and some are hours away (the credit cut of a long credit): keep the live ones
            # only, so the heap holds what is armed, not every call of the last hours.
            armed = self._armed
            heap[:] = [e for e in heap if armed.get((e[2], e[3])) == e[1]]
            heapq.heapify(heap)
        heapq.heappush(heap, (at, self._seq, sid, name))

    def _disarm(self, sid: str, name: str) -> None:
        self._armed.pop((sid, name), None)

    def _node_timer(self, name: str, now: float) -> None:
        if name == "claim":
            self._arm(_NODE, "claim", now + CLAIM_INTERVAL)
            if not self._claiming and not self.draining:
                self._claiming = True
                self._store(
                    cmd.ClaimCallbacks(
                        self._next_rid(), self.node_id, self.wall(now), CALLBACK_LEASE
                    )
                )
            if now >= self._renew_at:
                self._renew_at = now + LEASE_RENEWAL
                self._renew_leases(now)
            if now >= self._heartbeat_at:
                self._heartbeat_at = now + LIVE_HEARTBEAT
                self._track(list(self.sessions.values()), now)
            if now >= self._recover_at:
                self._recover(now)
        elif name == "refresh":
            self._arm(_NODE, "refresh", now + TRIGGER_REFRESH)
            self._load_accounts()
        elif name.startswith("static "):
            self.triggers.callback_done(name.removeprefix("static "))

    # --- accounts and the queue ---------------------------------------------------------------

    def _load_accounts(self) -> None:
        if self._loading:
            return
        self._loading = True
        self._store(cmd.LoadAccounts(self._next_rid()))

    def _accounts_loaded(self, accounts: tuple[object, ...]) -> None:
        self._loading = False
        by_trigger: dict[str, Account] = {}
        for account in accounts:
            assert isinstance(account, Account)
            for number in account.triggers:
                by_trigger[number] = account
        self._accounts = by_trigger
        self.triggers.set_numbers(set(by_trigger) | set(self.config.trigger_numbers))
        # A live session keeps the account it started with, but sees suspensions at once.
        if not self.ready:
            self.ready = True
            log.info(
                "callback service ready (node %s, %d accounts, %d trigger numbers)",
                self.node_id,
                len(accounts),
                len(by_trigger),
            )

    def _claimed(self, claimed: tuple[object, ...], now: float) -> None:
        self._claiming = False
        for item in claimed:
            assert isinstance(item, tuple)
            pending, account = item
            assert isinstance(pending, PendingCallback) and isinstance(account, Account)
            live = self._by_account.get(account.id)
            if live is not None:
                # Our own live call's row (its lease lapsed): it stays with that call.
                if live.callback_id is None:
                    live.callback_id = pending.id
                continue
            # The call's id from the queue (set when the trigger queued it, on whichever
            # node), so every attempt's CDRs share it; a fresh one for rows older than that.
            _, sid = self._retrying.pop(account.id, (pending.trigger, ""))
            sid = sid or pending.call_uuid or self._new_id()
            if self.draining:
                # Back to the queue at once: another node (or this one, restarted) calls.
                self._settle(None, pending.id, "reschedule", "node stopping")
                continue
            if not account.active:
                self._settle(None, pending.id, "fail", "account suspended")
                continue
            session = self._start_session(
                account,
                pending.trigger,
                now,
                sid,
                first_attempt=max(1, pending.attempts),
                callback_id=pending.id,
            )
            if session is None:
                self._settle(None, pending.id, "fail", "bad location")
                self.triggers.callback_done(pending.trigger)
                continue

    def _enqueued(
        self, session: Session, pending: PendingCallback, created: bool, now: float
    ) -> None:
        session.row_known = True
        if created:
            session.callback_id = pending.id
            self._track([session], now)  # a survivor settles the row it knows of
            return
        # Another node (or an older trigger) holds an open callback for this account.
        session.log.info(
            "callback %d already pending for account %d, absorbed",
            pending.id,
            session.account.id,
        )
        if session.finished is None:
            self._feed(session, cf.Abort("absorbed"), now)

    # --- surviving a crash (issue 11) ---------------------------------------------------------

    def _track(self, sessions: list[Session], now: float) -> None:
        """Write down the live customer calls, so a survivor can finish them if we die."""
        calls = []
        for session in sessions:
            call = session.call
            if session.finished is not None or not isinstance(call, cf.CustomerCall):
                continue
            if session.recording:
                # A leg just ended and its records are not durable yet: the description
                # written before keeps it (and its credit hold) until they are, so a survivor
                # neither loses it nor records and charges it twice (``_recorded``).
                continue
            session.tracked = True
            calls.append(
                LiveCall(
                    call_uuid=session.sid,
                    node_id=self.node_id,
                    account_id=session.account.id,
                    callback_id=session.callback_id,
                    trigger=session.trigger,
                    started_at=self.wall(session.started_at),
                    alive_at=self.wall(now),
                    answered=session.answered,
                    legs=json.dumps(call.describe_legs(self.wall)),
                    reservation=session.reservation,
                )
            )
        if calls:
            self._store(cmd.TrackCalls(self._next_rid(), tuple(calls)))

    def _recorded(self, session: Session, rid: int, now: float) -> None:
        """A store write of a leg that ended mid-call answered: once all of them are, the
        call is written down again, without that leg."""
        if rid not in session.recording:
            return
        session.recording.discard(rid)
        if not session.recording and session.finished is None:
            self._track([session], now)

    def _recover(self, now: float) -> None:
        """Look for the calls of dead nodes (and release credit left behind by any)."""
        self._recover_at = now + RECOVERY_INTERVAL
        if self._recovering:
            return
        self._recovering = True
        stale = cmd.TakeStaleCalls(self._next_rid(), self.node_id, self.wall(now) - STALE_AFTER)
        self._store(stale)
        self._store(cmd.ReleaseExpiredCredit(self._next_rid(), self.wall(now)))

    def _recover_call(self, row: LiveCall) -> None:
        """A call whose node died: its legs recorded as interrupted when it was last alive,
        its credit settled for the talk time known, its callback settled (once answered,
        never called again; not yet answered, owed again), its description forgotten."""
        try:
            legs = json.loads(row.legs)
            records = cf.interrupted_cdrs(legs, row.alive_at)
        except (ValueError, KeyError, TypeError) as exc:
            log.error("call %s of %s: unreadable description (%s)", row.call_uuid, row.node_id, exc)
            records = []
        cost = 0
        for record in records:
            kind = _LEG_KINDS.get(record.leg, LegKind.DESTINATION)
            self._recovery_write(
                row.call_uuid,
                cmd.WriteCdr(
                    self._next_rid(),
                    "",
                    Cdr(
                        call_uuid=row.call_uuid,
                        leg=kind,
                        account_id=row.account_id,
                        from_number=self._caller_id() or "",
                        to_number=record.number.lstrip("+"),
                        setup_at=record.setup_at,
                        ring_at=record.ring_at,
                        answer_at=record.answer_at,
                        end_at=record.end_at,
                        cause_text=f"interrupted (node {row.node_id} stopped answering)",
                        billed_seconds=record.billed_seconds,
                        cost=record.cost,
                        node_id=self.node_id,
                    ),
                ),
            )
            if record.leg == cf.DESTINATION:
                cost = record.cost
        if row.reservation is not None:
            if cost > 0:
                commit = cmd.CommitCredit(self._next_rid(), "", row.reservation, cost)
                self._recovery_write(row.call_uuid, commit)
            else:
                release = cmd.ReleaseCredit(self._next_rid(), "", row.reservation)
                self._recovery_write(row.call_uuid, release)
        if row.callback_id is not None:
            fate = settlement("interrupted", answered=row.answered, retry_at=None)
            self._recovery_write(
                row.call_uuid,
                cmd.SettleCallback(
                    self._next_rid(),
                    "",
                    row.callback_id,
                    fate.event,
                    fate.error,
                    row.node_id,  # the dead node's claim, taken over
                    fate.due_at,
                ),
            )
        if not self._recoveries.get(row.call_uuid):
            self._store(cmd.ForgetCalls(self._next_rid(), (row.call_uuid,)))
        log.warning(
            "call=%s leg=- account=%d node=%s: interrupted when node %s stopped answering "
            "(last alive %.0f): %d CDRs written, callback %s",
            row.call_uuid,
            row.account_id,
            self.node_id,
            row.node_id,
            row.alive_at,
            len(records),
            "done" if row.answered else "owed again",
        )

    def _recovery_write(self, call_uuid: str, request: cmd.StoreRequest) -> None:
        self._recoveries.setdefault(call_uuid, set()).add(request.rid)
        self._recovery_of[request.rid] = (call_uuid, request)
        self._store(request)

    def _recovery_step(self, rid: int, *, failed: bool) -> None:
        """One write of a recovery answered. Once all are: the description goes if all were
        durable; if not, it stays this node's, and the next pass retries what failed."""
        call_uuid, request = self._recovery_of.pop(rid)
        if failed:
            self._recovery_failed.setdefault(call_uuid, []).append(request)
        outstanding = self._recoveries[call_uuid]
        outstanding.discard(rid)
        if outstanding:
            return
        del self._recoveries[call_uuid]
        if call_uuid in self._recovery_failed:
            log.error("call %s: recovery incomplete, retried at the next pass", call_uuid)
            return
        self._recovery_passes.pop(call_uuid, None)
        self._store(cmd.ForgetCalls(self._next_rid(), (call_uuid,)))

    def _retry_recovery(self, call_uuid: str) -> None:
        failed = self._recovery_failed.pop(call_uuid)
        passes = self._recovery_passes.get(call_uuid, 1) + 1
        if passes > RECOVERY_PASSES:
            # Given up (the store refuses them): every write in full in the log, for re-entry.
            for request in failed:
                log.error("call %s: RECOVERY WRITE LOST: %r", call_uuid, request)
            self._recovery_passes.pop(call_uuid, None)
            self._store(cmd.ForgetCalls(self._next_rid(), (call_uuid,)))
            return
        self._recovery_passes[call_uuid] = passes
        for request in failed:
            self._recovery_write(call_uuid, replace(request, rid=self._next_rid()))

    def _queue_callback_now(self, follow: tuple[int, str], now: float) -> None:
        """A callback for the account, due now, for whichever claim comes first (this node's
        within a second): the normal path, with the new location read from the store."""
        account_id, trigger = follow
        log.info("account %d: calling back at the new location", account_id)
        self._store(
            cmd.EnqueueCallback(
                self._next_rid(),
                "",
                account_id,
                trigger,
                self.wall(now),
                self.node_id,
                CALLBACK_LEASE,
                claimed=False,
            )
        )

    def _renew_leases(self, now: float) -> None:
        ids = tuple(
            s.callback_id
            for s in self.sessions.values()
            if s.callback_id is not None and s.finished is None
        )
        if ids:
            self._store(
                cmd.RenewLeases(
                    self._next_rid(), self.node_id, ids, self.wall(now) + CALLBACK_LEASE
                )
            )

    def _settle(
        self,
        session: Session | None,
        callback_id: int,
        event: str,
        error: str | None,
        due_at: float | None = None,
    ) -> None:
        """``event``: "complete", "fail" or "reschedule" (due again at ``due_at``, or now)."""
        sid = session.sid if session is not None else ""
        self._store(
            cmd.SettleCallback(
                self._next_rid(), sid, callback_id, event, error, self.node_id, due_at
            )
        )

    # --- sessions -----------------------------------------------------------------------------

    def _start_session(
        self,
        account: Account,
        trigger: str,
        now: float,
        sid: str,
        destination: str | None = None,
        *,
        first_attempt: int = 1,
        callback_id: int | None = None,
    ) -> Session | None:
        location = account.location
        prefix = self._prefix()
        try:
            if location is None:
                raise dialplan.DestinationRefused(dialplan.RefusalReason.INVALID, "no location")
            dial = dialplan.normalize_destination(location.number, prefix).dial_string
        except dialplan.DestinationRefused as exc:
            log.warning("account %d (%s): cannot call back: %s", account.id, account.name, exc)
            return None
        call = cf.CustomerCall(
            location=dial,
            caller_id=self._caller_id(),
            extension=location.extension or "",
            has_name=bool(account.recorded_name_path),
            preset_destination=destination or account.hotline_destination,
            trigger_numbers=account.triggers,
            operator=self.config.operator,
            config=self.flow,
            name=sid[:8],
            first_attempt=first_attempt,
            location_menu=self._menu_for(account) if self._may_change_location(account) else None,
        )
        session = Session(sid, account, call, trigger, started_at=now, node=self.node_id)
        session.callback_id = callback_id
        self.sessions[sid] = session
        self._by_account[account.id] = session
        session.log.info(
            "calling back account %d (%s) at %s",
            account.id,
            account.name,
            location.number,
        )
        self._apply(session, call.start(now), now)
        self._track([session], now)
        return session

    def _may_change_location(self, account: Account) -> bool:
        """The kind's policy (``[service] location_kinds``; hotline accounts call one number)."""
        return account.kind.value in self.config.location_kinds

    def _menu_for(self, account: Account) -> mn.MenuConfig:
        """The Location menu as the account's kind may use it (``[service] name_kinds``)."""
        if account.kind.value in self.config.name_kinds:
            return self.menu
        return replace(self.menu, name_menu=False)

    def _feed(self, session: Session, event: cf.Event, now: float) -> bool:
        """Hand the call flow one event; False if it had no entry for it (logged)."""
        call = session.call
        if session.finished is not None or call is None:
            return False
        try:
            if isinstance(call, mn.MenuCall):
                if not isinstance(event, _MENU_CALL_EVENTS):
                    raise mn.MenuError(f"{type(event).__name__} is not for the menu")
                actions = _menu_actions(call.handle(event, now))
            else:
                actions = call.handle(event, now)
        except (cf.CallFlowError, mn.MenuError) as exc:
            session.log.info("%s ignored (%s)", type(event).__name__, exc)
            return False
        self._apply(session, actions, now)
        return True

    def _apply(self, session: Session, actions: list[cf.Action], now: float) -> None:
        for action in actions:
            self._do(session, action, now)

    def _do(self, session: Session, action: cf.Action, now: float) -> None:
        legs = session.legs
        out = self._commands
        if isinstance(action, cf.Originate):
            self._originate(session, action)
        elif isinstance(action, cf.HangUp):
            leg_id = legs.get(action.leg)
            if leg_id is not None:
                if action.leg == TRIGGER_LEG:
                    if self.inbound is not None:
                        self.inbound.hangup(leg_id, now)
                elif self.outbound is not None:
                    self.outbound.hangup(leg_id, now)
                self._leg_gone(session, action.leg)
        elif isinstance(action, cf.Play):
            leg_id = legs.get(action.leg)
            if leg_id is not None:
                items = tuple(self._prompt(session, p) for p in action.prompts)
                session.log.debug(
                    "playing %s on the %s leg",
                    " + ".join(str(i) for i in items),
                    action.leg,
                )
                out.append(cmd.PlayMedia(leg_id, items, action.barge_in, action.mix))
        elif isinstance(action, cf.PlayTone):
            leg_id = legs.get(action.leg)
            if leg_id is not None:
                tone = Tone(action.tone, country=self.config.tone_country)
                out.append(cmd.PlayMedia(leg_id, (tone,), False, False))
        elif isinstance(action, cf.StopPlayback):
            leg_id = legs.get(action.leg)
            if leg_id is not None:
                out.append(cmd.StopMedia(leg_id))
        elif isinstance(action, cf.SendDtmf):
            leg_id = legs.get(action.leg)
            if leg_id is not None:
                out.append(cmd.SendDigits(leg_id, action.digits, "both"))
        elif isinstance(action, cf.ForwardDigit):
            # The customer's key is not a command: the far end gets it as RFC 4733 (or in-band
            # if it negotiated none); the tone itself was kept out of the relayed audio.
            leg_id = legs.get(action.to_leg)
            if leg_id is not None:
                out.append(cmd.SendDigits(leg_id, action.digit, "rfc4733"))
        elif isinstance(action, cf.Bridge):
            a, b = legs.get(action.leg_a), legs.get(action.leg_b)
            if a is not None and b is not None:
                out.append(cmd.BridgeMedia(a, b, action.early_media))
        elif isinstance(action, cf.Unbridge):
            leg_id = legs.get(action.leg_a)
            if leg_id is not None:
                out.append(cmd.UnbridgeMedia(leg_id))
        elif isinstance(action, cf.Conference):
            ids = tuple(legs[leg] for leg in action.legs if leg in legs)
            out.append(cmd.ConferenceMedia(session.sid, ids))
        elif isinstance(action, cf.Authorize):
            self._authorize(session, action.number, now)
        elif isinstance(action, cf.ResolveSpeedDial):
            self._store(
                cmd.LookUpSpeedDial(self._next_rid(), session.sid, session.account.id, action.code),
                session,
            )
        elif isinstance(action, cf.StartTimer):
            self._arm(session.sid, action.name, action.at)
        elif isinstance(action, cf.CancelTimer):
            self._disarm(session.sid, action.name)
        elif isinstance(action, cf.WriteCdr):
            self._write_cdr(session, action)
        elif isinstance(action, cf.StartBilling):
            session.log.info("destination answered, billing")
        elif isinstance(action, cf.StopBilling):
            session.log.info("billing stopped")
        elif isinstance(action, cf.RetryLater):
            session.retry_at = self.wall(action.at)
        elif isinstance(action, mn.VerifyCode):
            check = cmd.CheckSecurityCode(
                self._next_rid(), session.sid, session.account.id, action.code, self.wall(now)
            )
            self._store(check, session)
        elif isinstance(action, mn.SaveLocation):
            save = cmd.SetLocation(
                self._next_rid(), session.sid, session.account.id, action.number, action.extension
            )
            self._store(save, session)
        elif isinstance(action, Record):
            leg_id = legs.get(action.leg)
            if leg_id is not None:
                session.recordings += 1
                session.new_name = f"{session.account.id}-{session.short}-{session.recordings}.wav"
                out.append(
                    cmd.RecordMedia(leg_id, session.new_name, action.max_s, action.silence_s)
                )
        elif isinstance(action, mn.SaveName):
            if session.new_name is not None:
                keep = cmd.SaveRecordedName(
                    self._next_rid(), session.sid, session.account.id, session.new_name
                )
                self._store(keep, session)
        elif isinstance(action, cf.CallBackNow):
            session.call_back_now = True
        elif isinstance(action, cf.Finished):
            self._finish(session, action.reason, now)

    def _originate(self, session: Session, action: cf.Originate) -> None:
        old = session.legs.get(action.leg)
        if old is not None:
            self._leg_gone(session, action.leg)
        leg_id = f"{session.short}-{action.leg}-{action.attempt}-{self._new_id()[:4]}"
        session.legs[action.leg] = leg_id
        self._opening[leg_id] = (session, action)
        self._commands.append(
            cmd.OpenMedia(leg_id, service_digits=action.leg == cf.CALLBACK, call=session.sid)
        )

    def _leg_gone(self, session: Session, name: str) -> None:
        """The leg is over for the call flow: forget it and close its media."""
        leg_id = session.legs.pop(name, None)
        if leg_id is None:
            return
        session.offers.pop(name, None)
        self._by_leg.pop(leg_id, None)
        if self._opening.pop(leg_id, None) is None:
            self._commands.append(cmd.CloseMedia(leg_id))
        # else: the socket is still being bound; media_opened will close it.

    def _relay_reinvite(self, session: Session, name: str, event: LegReinvite, now: float) -> None:
        """T.38 from one far end: offer it to the other (SPEC section 6), answer with theirs.

        The SDP goes through unchanged, so the fax (UDPTL) flows between the far ends; if the
        other side refuses, the first is refused too and the call stays on G.711 passthrough.
        """
        assert self.outbound is not None
        peer = {cf.CALLBACK: cf.DESTINATION, cf.DESTINATION: cf.CALLBACK}.get(name)
        peer_id = session.legs.get(peer) if peer is not None else None
        if peer_id is None or not self.outbound.reinvite(peer_id, event.sdp, now):
            session.log.info("T.38 offer on the %s leg refused: nothing to relay it to", name)
            self.outbound.answer_reinvite(event.leg_id, 488, b"", now)
            return
        session.reinvites[peer_id] = event.leg_id
        session.log.info("T.38 offer on the %s leg relayed to the %s leg", name, peer)

    def _reinvite_answered(self, session: Session, event: LegReinviteAnswered, now: float) -> None:
        assert self.outbound is not None
        asked = session.reinvites.pop(event.leg_id, None)
        if asked is None:
            return
        self.outbound.answer_reinvite(asked, event.status, event.sdp, now)
        if event.status < 300:
            session.log.info("fax switched to T.38 between the far ends")
        else:
            session.log.info("T.38 refused (%d): the fax stays on G.711 passthrough", event.status)

    def _failure(self, name: str, status: int | None) -> cf.Event:
        if name == cf.CALLBACK:
            return cf.CallbackFailed(callback_failure(status), status)
        cause = destination_failure(status)
        if name == cf.DESTINATION:
            return cf.DestinationFailed(cause, status)
        return cf.OperatorFailed(cause, status)

    def _set_remote(self, session: Session, name: str, body: bytes) -> None:
        leg_id = session.legs.get(name)
        offer = session.offers.get(name)
        if leg_id is None or offer is None or not body:
            return
        try:
            media = sdp.parse_answer(offer, sdp.parse_sdp(body))
        except sdp.SdpError as exc:
            session.log.warning("bad SDP answer on the %s leg: %s", name, exc)
            return
        self._commands.append(
            cmd.SetRemote(
                leg_id,
                media.remote_address,
                media.remote_port,
                media.codec,
                media.telephone_event_pt,
            )
        )

    def _prompt(self, session: Session, prompt: cf.Prompt) -> Path:
        if prompt is cf.Prompt.NEW_NAME and session.new_name is not None:
            return self._recordings / session.new_name
        if prompt in (cf.Prompt.NAME, cf.Prompt.NEW_NAME):
            saved = session.name_path or session.account.recorded_name_path
            if saved:
                return Path(saved)
            prompt = cf.Prompt.NO_NAME
        return prompts.prompt_path(
            session.account.language.value, prompt.value, self.config.prompts_dir
        )

    # --- money --------------------------------------------------------------------------------

    def _authorize(self, session: Session, number: str, now: float) -> None:
        try:
            dial = dialplan.normalize_destination(
                number, self._prefix(), blocked_prefixes=self.config.blocked_prefixes
            )
        except dialplan.DestinationRefused as exc:
            session.log.info("%s refused: %s", number, exc)
            self._feed(session, cf.Refused(exc.reason.value), now)
            return
        session.authorizing = (number, dial.dial_string)
        since = self.wall(now) - DAY if self.config.limits.daily_spend > 0 else None
        quote = cmd.QuoteRate(self._next_rid(), session.sid, session.account.id, number, since)
        self._store(quote, session)

    def _spendable(self, session: Session, available: int, spent: int) -> int:
        """The credit left, and within ``[limits] daily_spend`` what the last 24 h left."""
        cap = self.config.limits.daily_spend
        if cap <= 0 or cap - spent >= available:
            return available
        left = max(0, cap - spent)
        session.log.warning(
            "daily spend cap: %d of %d left (spent or held %d in 24 h)", left, cap, spent
        )
        return left

    def _quoted(self, session: Session, rate: Rate | None, available: int, now: float) -> None:
        if session.authorizing is None or session.finished is not None:
            return
        number, _ = session.authorizing
        if rate is None or rate.blocked:
            session.authorizing = None
            reason = "blocked" if rate is not None else "invalid"
            session.log.info("%s refused: %s (rate table)", number, reason)
            self._feed(session, cf.Refused(reason), now)
            return
        reservation = rating.reservation_for(
            available, rate.price_per_minute, rate.minimum_s, rate.increment_s
        )
        if reservation.max_seconds <= 0:
            session.authorizing = None
            session.log.info("%s refused: no credit left", number)
            self._feed(session, cf.Refused("no_credit"), now)
            return
        session.reservations += 1
        key = f"{session.sid}-{session.reservations}"
        session.quote = (rate, reservation)
        self._store(
            cmd.ReserveCredit(
                self._next_rid(),
                session.sid,
                session.account.id,
                reservation.amount,
                key,
                self.wall(now),
            ),
            session,
        )

    def _reserved(
        self, session: Session, request: cmd.ReserveCredit, held: bool, now: float
    ) -> None:
        authorizing, session.authorizing = session.authorizing, None
        quote, session.quote = session.quote, None
        if not held:
            if authorizing is not None and session.finished is None:
                session.log.info("%s refused: no credit left", authorizing[0])
                self._feed(session, cf.Refused("no_credit"), now)
            return
        if authorizing is None or quote is None or session.finished is not None:
            self._release(session, request.key)
            return
        rate, reservation = quote
        number, dial_string = authorizing
        session.reservation = request.key
        self._track([session], now)  # a survivor commits or releases the hold it knows of
        accepted = self._feed(
            session,
            cf.Authorized(
                number,
                dial_string,
                rate.price_per_minute,
                reservation.max_seconds,
                rate.minimum_s,
                rate.increment_s,
            ),
            now,
        )
        if not accepted and session.reservation == request.key:
            # The call flow could not take it (the customer hung up meanwhile): give it back.
            session.reservation = None
            self._release(session, request.key)

    def _release(self, session: Session, key: str) -> None:
        self._store(cmd.ReleaseCredit(self._next_rid(), session.sid, key), session)

    # --- records ------------------------------------------------------------------------------

    def _write_trigger_cdr(
        self,
        ended: TriggerEnded,
        account: Account,
        call_uuid: str,
        *,
        absorbed: bool,
        limited: bool = False,
    ) -> None:
        """The trigger leg's CDR: never answered, never billed, but on record (SPEC 7)."""
        cdr = Cdr(
            call_uuid=call_uuid,
            leg=LegKind.TRIGGER,
            account_id=account.id,
            from_number=ended.caller,
            to_number=ended.trigger,
            setup_at=self.wall(ended.started_at),
            ring_at=self.wall(ended.started_at),
            end_at=self.wall(ended.ended_at),
            cause_code=ended.status,
            cause_text=f"trigger ended by {ended.how}"
            + (
                "; no callback: too many triggers of this number"
                if limited
                else "; a callback was already under way"
                if absorbed
                else ""
            ),
            node_id=self.node_id,
        )
        self._store(cmd.WriteCdr(self._next_rid(), "", cdr))

    def _write_answered_trigger_cdr(self, session: Session, reason: str, now: float) -> None:
        """The trigger leg the switch answered into the menu: never billed, on record."""
        cdr = Cdr(
            call_uuid=session.sid,
            leg=LegKind.TRIGGER,
            account_id=session.account.id,
            from_number=session.caller,
            to_number=session.trigger,
            setup_at=self.wall(session.started_at),
            ring_at=self.wall(session.started_at),
            answer_at=None if session.answered_at is None else self.wall(session.answered_at),
            end_at=self.wall(now),
            cause_code=200,
            cause_text=f"answered ({session.answered_how}) into the location menu; {reason}",
            node_id=self.node_id,
        )
        self._store(cmd.WriteCdr(self._next_rid(), session.sid, cdr), session)

    def _write_cdr(self, session: Session, record: cf.WriteCdr) -> None:
        account = session.account
        location = account.location
        cdr = Cdr(
            call_uuid=session.sid,
            leg=_LEG_KINDS[record.leg],
            account_id=account.id,
            from_number=self._caller_id() or "",
            # E.164 digits, whatever prefix the trunk wanted in the dial string.
            to_number=(
                location.number
                if record.leg == cf.CALLBACK and location is not None
                else record.number.lstrip("+")
            ),
            setup_at=self.wall(record.setup_at),
            ring_at=None if record.ring_at is None else self.wall(record.ring_at),
            answer_at=None if record.answer_at is None else self.wall(record.answer_at),
            end_at=self.wall(record.end_at),
            cause_code=record.sip_status,
            cause_text=record.cause,
            billed_seconds=record.billed_seconds,
            cost=record.cost,
            node_id=self.node_id,
        )
        write = cmd.WriteCdr(self._next_rid(), session.sid, cdr)
        self._store(write, session)
        writes: list[cmd.StoreRequest] = [write]
        if record.leg == cf.DESTINATION and session.reservation is not None:
            key, session.reservation = session.reservation, None
            settle: cmd.StoreRequest
            if record.cost > 0:
                settle = cmd.CommitCredit(self._next_rid(), session.sid, key, record.cost)
            else:
                settle = cmd.ReleaseCredit(self._next_rid(), session.sid, key)
            self._store(settle, session)
            writes.append(settle)
        if session.tracked:
            session.recording.update(w.rid for w in writes)
        session.log.info(
            "CDR %s leg to %s, %s, billed %d s, cost %d",
            record.leg,
            record.number,
            record.cause,
            record.billed_seconds,
            record.cost,
        )

    def _finish(self, session: Session, reason: str, now: float) -> None:
        session.finished = reason
        if session.answered_at is not None:
            self._write_answered_trigger_cdr(session, reason, now)
        for armed in [k for k in self._armed if k[0] == session.sid]:
            del self._armed[armed]
        for name in list(session.legs):
            self._leg_gone(session, name)
        if session.reservation is not None:
            key, session.reservation = session.reservation, None
            self._release(session, key)
        self._settle_if_done(session, now)

    def _settle_if_done(self, session: Session, now: float) -> None:
        """Once a finished session's writes are durable: settle its row, then forget it."""
        if session.finished is None or session.outstanding or not session.row_known:
            return
        retry = session.finished == "callback_retry" and session.retry_at is not None
        if retry and session.callback_id is None and session.retry_at is not None:
            # No queue row to put back (its enqueue failed): queue the next attempt afresh.
            self._store(
                cmd.EnqueueCallback(
                    self._next_rid(),
                    "",
                    session.account.id,
                    session.trigger,
                    session.retry_at,
                    self.node_id,
                    CALLBACK_LEASE,
                    claimed=False,
                )
            )
        if session.callback_id is not None:
            fate = settlement(
                session.finished, answered=session.answered, retry_at=session.retry_at
            )
            self._settle(session, session.callback_id, fate.event, fate.error, fate.due_at)
            if fate.event == "complete" and session.call_back_now:
                # Queued once this row is closed (one open callback per account).
                self._after_settle[self._rid] = (session.account.id, session.trigger)
                session.call_back_now = False
            session.callback_id = None
        if session.call_back_now:
            self._queue_callback_now((session.account.id, session.trigger), now)
        self.sessions.pop(session.sid, None)
        if session.tracked:
            self._store(cmd.ForgetCalls(self._next_rid(), (session.sid,)))
        if self._by_account.get(session.account.id) is session:
            del self._by_account[session.account.id]
        if retry:
            # Still under way: a trigger in the pause is absorbed, the claim resumes it.
            self._retrying[session.account.id] = (session.trigger, session.sid)
        else:
            self.triggers.callback_done(session.trigger)
        session.log.info("finished (%s)", session.finished)

    # --- plumbing -----------------------------------------------------------------------------

    def _next_rid(self) -> int:
        self._rid += 1
        return self._rid

    def _store(self, request: cmd.StoreRequest, session: Session | None = None) -> None:
        self._pending[request.rid] = session
        if session is not None:
            session.outstanding.add(request.rid)
        self._commands.append(request)

    def _prefix(self) -> str:
        trunk = self.config.trunk
        return trunk.international_prefix if trunk is not None else "+"

    def _caller_id(self) -> str | None:
        trunk = self.config.trunk
        return trunk.caller_id if trunk is not None else None

    # --- operations (issue 9) ---

    def reconfigure(self, config: Config) -> None:
        """SIGHUP: the blocklist, the operator, the tone country, the call-flow timings and
        the limits (the counts so far stay).

        The blocklist applies to the next number any call dials; the timings to calls that
        start from now on (a live call keeps the flow it began with). The trunk, media and
        prompts are the ones the node started with (they need a restart).
        """
        from dataclasses import replace

        self.config = replace(
            self.config,
            blocked_prefixes=config.blocked_prefixes,
            operator=config.operator,
            tone_country=config.tone_country,
            callback_ring_timeout=config.callback_ring_timeout,
            destination_ring_timeout=config.destination_ring_timeout,
            callback_attempts=config.callback_attempts,
            callback_retry_pause=config.callback_retry_pause,
            silence_timeout=config.silence_timeout,
            after_call_idle=config.after_call_idle,
            first_digit_timeout=config.first_digit_timeout,
            inter_digit_timeout=config.inter_digit_timeout,
            limits=config.limits,
        )
        self.flow = callflow_config(self.config)
        self.limits.reconfigure(config.limits)
        self.outbound_limit.per_minute = config.limits.outbound_per_minute


def recordings_dir(config: Config) -> Path:
    """Where the name menu's recordings live: ``[service] recordings_dir``, or beside the
    SQLite database, or ``recordings`` in the working directory (PostgreSQL)."""
    if config.recordings_dir is not None:
        return config.recordings_dir
    if config.db_url.startswith("sqlite:///"):
        return Path(config.db_url.removeprefix("sqlite:///")).parent / "recordings"
    return Path("recordings")
