"""Registration to the carrier trunk (RFC 3261 section 10) and the OPTIONS keep-alive, sans-IO.

:class:`Registration` keeps one binding (our Contact for the trunk AOR) alive. Its states are
UNREGISTERED, REGISTERING (a REGISTER is in flight), REGISTERED (refresh scheduled),
BACKING_OFF (waiting after a failure) and UNREGISTERING; its :class:`softswitch.fsm.Table`
``TABLE`` lists every allowed move and any other raises :class:`RegistrationError`. The endpoint sends each returned REGISTER
to ``config.proxy`` in a client transaction and feeds back ``receive_response`` / ``on_timeout``;
``get_timer`` / ``handle_timer`` schedule refreshes and retries.

The Call-ID is fixed for the object's life and CSeq grows by one per REGISTER (section 10.2.4).
401/407 are answered once with digest credentials, only to a challenge from the proxy address;
a second challenge that is not ``stale=true`` is a credential failure. Failures back off
exponentially (30 s doubling to 30 min, plus up to 10 % jitter, at least Retry-After, at least
5 min after 403/404), so a misconfigured account never hammers the carrier.

:class:`KeepAlive` probes a trunk with OPTIONS every ``interval`` seconds and reports it up or
down (``KEEPALIVE_TABLE``); IP-authenticated trunks use only this.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum

from softswitch import fsm
from softswitch.sip import auth
from softswitch.sip.dialog import BRANCH_COOKIE, MAX_FORWARDS, default_id
from softswitch.sip.message import (
    URI,
    Address,
    CSeq,
    NameAddr,
    Request,
    Response,
    Via,
    get_param,
    set_param,
)

log = logging.getLogger(__name__)

#: Failures that will not fix themselves (RFC 3261 section 21.4): wait at least this long.
PERMANENT_FAILURE_DELAY = 300.0
_PERMANENT_STATUSES = frozenset({403, 404})


class RegistrationError(fsm.TransitionError):
    """An input the registration state machine has no entry for."""


class RegState(Enum):
    UNREGISTERED = "unregistered"
    REGISTERING = "registering"
    REGISTERED = "registered"
    BACKING_OFF = "backing off"
    UNREGISTERING = "unregistering"


class _In(Enum):
    START = "start"
    RESEND = "resend (credentials or longer expires)"
    SUCCESS = "2xx"
    FAILURE = "failure"
    REFRESH_DUE = "refresh due"
    RETRY_DUE = "back-off elapsed"
    NETWORK_UP = "network up"
    STOP = "stop"


_R = RegState
#: The binding's life. Every move is logged at INFO: the trunk's registration is the first
#: thing an operator looks at when calls fail.
TABLE: fsm.Table[RegState, _In, None] = fsm.Table(
    "registration",
    {
        (_R.UNREGISTERED, _In.START): (None, _R.REGISTERING),
        (_R.UNREGISTERED, _In.STOP): (None, _R.UNREGISTERED),
        (_R.UNREGISTERED, _In.NETWORK_UP): (None, _R.UNREGISTERED),
        (_R.REGISTERING, _In.RESEND): (None, _R.REGISTERING),
        (_R.REGISTERING, _In.SUCCESS): (None, _R.REGISTERED),
        (_R.REGISTERING, _In.FAILURE): (None, _R.BACKING_OFF),
        (_R.REGISTERING, _In.NETWORK_UP): (None, _R.REGISTERING),
        (_R.REGISTERING, _In.STOP): (None, _R.UNREGISTERING),
        (_R.REGISTERED, _In.REFRESH_DUE): (None, _R.REGISTERING),
        (_R.REGISTERED, _In.NETWORK_UP): (None, _R.REGISTERING),
        (_R.REGISTERED, _In.STOP): (None, _R.UNREGISTERING),
        (_R.BACKING_OFF, _In.RETRY_DUE): (None, _R.REGISTERING),
        (_R.BACKING_OFF, _In.NETWORK_UP): (None, _R.REGISTERING),
        (_R.BACKING_OFF, _In.STOP): (None, _R.UNREGISTERING),
        (_R.UNREGISTERING, _In.RESEND): (None, _R.UNREGISTERING),
        (_R.UNREGISTERING, _In.SUCCESS): (None, _R.UNREGISTERED),
        (_R.UNREGISTERING, _In.FAILURE): (None, _R.UNREGISTERED),
        (_R.UNREGISTERING, _In.NETWORK_UP): (None, _R.UNREGISTERING),
    },
    initial=_R.UNREGISTERED,
    error=RegistrationError,
)


def state_diagram() -> str:
    """The registration state machine as a Mermaid ``stateDiagram-v2``, from :data:`TABLE`."""
    return TABLE.mermaid()


@dataclass(frozen=True, slots=True)
class RegistrationConfig:
    """One trunk account.

    ``registrar`` is the REGISTER Request-URI (``sip:trunk.example.com``), ``aor`` the
    address-of-record (``sip:alice@trunk.example.com``), ``contact`` where the trunk reaches
    us. ``proxy`` is where every REGISTER goes and the only source whose challenge we answer.
    ``local_via`` gives our sent-by (its branch is replaced per request).
    """

    registrar: URI
    aor: URI
    contact: URI
    proxy: Address
    local_via: Via
    username: str | None = None
    password: str | None = None
    expires: int = 3600
    min_backoff: float = 30.0
    max_backoff: float = 1800.0
    #: Refresh this long before expiry (at least 10 % of the interval, at most half of it).
    #: 32 s is Timer F: a refresh that gets no answer at all still ends before the binding does.
    refresh_margin: float = 32.0


def _same_binding(a: URI, b: URI) -> bool:
    """Contact match for the 2xx's binding list (RFC 3261 section 19.1.4, simplified)."""
    return (
        a.scheme.lower() == b.scheme.lower()
        and a.user == b.user
        and a.host.lower() == b.host.lower()
        and (a.port or 5060) == (b.port or 5060)
    )


def _leading_int(value: str | None) -> int | None:
    if value is None:
        return None
    head = value.split(";", 1)[0].split("(", 1)[0].strip()
    return int(head) if head.isdigit() else None


class Registration:
    """Keeps our Contact registered at the trunk's registrar (RFC 3261 section 10.2)."""

    def __init__(
        self,
        config: RegistrationConfig,
        *,
        new_id: Callable[[], str] = default_id,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.state = RegState.UNREGISTERED
        self._new_id = new_id
        self._rng = rng if rng is not None else random.Random()
        # Section 10.2: one Call-ID for every REGISTER of this boot cycle.
        self.call_id = f"{new_id()}@{config.local_via.host}"
        self._cseq = 0
        self._requested = config.expires
        self._pending: Request | None = None
        self._digest: auth.DigestClient | None = None
        if config.username is not None and config.password is not None:
            # Bound to the proxy address: a challenge from anywhere else gets no answer.
            self._digest = auth.DigestClient(config.username, config.password, peers=[config.proxy])
        self._failures = 0
        self._deadline: float | None = None
        self.expires_at: float | None = None
        self.last_error: str | None = None

    @property
    def _who(self) -> str:
        return f"{self.config.registrar} as {self.config.aor.user or self.config.aor}"

    def _fire(self, event: _In) -> RegState:
        self.state = TABLE.step(log, self._who, self.state, event, level=logging.INFO)
        return self.state

    # ------------------------------------------------------------------ public API

    def start(self, now: float) -> Request:
        """Send the first REGISTER."""
        self._fire(_In.START)
        self._failures = 0
        return self._build(self._requested)

    def stop(self, now: float) -> Request | None:
        """Remove our binding (Expires: 0, section 10.2.2); ``None`` if nothing is registered."""
        del now
        self._fire(_In.STOP)
        self._deadline = None
        if self.state is RegState.UNREGISTERED:
            return None
        return self._build(0)

    def network_up(self, now: float) -> Request | None:
        """The network came back: register again at once (a binding may have been lost)."""
        self._fire(_In.NETWORK_UP)
        if self.state is not RegState.REGISTERING:
            return None
        self._failures = 0
        log.info("network up: re-registering to %s", self._who)
        return self._build(self._requested)

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` should next run (refresh or retry), or ``None``."""
        return self._deadline

    def handle_timer(self, now: float) -> Request | None:
        """A refresh or a retry after back-off, if due."""
        if self._deadline is None or now < self._deadline:
            return None
        self._deadline = None
        if self.state is RegState.REGISTERED:
            self._fire(_In.REFRESH_DUE)
        elif self.state is RegState.BACKING_OFF:
            self._fire(_In.RETRY_DUE)
        else:
            return None
        return self._build(self._requested)

    def receive_response(self, response: Response, source: Address, now: float) -> Request | None:
        """Apply the final response to our REGISTER; returns a new REGISTER to send, if any.

        ``source`` is where the response came from: credentials go only to the proxy.
        Responses to superseded REGISTERs and provisional responses are ignored.
        """
        pending = self._pending
        if (
            pending is None
            or response.call_id != self.call_id
            or response.cseq.seq != pending.cseq.seq
            or response.status < 200
        ):
            return None
        self._pending = None
        status = response.status
        unregistering = self.state is RegState.UNREGISTERING
        if 200 <= status < 300:
            return self._success(response, now)
        if status in (401, 407):
            again = self._answer_challenge(response, source, pending, now)
            if again is not None:
                self._fire(_In.RESEND)
                return again
            return None
        if status == 423 and not unregistering:
            return self._interval_too_brief(response, now)
        reason = f"{status} {response.reason} from the registrar"
        if status in _PERMANENT_STATUSES:
            reason += ": check the account and credentials"
        self._failed(
            reason,
            now,
            retry_after=_leading_int(response.header("Retry-After")),
            permanent=status in _PERMANENT_STATUSES,
        )
        return None

    def on_timeout(self, now: float, request: Request | None = None) -> None:
        """Our REGISTER's transaction timed out (Timer F). ``request`` filters stale timeouts."""
        if self._pending is None:
            return
        if request is not None and request.cseq.seq != self._pending.cseq.seq:
            return
        self._pending = None
        self._failed("no response from the registrar (Timer F)", now)

    # ------------------------------------------------------------------ internals

    def _build(self, expires: int) -> Request:
        cfg = self.config
        self._cseq += 1
        branch = BRANCH_COOKIE + self._new_id()
        via = replace(cfg.local_via, params=set_param(cfg.local_via.params, "branch", branch))
        contact = f"<{cfg.contact}>"
        if expires == 0:
            contact += ";expires=0"
        headers: list[tuple[str, str]] = [
            ("Max-Forwards", MAX_FORWARDS),
            ("Contact", contact),
            ("Expires", str(expires)),
        ]
        request = Request(
            method="REGISTER",
            uri=cfg.registrar,
            vias=(via,),
            from_=NameAddr(cfg.aor).with_tag(self._new_id()),
            to=NameAddr(cfg.aor),
            call_id=self.call_id,
            cseq=CSeq(self._cseq, "REGISTER"),
            headers=tuple(headers),
        )
        self._pending = request
        return request

    def _success(self, response: Response, now: float) -> Request | None:
        granted = self._granted_expires(response)
        if granted <= 0 and self.state is RegState.REGISTERING:
            self._failed("2xx without a binding for our Contact", now)
            return None
        if self._fire(_In.SUCCESS) is RegState.UNREGISTERED:
            log.info("unregistered from %s", self._who)
            self.expires_at = None
            return None
        self._failures = 0
        self.last_error = None
        self.expires_at = now + granted
        lead = min(max(granted * 0.1, self.config.refresh_margin), granted / 2)
        self._deadline = now + granted - lead
        log.info("registered to %s, expires in %d s", self._who, granted)
        return None

    def _granted_expires(self, response: Response) -> int:
        from softswitch.sip.uri import parse_name_addr

        for value in response.header_all("Contact"):
            try:
                contact = parse_name_addr(value)
            except ValueError:
                log.debug("ignoring unparsable Contact %r in 2xx to REGISTER", value[:80])
                continue
            if _same_binding(contact.uri, self.config.contact):
                granted = _leading_int(get_param(contact.params, "expires"))
                if granted is not None:
                    return granted
        header = _leading_int(response.header("Expires"))
        return header if header is not None else self._requested

    def _answer_challenge(
        self, response: Response, source: Address, pending: Request, now: float
    ) -> Request | None:
        if self._digest is None:
            self._failed(f"{response.status} {response.reason} but no credentials configured", now)
            return None
        answer = self._digest.answer(pending, response, source)
        if isinstance(answer, auth.AuthRefused):
            if answer.refusal is auth.Refusal.REJECTED:
                reason = (
                    f"{response.status} {response.reason} after sending credentials: "
                    "check username and password"
                )
            else:
                reason = f"{response.status} not answered: {answer.refusal.value} {answer.detail}"
            self._failed(reason, now, permanent=answer.refusal is auth.Refusal.REJECTED)
            return None
        expires = _leading_int(pending.header("Expires"))
        request = self._build(self._requested if expires is None else expires)
        request = replace(request, headers=(*request.headers, (answer.name, answer.value)))
        self._pending = request
        return request

    def _interval_too_brief(self, response: Response, now: float) -> Request | None:
        minimum = _leading_int(response.header("Min-Expires"))
        if minimum is None or minimum <= self._requested:
            self._failed("423 Interval Too Brief without a usable Min-Expires", now)
            return None
        log.info("registrar %s wants expires >= %d s; retrying", self.config.registrar, minimum)
        self._requested = minimum
        self._fire(_In.RESEND)
        return self._build(minimum)

    def _failed(
        self,
        reason: str,
        now: float,
        *,
        retry_after: int | None = None,
        permanent: bool = False,
    ) -> None:
        new = self._fire(_In.FAILURE)
        self.last_error = reason
        if new is RegState.UNREGISTERED:
            log.warning("unregister from %s failed (%s); giving up", self._who, reason)
            self.expires_at = None
            return
        base = min(self.config.max_backoff, self.config.min_backoff * 2**self._failures)
        delay = base + base * 0.1 * self._rng.random()
        if permanent:
            delay = max(delay, PERMANENT_FAILURE_DELAY)
        if retry_after is not None:
            delay = max(delay, float(retry_after))
        self._failures += 1
        self._deadline = now + delay
        log.warning("registration to %s failed: %s; retry in %d s", self._who, reason, round(delay))


class TrunkState(Enum):
    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"


class _Probe(Enum):
    ANSWERED = "answered"
    SILENT = "no answer"


class KeepAliveError(fsm.TransitionError):
    """A probe outcome the keep-alive state machine has no entry for."""


_T = TrunkState
#: What the OPTIONS probes say about the trunk: the last outcome decides.
KEEPALIVE_TABLE: fsm.Table[TrunkState, _Probe, None] = fsm.Table(
    "trunk keep-alive",
    {
        (_T.UNKNOWN, _Probe.ANSWERED): (None, _T.UP),
        (_T.UNKNOWN, _Probe.SILENT): (None, _T.DOWN),
        (_T.UP, _Probe.ANSWERED): (None, _T.UP),
        (_T.UP, _Probe.SILENT): (None, _T.DOWN),
        (_T.DOWN, _Probe.ANSWERED): (None, _T.UP),
        (_T.DOWN, _Probe.SILENT): (None, _T.DOWN),
    },
    initial=_T.UNKNOWN,
    error=KeepAliveError,
)


class KeepAlive:
    """OPTIONS probe towards a trunk: one in flight at a time, one every ``interval`` seconds.

    Any final response except 503 proves the trunk reachable (a 404 or 405 to OPTIONS still
    means something is listening); 503 and a transaction timeout mark it down.
    """

    def __init__(
        self,
        target: URI,
        local_uri: URI,
        local_via: Via,
        *,
        interval: float = 30.0,
        name: str = "trunk",
        new_id: Callable[[], str] = default_id,
    ) -> None:
        self.target = target
        self.local_uri = local_uri
        self.local_via = local_via
        self.interval = interval
        self.name = name
        self.state = TrunkState.UNKNOWN
        self._new_id = new_id
        self._cseq = 0
        self.call_id = f"{new_id()}@{local_via.host}"
        self._pending: Request | None = None
        self._sent_at = 0.0
        self._next: float | None = 0.0

    @property
    def is_up(self) -> bool:
        return self.state is TrunkState.UP

    def get_timer(self) -> float | None:
        """When the next probe is due (``None`` while one is in flight)."""
        return None if self._pending is not None else self._next

    def handle_timer(self, now: float) -> Request | None:
        """The next OPTIONS to send, if one is due and none is in flight."""
        if self._pending is not None or self._next is None or now < self._next:
            return None
        self._cseq += 1
        branch = BRANCH_COOKIE + self._new_id()
        via = replace(self.local_via, params=set_param(self.local_via.params, "branch", branch))
        self._pending = Request(
            method="OPTIONS",
            uri=self.target,
            vias=(via,),
            from_=NameAddr(self.local_uri).with_tag(self._new_id()),
            to=NameAddr(self.target),
            call_id=self.call_id,
            cseq=CSeq(self._cseq, "OPTIONS"),
            headers=(("Max-Forwards", MAX_FORWARDS), ("Accept", "application/sdp")),
        )
        self._sent_at = now
        self._next = None
        return self._pending

    def receive_response(self, response: Response, now: float) -> None:
        """A response to our probe; provisional and stale ones are ignored."""
        pending = self._pending
        if pending is None or response.status < 200 or response.cseq.seq != pending.cseq.seq:
            return
        if response.status == 503:
            self._outcome(_Probe.SILENT, now, f"503 {response.reason}")
        else:
            self._outcome(_Probe.ANSWERED, now, f"{response.status} {response.reason}")

    def on_timeout(self, now: float) -> None:
        """The probe's transaction timed out (Timer F)."""
        if self._pending is not None:
            self._outcome(_Probe.SILENT, now, "no response to OPTIONS")

    def _outcome(self, probe: _Probe, now: float, detail: str) -> None:
        self._pending = None
        self._next = max(self._sent_at + self.interval, now)
        old, new = self.state, KEEPALIVE_TABLE.step(log, self.name, self.state, probe)
        if new is not old:
            # The operator's line: the trunk going down is a warning, with why (status, silence).
            log_fn = log.info if new is TrunkState.UP else log.warning
            log_fn("%s %s: %s -> %s (%s)", self.name, self.target, old.name, new.name, detail)
        self.state = new


__all__ = [
    "KEEPALIVE_TABLE",
    "PERMANENT_FAILURE_DELAY",
    "TABLE",
    "KeepAlive",
    "KeepAliveError",
    "RegState",
    "Registration",
    "RegistrationConfig",
    "RegistrationError",
    "TrunkState",
    "state_diagram",
]
