"""SIP dialogs (RFC 3261 sections 12-15), session timers (RFC 4028), UAS 2xx retransmission.

A :class:`Dialog` holds the state RFC 3261 section 12 defines (Call-ID, tags, local/remote URI,
remote target, route set, CSeq numbers, secure flag) and a three-state machine
(EARLY -> CONFIRMED -> TERMINATED) whose transitions are the :class:`softswitch.fsm.Table`
``TABLE``; an input with no entry raises :class:`DialogError`. It is sans-IO: it builds in-dialog requests and
responses, consumes the requests and responses the transaction layer hands it, and reports
deadlines through ``get_timer()`` / ``handle_timer(now)``, which return :class:`DialogEvent`
values for the endpoint to act on (retry a re-INVITE after 491, refresh or end the session).

Re-INVITE glare (section 14): at most one INVITE is pending per direction; an INVITE that
crosses ours gets 491, and ours is retried after the random delay of section 14.1.

Session timers (RFC 4028) are honoured whenever the peer asks (Session-Expires in its request
or in the 2xx to ours); we ask ourselves only when ``SessionTimerConfig.request_timer`` is set.

:class:`InviteResponder` is the UAS core's 2xx retransmission (section 13.3.1.4, RFC 6026):
one per 2xx sent to an INVITE, stopped by the ACK, giving up after 64*T1.
"""

from __future__ import annotations

import logging
import random
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from enum import Enum

from softswitch import fsm
from softswitch.sip.message import (
    URI,
    CSeq,
    HeaderList,
    Message,
    NameAddr,
    Request,
    Response,
    Via,
    set_param,
)
from softswitch.sip.transaction import make_response

log = logging.getLogger(__name__)

T1 = 0.5  # RFC 3261 section 17.1.1.1: RTT estimate
T2 = 4.0  # RFC 3261 section 17.1.2.2: maximum retransmit interval for non-INVITE / 2xx

#: Methods whose Contact replaces the remote target (RFC 3261 section 12.2, RFC 3311).
TARGET_REFRESH_METHODS = frozenset({"INVITE", "UPDATE"})
#: RFC 4028 section 4: the smallest Session-Expires anyone may ask for.
MIN_SE_FLOOR = 90
#: Branch magic cookie, RFC 3261 section 8.1.1.7.
BRANCH_COOKIE = "z9hG4bK"
MAX_FORWARDS = "70"
# Keep the ACKs of this many recent INVITEs, to re-ACK retransmitted 2xx (section 13.2.2.4).
_ACK_MEMORY = 4


class DialogError(fsm.TransitionError):
    """A protocol error: an input the dialog's table has no entry for, or a bad request."""


class DialogState(Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class _Input(Enum):
    PROVISIONAL = "1xx to the initial INVITE"
    CONFIRM = "2xx to the initial INVITE"
    REJECT = "non-2xx final response to the initial INVITE"
    BYE = "BYE"
    ABORT = "481/408/timeout or session expiry"


_S = DialogState
#: The dialog's life (RFC 3261 section 12): a 1xx with a tag makes it EARLY, a 2xx CONFIRMED
#: (a dialog made by a 2xx starts there); BYE, a failure or a timeout ends it.
TABLE: fsm.Table[DialogState, _Input, None] = fsm.Table(
    "dialog",
    {
        (_S.EARLY, _Input.PROVISIONAL): (None, _S.EARLY),
        (_S.EARLY, _Input.CONFIRM): (None, _S.CONFIRMED),
        (_S.EARLY, _Input.REJECT): (None, _S.TERMINATED),
        (_S.EARLY, _Input.BYE): (None, _S.TERMINATED),
        (_S.EARLY, _Input.ABORT): (None, _S.TERMINATED),
        # A retransmitted or re-ordered 2xx to the initial INVITE: stays confirmed.
        (_S.CONFIRMED, _Input.CONFIRM): (None, _S.CONFIRMED),
        (_S.CONFIRMED, _Input.BYE): (None, _S.TERMINATED),
        (_S.CONFIRMED, _Input.ABORT): (None, _S.TERMINATED),
    },
    initial={_S.EARLY, _S.CONFIRMED},
    final={_S.TERMINATED},
    error=DialogError,
)


def state_diagram() -> str:
    """The dialog state machine as a Mermaid ``stateDiagram-v2``, drawn from :data:`TABLE`."""
    return TABLE.mermaid()


@dataclass(frozen=True, slots=True)
class DialogId:
    """RFC 3261 section 12: Call-ID plus local and remote tag."""

    call_id: str
    local_tag: str
    remote_tag: str


@dataclass(frozen=True, slots=True)
class DialogTerminated:
    """The dialog ended without a BYE from us (481/408/timeout, rejected early dialog)."""

    reason: str


@dataclass(frozen=True, slots=True)
class RetryRequest:
    """Re-send our ``method`` (re-INVITE or UPDATE, same body): after 491 or 422."""

    method: str
    reason: str


@dataclass(frozen=True, slots=True)
class SessionRefreshDue:
    """RFC 4028 section 7.4/9: we are the refresher; send a re-INVITE or UPDATE now."""

    interval: int


@dataclass(frozen=True, slots=True)
class SessionExpired:
    """RFC 4028 section 10: no refresh arrived in time; send BYE."""

    interval: int


@dataclass(frozen=True, slots=True)
class AckTimeout:
    """RFC 3261 section 13.3.1.4: no ACK for our 2xx within 64*T1; end the dialog with BYE."""

    call_id: str
    cseq: int


DialogEvent = DialogTerminated | RetryRequest | SessionRefreshDue | SessionExpired


@dataclass(frozen=True, slots=True)
class SessionTimerConfig:
    """RFC 4028 policy.

    ``session_expires`` is what we ask for when ``request_timer`` is set; ``min_se`` is the
    smallest interval we accept from a peer (422 below it), never below 90 s.
    """

    session_expires: int = 1800
    min_se: int = MIN_SE_FLOOR
    request_timer: bool = False


def default_id() -> str:
    """A random token for branches and tags (RFC 3261 section 19.3: at least 32 bits)."""
    return secrets.token_hex(8)


def _strip_tag(na: NameAddr) -> NameAddr:
    return replace(na, params=tuple((k, v) for k, v in na.params if k.lower() != "tag"))


def _name_addrs(msg: Message, name: str) -> list[NameAddr]:
    from softswitch.sip.uri import parse_name_addr

    out: list[NameAddr] = []
    for value in msg.header_all(name):
        try:
            out.append(parse_name_addr(value))
        except ValueError:
            log.warning("ignoring unparsable %s %r", name, value[:80])
    return out


def _first_contact(msg: Message) -> URI | None:
    contacts = _name_addrs(msg, "Contact")
    return contacts[0].uri if contacts else None


def _split_value(value: str) -> tuple[str, dict[str, str]]:
    parts = [p.strip() for p in value.split(";")]
    params: dict[str, str] = {}
    for p in parts[1:]:
        k, _, v = p.partition("=")
        params[k.strip().lower()] = v.strip()
    return parts[0], params


def parse_session_expires(value: str) -> tuple[int, str | None]:
    """``"1800;refresher=uac"`` -> ``(1800, "uac")`` (RFC 4028 section 4). Raises ValueError."""
    head, params = _split_value(value)
    interval = int(head)
    if interval < 1:
        raise ValueError(f"bad Session-Expires {value!r}")
    refresher = params.get("refresher")
    if refresher is not None:
        refresher = refresher.lower()
        if refresher not in ("uac", "uas"):
            raise ValueError(f"bad refresher in Session-Expires {value!r}")
    return interval, refresher


def _int_header(msg: Message, name: str) -> int | None:
    value = msg.header(name)
    if value is None:
        return None
    try:
        return int(_split_value(value)[0])
    except ValueError:
        return None


def _has_option(msg: Message, header: str, option: str) -> bool:
    return any(v.strip().lower() == option for v in msg.header_all(header))


def build_response(
    request: Request,
    status: int,
    reason: str,
    *,
    to_tag: str | None,
    headers: HeaderList = (),
    body: bytes = b"",
) -> Response:
    """A response to ``request`` per RFC 3261 section 8.2.6.2, with a body.

    The transaction layer's :func:`~softswitch.sip.transaction.make_response` builds it (Via,
    From, Call-ID and CSeq copied; ``to_tag`` added unless To already has one).
    """
    response = make_response(request, status, reason, to_tag=to_tag, headers=headers)
    return replace(response, body=body) if body else response


def reject_small_session_interval(
    request: Request, *, min_se: int, to_tag: str | None
) -> Response | None:
    """422 with Min-SE if ``request`` asks for a Session-Expires below ``min_se`` (RFC 4028 s. 8).

    Also answers 400 to an unparsable Session-Expires. ``None`` when the request is acceptable.
    Usable on an initial INVITE before any dialog exists.
    """
    value = request.header("Session-Expires")
    if value is None:
        return None
    min_se = max(min_se, MIN_SE_FLOOR)
    try:
        interval, _ = parse_session_expires(value)
    except ValueError:
        return build_response(request, 400, "Bad Session-Expires", to_tag=to_tag)
    if interval < min_se:
        return build_response(
            request,
            422,
            "Session Interval Too Small",
            to_tag=to_tag,
            headers=(("Min-SE", str(min_se)),),
        )
    return None


def session_timer_request_headers(interval: int, min_se: int) -> HeaderList:
    """Headers for an INVITE/UPDATE that asks for a session timer with us as refresher.

    RFC 4028 section 7.1: the UAC may name itself refresher; Min-SE tells proxies our floor.
    """
    return (
        ("Session-Expires", f"{interval};refresher=uac"),
        ("Min-SE", str(max(min_se, MIN_SE_FLOOR))),
    )


class Dialog:
    """One SIP dialog (RFC 3261 section 12). Create with :meth:`from_uac` or :meth:`from_uas`."""

    def __init__(
        self,
        *,
        call_id: str,
        local_tag: str,
        remote_tag: str,
        local_uri: NameAddr,
        remote_uri: NameAddr,
        local_target: URI,
        remote_target: URI,
        route_set: tuple[NameAddr, ...],
        local_seq: int | None,
        remote_seq: int | None,
        secure: bool,
        is_uac: bool,
        local_via: Via,
        state: DialogState = DialogState.EARLY,
        new_id: Callable[[], str] = default_id,
        rng: random.Random | None = None,
        session: SessionTimerConfig | None = None,
    ) -> None:
        self.call_id = call_id
        self.local_tag = local_tag
        self.remote_tag = remote_tag
        self.local_uri = _strip_tag(local_uri)
        self.remote_uri = _strip_tag(remote_uri)
        self.local_target = local_target
        self.remote_target = remote_target
        self.route_set = route_set
        self.local_seq = local_seq
        self.remote_seq = remote_seq
        self.secure = secure
        #: True when we sent the dialog-creating INVITE, i.e. we own the Call-ID (section 14.1).
        self.is_uac = is_uac
        self.local_via = replace(
            local_via, params=tuple((k, v) for k, v in local_via.params if k.lower() != "branch")
        )
        self.state = state
        self._new_id = new_id
        self._rng = rng if rng is not None else random.Random()
        self.session_config = session if session is not None else SessionTimerConfig()
        # Section 14: pending INVITE/UPDATE per direction, by CSeq number.
        self._out_pending: dict[str, int] = {}
        self._in_pending: dict[str, int] = {}
        self._sent_invites: dict[int, Request] = {}
        self._acks: dict[int, Request] = {}
        self._retry_at: dict[str, float] = {}
        # Session timer (RFC 4028): interval, whether we refresh, deadlines.
        self.session_interval: int | None = None
        self.we_refresh = False
        self._refresh_at: float | None = None
        self._expire_at: float | None = None
        # Session-Expires each pending incoming request asked for, by CSeq number.
        self._requested_se: dict[int, tuple[int, str | None, bool]] = {}
        self._initial_seq: int | None = None

    # ----------------------------------------------------------------- construction

    @classmethod
    def from_uac(
        cls,
        invite: Request,
        response: Response,
        *,
        now: float = 0.0,
        new_id: Callable[[], str] = default_id,
        rng: random.Random | None = None,
        session: SessionTimerConfig | None = None,
    ) -> Dialog:
        """Dialog created by a 1xx-with-tag or 2xx to our INVITE (RFC 3261 section 12.1.2).

        The route set is the response's Record-Route in reverse order; the remote target is
        its Contact. A 2xx yields a CONFIRMED dialog (and starts a session timer if the 2xx
        carries Session-Expires), a 1xx an EARLY one.
        """
        remote_tag = response.to.tag
        if not 100 < response.status < 300 or not remote_tag:
            raise DialogError(f"{response.status} with To tag {remote_tag!r} creates no dialog")
        if response.call_id != invite.call_id or response.cseq.seq != invite.cseq.seq:
            raise DialogError("response does not belong to this INVITE")
        local_tag = invite.from_.tag
        if not local_tag:
            raise DialogError("our INVITE has no From tag")
        remote_target = _first_contact(response)
        if remote_target is None:
            log.warning(
                "%s from %s has no Contact; using the Request-URI", response.status, invite.uri
            )
            remote_target = invite.uri
        local_target = _first_contact(invite) or invite.from_.uri
        dialog = cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=remote_tag,
            local_uri=invite.from_,
            remote_uri=response.to,
            local_target=local_target,
            remote_target=remote_target,
            route_set=tuple(reversed(_name_addrs(response, "Record-Route"))),
            local_seq=invite.cseq.seq,
            remote_seq=None,
            secure=invite.uri.scheme == "sips",
            is_uac=True,
            local_via=invite.vias[0],
            new_id=new_id,
            rng=rng,
            session=session,
        )
        dialog._initial_seq = invite.cseq.seq
        dialog._sent_invites[invite.cseq.seq] = invite
        dialog._out_pending["INVITE"] = invite.cseq.seq
        dialog.receive_response(response, now)
        return dialog

    @classmethod
    def from_uas(
        cls,
        invite: Request,
        local_tag: str,
        local_contact: URI,
        *,
        local_via: Via,
        new_id: Callable[[], str] = default_id,
        rng: random.Random | None = None,
        session: SessionTimerConfig | None = None,
    ) -> Dialog:
        """Dialog for an INVITE we answer (RFC 3261 section 12.1.1), EARLY until a 2xx is made.

        The route set is the request's Record-Route as received; the remote target its Contact.
        ``local_via`` (sent-by of our transport) is the template for our in-dialog requests.
        """
        remote_tag = invite.from_.tag
        if not remote_tag:
            # RFC 2543 peers sent no From tag; RFC 3261 section 12.1.1 allows a null tag.
            remote_tag = ""
        remote_target = _first_contact(invite)
        if remote_target is None:
            raise DialogError("INVITE without Contact cannot create a dialog")
        dialog = cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=remote_tag,
            local_uri=invite.to,
            remote_uri=invite.from_,
            local_target=local_contact,
            remote_target=remote_target,
            route_set=tuple(_name_addrs(invite, "Record-Route")),
            local_seq=None,
            remote_seq=invite.cseq.seq,
            secure=invite.uri.scheme == "sips",
            is_uac=False,
            local_via=local_via,
            new_id=new_id,
            rng=rng,
            session=session,
        )
        dialog._initial_seq = invite.cseq.seq
        dialog._in_pending["INVITE"] = invite.cseq.seq
        dialog._note_requested_se(invite)
        return dialog

    # ----------------------------------------------------------------- state machine

    @property
    def id(self) -> DialogId:
        return DialogId(self.call_id, self.local_tag, self.remote_tag)

    def _fire(self, event: _Input) -> None:
        # DEBUG: one line per call leg and state; the endpoint logs call outcomes.
        new = self.state = TABLE.step(log, self.call_id, self.state, event)
        if new is DialogState.TERMINATED:
            self._refresh_at = self._expire_at = None
            self._retry_at.clear()

    def _require_live(self) -> None:
        if self.state is DialogState.TERMINATED:
            raise DialogError("dialog is terminated")

    # ----------------------------------------------------------------- building requests

    def _new_via(self) -> Via:
        branch = BRANCH_COOKIE + self._new_id()
        return replace(self.local_via, params=set_param(self.local_via.params, "branch", branch))

    def _target_and_routes(self) -> tuple[URI, tuple[NameAddr, ...]]:
        """Request-URI and Route values, RFC 3261 section 12.2.1.1."""
        if not self.route_set:
            return self.remote_target, ()
        first = self.route_set[0]
        if first.uri.param("lr") is not None:
            return self.remote_target, self.route_set
        # Strict router: it takes the Request-URI; the remote target travels as the last Route.
        # Parameters not allowed in a Request-URI (method, headers) are stripped (19.1.1).
        uri = replace(
            first.uri,
            params=tuple((k, v) for k, v in first.uri.params if k.lower() != "method"),
            headers=(),
        )
        return uri, (*self.route_set[1:], NameAddr(self.remote_target))

    def _common_headers(self, routes: Iterable[NameAddr]) -> list[tuple[str, str]]:
        hdrs = [("Max-Forwards", MAX_FORWARDS)]
        hdrs.extend(("Route", str(r)) for r in routes)
        return hdrs

    def _from_to(self) -> tuple[NameAddr, NameAddr]:
        to = self.remote_uri.with_tag(self.remote_tag) if self.remote_tag else self.remote_uri
        return self.local_uri.with_tag(self.local_tag), to

    def can_send(self, method: str) -> bool:
        """False while an INVITE/UPDATE is pending in either direction (section 14.1)."""
        method = method.upper()
        if method not in TARGET_REFRESH_METHODS:
            return self.state is not DialogState.TERMINATED
        return (
            self.state is not DialogState.TERMINATED
            and method not in self._out_pending
            and method not in self._in_pending
        )

    def create_request(
        self, method: str, *, body: bytes = b"", headers: HeaderList = (), now: float
    ) -> Request:
        """Build an in-dialog request (RFC 3261 section 12.2.1.1).

        CSeq is the local sequence number plus one; INVITE and UPDATE carry our Contact and the
        session-timer headers; a BYE terminates the dialog as soon as it is built (15.1.1).
        ACK is :meth:`create_ack`; CANCEL is built from the request it cancels (section 9.1).
        Raises :class:`DialogError` for a second pending INVITE/UPDATE or a dead dialog.
        """
        method = method.upper()
        if method in ("ACK", "CANCEL"):
            raise DialogError(f"{method} is not built by create_request")
        self._require_live()
        if method in TARGET_REFRESH_METHODS and not self.can_send(method):
            raise DialogError(f"an {method} is already pending on dialog {self.call_id}")
        if method == "BYE" and self.state is DialogState.EARLY and not self.is_uac:
            raise DialogError("the callee must not send BYE on an early dialog (section 15)")
        seq = 1 if self.local_seq is None else self.local_seq + 1
        self.local_seq = seq
        uri, routes = self._target_and_routes()
        hdrs = self._common_headers(routes)
        if method in TARGET_REFRESH_METHODS:
            hdrs.append(("Contact", f"<{self.local_target}>"))
            hdrs.append(("Supported", "timer"))
            hdrs.extend(self._session_request_headers())
            self._out_pending[method] = seq
            self._retry_at.pop(method, None)
        hdrs.extend(headers)
        from_, to = self._from_to()
        request = Request(
            method=method,
            uri=uri,
            vias=(self._new_via(),),
            from_=from_,
            to=to,
            call_id=self.call_id,
            cseq=CSeq(seq, method),
            headers=tuple(hdrs),
            body=body,
        )
        if method == "INVITE":
            self._remember_invite(request)
        if method == "BYE":
            self._fire(_Input.BYE)
        return request

    def _session_request_headers(self) -> HeaderList:
        cfg = self.session_config
        if self.session_interval is not None and self.we_refresh:
            return session_timer_request_headers(self.session_interval, cfg.min_se)
        if self.session_interval is None and cfg.request_timer:
            return session_timer_request_headers(cfg.session_expires, cfg.min_se)
        if self.session_interval is not None:
            # The peer refreshes; a request from us keeps its interval and role.
            return (
                ("Session-Expires", f"{self.session_interval};refresher=uas"),
                ("Min-SE", str(max(cfg.min_se, MIN_SE_FLOOR))),
            )
        return ()

    def _remember_invite(self, invite: Request) -> None:
        self._sent_invites[invite.cseq.seq] = invite
        for old in sorted(self._sent_invites)[:-_ACK_MEMORY]:
            del self._sent_invites[old]
            self._acks.pop(old, None)

    def create_ack(self, response: Response) -> Request:
        """The ACK for a 2xx to one of our INVITEs (RFC 3261 section 13.2.2.4).

        Same CSeq number as the INVITE, method ACK, a new branch, the dialog's route set, and
        the INVITE's credentials. A retransmitted 2xx gets the very same ACK back.
        """
        seq = response.cseq.seq
        if not 200 <= response.status < 300 or response.cseq.method != "INVITE":
            raise DialogError("only a 2xx to INVITE is ACKed by the dialog")
        cached = self._acks.get(seq)
        if cached is not None:
            return cached
        invite = self._sent_invites.get(seq)
        if invite is None:
            raise DialogError(f"2xx for INVITE CSeq {seq} that this dialog did not send")
        uri, routes = self._target_and_routes()
        hdrs = self._common_headers(routes)
        hdrs.extend(
            (k, v)
            for k, v in invite.headers
            if k.lower() in ("authorization", "proxy-authorization")
        )
        from_, to = self._from_to()
        ack = Request(
            method="ACK",
            uri=uri,
            vias=(self._new_via(),),
            from_=from_,
            to=to,
            call_id=self.call_id,
            cseq=CSeq(seq, "ACK"),
            headers=tuple(hdrs),
        )
        self._acks[seq] = ack
        return ack

    # ----------------------------------------------------------------- responses we receive

    def receive_response(self, response: Response, now: float) -> list[DialogEvent]:
        """Apply a response to one of our requests in this dialog (sections 12.2.1.2, 13.2.2).

        Handles the initial INVITE's 1xx/2xx/failure, target refresh from 2xx to INVITE/UPDATE,
        481/408 ending the dialog, 491 scheduling a retry, 422 asking for an immediate retry,
        and the session timer the 2xx grants. A 2xx to INVITE still needs :meth:`create_ack`.
        """
        status, method, seq = response.status, response.cseq.method, response.cseq.seq
        if self.state is DialogState.TERMINATED:
            log.debug("dialog %s: %s to %s after termination", self.call_id, status, method)
            return []
        if status < 200:
            if (
                method == "INVITE"
                and seq == self._initial_seq
                and self.is_uac
                and self.state is DialogState.EARLY
                and status > 100
            ):
                self._fire(_Input.PROVISIONAL)
                self._refresh_target(response)
            return []
        events: list[DialogEvent] = []
        if method in TARGET_REFRESH_METHODS and self._out_pending.get(method) == seq:
            del self._out_pending[method]
        initial = method == "INVITE" and seq == self._initial_seq and self.is_uac
        if 200 <= status < 300:
            if initial:
                self._fire(_Input.CONFIRM)
                # Section 13.2.2.4: the route set is recomputed from the 2xx.
                self.route_set = tuple(reversed(_name_addrs(response, "Record-Route")))
            if method in TARGET_REFRESH_METHODS:
                self._refresh_target(response)
                self._session_from_2xx(response, now)
            return events
        if initial and self.state is DialogState.EARLY:
            self._fire(_Input.REJECT)
            events.append(DialogTerminated(f"{status} {response.reason} to the INVITE"))
        elif status in (481, 408):
            self._fire(_Input.ABORT)
            events.append(DialogTerminated(f"{status} {response.reason} to {method}"))
        elif status == 491 and method in TARGET_REFRESH_METHODS:
            # Section 14.1: 2.1-4 s if we own the Call-ID, else 0-2 s, in 10 ms units.
            if self.is_uac:
                delay = self._rng.randint(210, 400) / 100
            else:
                delay = self._rng.randint(0, 200) / 100
            self._retry_at[method] = now + delay
            log.info("dialog %s: 491 to our %s, retrying in %.2f s", self.call_id, method, delay)
        elif status == 422 and method in TARGET_REFRESH_METHODS:
            min_se = _int_header(response, "Min-SE")
            if min_se is not None and min_se > (self.session_interval or 0):
                # RFC 4028 section 7.4: retry with Session-Expires at least the peer's Min-SE.
                self.session_config = replace(
                    self.session_config,
                    session_expires=max(min_se, self.session_config.session_expires),
                    min_se=max(min_se, self.session_config.min_se),
                )
                if self.session_interval is not None:
                    self.session_interval = max(self.session_interval, min_se)
                events.append(RetryRequest(method, f"422: peer's Min-SE is {min_se}"))
        # Other failures of a re-INVITE/UPDATE leave the session as it was (section 14.1).
        return events

    def request_timed_out(self, request: Request, now: float) -> list[DialogEvent]:
        """Our in-dialog request got no response at all: end the dialog (section 12.2.1.2)."""
        del now
        if self.state is DialogState.TERMINATED:
            return []
        self._out_pending.pop(request.method, None)
        self._fire(_Input.ABORT)
        return [DialogTerminated(f"no response to {request.method}")]

    def _refresh_target(self, msg: Message) -> None:
        contact = _first_contact(msg)
        if contact is not None and contact != self.remote_target:
            log.info("dialog %s: remote target %s -> %s", self.call_id, self.remote_target, contact)
            self.remote_target = contact

    # ----------------------------------------------------------------- requests we receive

    def receive_request(self, request: Request, now: float) -> Response | None:
        """Check an in-dialog request from the peer (RFC 3261 section 12.2.2).

        Returns the response the dialog layer gives itself: 500 for an out-of-order CSeq or an
        INVITE overlapping one still pending (with Retry-After, 14.2), 491 for glare, 422 for a
        too short Session-Expires, 200 to BYE (the dialog is then TERMINATED), 481 on a
        terminated dialog. ``None``: the request is in order and the application answers it
        (with :meth:`create_response`). ACK and CANCEL always return ``None``.
        """
        method = request.method
        if method in ("ACK", "CANCEL"):
            return None
        if self.state is DialogState.TERMINATED:
            return self.create_response(request, 481, "Call/Transaction Does Not Exist", now=now)
        seq = request.cseq.seq
        if self.remote_seq is not None and seq < self.remote_seq:
            log.warning(
                "dialog %s: %s CSeq %d < %d, out of order",
                self.call_id,
                method,
                seq,
                self.remote_seq,
            )
            return build_response(request, 500, "Out Of Order CSeq", to_tag=self.local_tag)
        self.remote_seq = seq
        if method in TARGET_REFRESH_METHODS:
            if method in self._in_pending:
                retry = str(self._rng.randint(0, 10))
                return build_response(
                    request,
                    500,
                    f"Overlapping {method}",
                    to_tag=self.local_tag,
                    headers=(("Retry-After", retry),),
                )
            # Section 14.2 (and RFC 3311 section 5.2 for UPDATE): an offer crossing our pending
            # INVITE/UPDATE is glare.
            if method in self._out_pending or (request.body and self._out_pending):
                return build_response(request, 491, "Request Pending", to_tag=self.local_tag)
            small = reject_small_session_interval(
                request, min_se=self.session_config.min_se, to_tag=self.local_tag
            )
            if small is not None:
                return small
            self._in_pending[method] = seq
            self._note_requested_se(request)
            self._refresh_target(request)
            return None
        if method == "BYE":
            self._fire(_Input.BYE)
            return build_response(request, 200, "OK", to_tag=self.local_tag)
        return None

    def _note_requested_se(self, request: Request) -> None:
        value = request.header("Session-Expires")
        supported = _has_option(request, "Supported", "timer")
        if value is None:
            self._requested_se.pop(request.cseq.seq, None)
            return
        try:
            interval, refresher = parse_session_expires(value)
        except ValueError:
            return
        self._requested_se[request.cseq.seq] = (interval, refresher, supported)

    def create_response(
        self,
        request: Request,
        status: int,
        reason: str,
        *,
        headers: HeaderList = (),
        body: bytes = b"",
        now: float,
    ) -> Response:
        """Our response to an in-dialog (or the dialog-creating) request, with our To tag.

        The dialog headers come from :meth:`response_headers` (see there), ``headers`` follow.
        """
        hdrs = (*self.response_headers(request, status, now=now), *headers)
        return build_response(
            request, status, reason, to_tag=self.local_tag, headers=hdrs, body=body
        )

    def response_headers(self, request: Request, status: int, *, now: float) -> HeaderList:
        """The dialog's headers for our ``status`` response to ``request``; updates the dialog.

        For 1xx/2xx to INVITE/UPDATE: the request's Record-Route and our Contact (section
        12.1.1). For a 2xx to a request that asked for a session timer: Session-Expires with the
        refresher chosen per RFC 4028 section 9 (the peer if it supports timers, else us), and
        the timer starts. A final response ends the pending INVITE/UPDATE; to the dialog's
        initial INVITE it confirms (2xx) or ends (other) the dialog. For callers that build the
        response themselves (the endpoint's ``respond``), using :attr:`local_tag` as To tag.
        """
        method, seq = request.method, request.cseq.seq
        hdrs: list[tuple[str, str]] = []
        if method in TARGET_REFRESH_METHODS and 100 < status < 300:
            hdrs.extend(
                ("Record-Route", v) for k, v in request.headers if k.lower() == "record-route"
            )
            hdrs.append(("Contact", f"<{self.local_target}>"))
        if method in TARGET_REFRESH_METHODS and 200 <= status < 300:
            hdrs.append(("Supported", "timer"))
            hdrs.extend(self._session_from_request(seq, now))
        if status >= 200:
            if self._in_pending.get(method) == seq:
                del self._in_pending[method]
            self._requested_se.pop(seq, None)
            initial = method == "INVITE" and seq == self._initial_seq and not self.is_uac
            if initial and self.state is DialogState.EARLY:
                self._fire(_Input.CONFIRM if status < 300 else _Input.REJECT)
        return tuple(hdrs)

    # ----------------------------------------------------------------- session timer

    def _session_from_request(self, seq: int, now: float) -> HeaderList:
        asked = self._requested_se.get(seq)
        if asked is None:
            # RFC 4028 section 9: no Session-Expires in the request, none in the 2xx: no timer.
            self._start_session(None, False, now)
            return ()
        interval, refresher, supported = asked
        if refresher is None:
            refresher = "uac" if supported else "uas"
        self._start_session(interval, refresher == "uas", now)
        hdrs: HeaderList = (("Session-Expires", f"{interval};refresher={refresher}"),)
        if refresher == "uac":
            # RFC 4028 section 9: the UAC must know it has to refresh.
            hdrs += (("Require", "timer"),)
        return hdrs

    def _session_from_2xx(self, response: Response, now: float) -> None:
        value = response.header("Session-Expires")
        if value is None:
            self._start_session(None, False, now)
            return
        try:
            interval, refresher = parse_session_expires(value)
        except ValueError:
            log.warning("dialog %s: ignoring bad Session-Expires %r", self.call_id, value)
            return
        # The refresher names a role in this transaction; we were its UAC.
        self._start_session(interval, refresher != "uas", now)

    def _start_session(self, interval: int | None, we_refresh: bool, now: float) -> None:
        if interval is None:
            if self.session_interval is not None:
                log.info("dialog %s: session timer off", self.call_id)
            self.session_interval = None
            self._refresh_at = self._expire_at = None
            return
        self.session_interval = interval
        self.we_refresh = we_refresh
        # RFC 4028 section 10: BYE at expiry minus the smaller of 32 s and a third of it.
        self._expire_at = now + interval - min(32.0, interval / 3)
        # Section 7.4/9: the refresher should refresh at half the interval.
        self._refresh_at = now + interval / 2 if we_refresh else None
        log.debug(
            "dialog %s: session timer %d s, refresher %s",
            self.call_id,
            interval,
            "us" if we_refresh else "peer",
        )

    # ----------------------------------------------------------------- timers

    def get_timer(self) -> float | None:
        """The next deadline (491 retry, session refresh or expiry), or ``None``."""
        deadlines = [*self._retry_at.values()]
        if self._refresh_at is not None:
            deadlines.append(self._refresh_at)
        if self._expire_at is not None:
            deadlines.append(self._expire_at)
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> list[DialogEvent]:
        """Fire every deadline that is due at ``now``."""
        events: list[DialogEvent] = []
        for method, at in sorted(self._retry_at.items()):
            if now >= at:
                del self._retry_at[method]
                events.append(RetryRequest(method, "491 back-off elapsed"))
        if self._refresh_at is not None and now >= self._refresh_at and self.session_interval:
            self._refresh_at = None
            events.append(SessionRefreshDue(self.session_interval))
        if self._expire_at is not None and now >= self._expire_at and self.session_interval:
            self._expire_at = None
            log.warning("dialog %s: session expired without refresh", self.call_id)
            events.append(SessionExpired(self.session_interval))
        return events


class InviteResponder:
    """Retransmits our 2xx to an INVITE until the ACK arrives (RFC 3261 section 13.3.1.4).

    Intervals start at T1 and double up to T2; after 64*T1 without ACK it reports
    :class:`AckTimeout` once and stops (the dialog should then be ended with BYE).
    """

    def __init__(self, response: Response, now: float, *, t1: float = T1, t2: float = T2) -> None:
        if response.cseq.method != "INVITE" or not 200 <= response.status < 300:
            raise ValueError("InviteResponder is for a 2xx to INVITE")
        self.response = response
        self._t2 = t2
        self._interval = t1
        self._next: float | None = now + t1
        self._give_up = now + 64 * t1
        self.acked = False

    def get_timer(self) -> float | None:
        if self._next is None:
            return None
        return min(self._next, self._give_up)

    def handle_timer(self, now: float) -> list[Response | AckTimeout]:
        """Retransmissions (at most one per call) or the give-up event, due at ``now``."""
        if self._next is None:
            return []
        if now >= self._give_up:
            self._next = None
            log.warning(
                "no ACK for %d to INVITE on %s after 64*T1",
                self.response.status,
                self.response.call_id,
            )
            return [AckTimeout(self.response.call_id, self.response.cseq.seq)]
        if now < self._next:
            return []
        self._interval = min(2 * self._interval, self._t2)
        self._next = now + self._interval
        return [self.response]

    def ack_received(self) -> None:
        """The ACK for this 2xx arrived: stop retransmitting."""
        self.acked = True
        self._next = None


__all__ = [
    "MIN_SE_FLOOR",
    "T1",
    "T2",
    "TABLE",
    "TARGET_REFRESH_METHODS",
    "AckTimeout",
    "Dialog",
    "DialogError",
    "DialogEvent",
    "DialogId",
    "DialogState",
    "DialogTerminated",
    "InviteResponder",
    "RetryRequest",
    "SessionExpired",
    "SessionRefreshDue",
    "SessionTimerConfig",
    "build_response",
    "default_id",
    "parse_session_expires",
    "reject_small_session_interval",
    "session_timer_request_headers",
    "state_diagram",
]
