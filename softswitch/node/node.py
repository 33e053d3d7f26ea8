"""One switch node, sans-IO: the SIP endpoint, the trunk, outbound legs, test lines, the service.

The asyncio shell (:mod:`softswitch.aio.server`) feeds it datagrams and timer ticks with ``now``
and sends what ``datagrams_to_send()`` returns; the service's shell
(:mod:`softswitch.aio.service`) carries out what :meth:`Node.next_event` returns (store
requests, media commands) and feeds the answers back (``store_done``, ``media_opened``,
``media_event``). Everything else happens here, testable with a fake clock, in the manner of
aioquic's ``QuicConnection``: one object, every input takes ``now``, one ``get_timer()``.

The node owns the policy that is neither SIP nor service: which INVITEs are trigger calls, how
long a trigger may ring, that a trigger ends by CANCEL, by a BYE in its early dialog (RFC 3261
section 15: the caller may end an early dialog with BYE) or by ringing too long, and how the
trunk is kept registered and alive. With ``service=True`` it runs the call controller
(:mod:`softswitch.node.calls`) that turns finished triggers into customer calls.
"""

from __future__ import annotations

import heapq
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from media import engine as me
from softswitch.config import Config
from softswitch.node import commands as cmd
from softswitch.node.calls import CallController
from softswitch.node.inbound import InboundCalls, InboundEnded, TriggerAnswered
from softswitch.node.outbound import OutboundCalls
from softswitch.node.sources import RETRY_AFTER, CapLog, SourcePolicy
from softswitch.node.testline import TestLines
from softswitch.node.trunk import Trunk
from softswitch.service.trigger import (
    TriggerEnded,
    TriggerOutcome,
    TriggerService,
    normalize_number,
)
from softswitch.sip import endpoint as ep
from softswitch.sip import transaction as txl
from softswitch.sip.message import Address, BadMessage, HeaderList, Request, Response
from softswitch.sip.parser import parse_message
from softswitch.sip.timers import TimerConfig

log = logging.getLogger("softswitch.node")

#: What :meth:`Node.next_event` returns: the service's commands; without the service, the
#: trigger calls that ended (a signalling-only node's shell may log or drop them).
NodeEvent = cmd.Command | TriggerEnded

#: How long a trigger call may ring before the switch gives up on the caller hanging up
#: (about 4 rings of 5 s; SPEC section 4 later answers it for the location-change menu).
TRIGGER_RING_LIMIT = 20.0
#: Trigger calls of one number that get early media (an RTP socket, the switch's ringback,
#: a session in the controller) at once; more ring plainly (180). A customer rings their own
#: number, maybe twice; a flood of INVITEs at one trigger number must not hold thousands of
#: sockets and sessions (issue 11).
EARLY_MEDIA_PER_TRIGGER = 3
#: The trunk's proxy and ``exempt_from`` are refused by ``max_transactions`` and
#: ``max_dialogs`` only at this many times the cap: what strangers fill up to the cap leaves
#: the carrier's calls room (found by scripts/bench_flood.py --unlimited: a 10,000/s flood
#: with no per-source limiter held 100,000 transactions within 20 s and the trunk's trigger
#: calls got 503). Memory stays bounded: at most this many times the caps in all.
EXEMPT_RESERVE = 2


@dataclass(slots=True)
class _Ringing:
    tx: txl.ServerTransaction
    key: str
    deadline: float
    to_tag: str
    #: The call controller has it: early media, and answered into the menu when due.
    early_media: bool = False
    #: The source host, when it counts toward ``max_early_per_source`` (not exempt).
    counted_source: str | None = None
    #: The trigger number, when it counts toward :data:`EARLY_MEDIA_PER_TRIGGER`.
    number: str | None = None


class Node:
    """Everything one ``softswitch serve`` process does, without I/O."""

    def __init__(
        self,
        config: Config,
        *,
        token: Callable[[], str] | None = None,
        ring_limit: float = TRIGGER_RING_LIMIT,
        service: bool = False,
        node_id: str = "node",
        new_id: Callable[[], str] | None = None,
    ) -> None:
        self.config = config
        host, port = config.listen[0]
        ep_config = ep.EndpointConfig(
            host=config.public_address or host,
            port=port,
            user_agent=config.user_agent,
            allow_from=self._allow_from(config),
            timers=TimerConfig(T1=config.t1, T2=config.t2, T4=config.t4),
        )
        self.endpoint = (
            ep.Endpoint(ep_config) if token is None else ep.Endpoint(ep_config, token=token)
        )
        self.triggers = TriggerService(config.trigger_numbers)
        self.trunk = Trunk(config.trunk, self.endpoint) if config.trunk is not None else None
        self.outbound = (
            OutboundCalls(self.endpoint, config.trunk) if config.trunk is not None else None
        )
        self.test_lines = TestLines(self.endpoint, dict(config.test_numbers), ep_config.timers)
        self.inbound = InboundCalls(self.endpoint, ep_config.timers)
        self.ring_limit = ring_limit
        self._ringing: dict[int, _Ringing] = {}
        self._ringing_by_key: dict[str, _Ringing] = {}
        self._ring_heap: list[tuple[float, int]] = []
        #: The callback service; None for a signalling-only node (triggers ring and end).
        self.calls = (
            CallController(
                config,
                self.outbound,
                self.triggers,
                node_id=node_id,
                new_id=new_id,
                inbound=self.inbound,
            )
            if service
            else None
        )
        self._ended: deque[TriggerEnded] = deque()
        #: The ACL, the per-source limiter and its bans, scanners (checked before parsing).
        self.sources = SourcePolicy(
            config.sip_limits,
            self._allow_from(config),
            (config.trunk.proxy[0],) if config.trunk is not None else (),
        )
        self.caps = CapLog()
        self._early_by_source: dict[str, int] = {}
        self._early_media: dict[str, int] = {}

    @staticmethod
    def _allow_from(config: Config) -> tuple[str, ...]:
        nets = list(config.allow_from)
        if config.trunk is not None:
            nets.append(config.trunk.proxy[0])
        return tuple(_as_network(n) for n in nets)

    # --- sans-IO interface --------------------------------------------------------------------

    def start(self, now: float) -> None:
        if self.trunk is not None:
            self.trunk.start(now)
        if self.calls is not None:
            self.calls.start(now)

    def stop(self, now: float) -> None:
        """Begin a graceful stop: end every customer call (with CDRs), unregister."""
        if self.calls is not None:
            self.calls.stop(now)
        if self.trunk is not None:
            self.trunk.stop(now)

    def next_event(self) -> NodeEvent | None:
        """The next store request or media command for the shell (see :mod:`.commands`).

        A node without the service reports each trigger call that ended instead.
        """
        if self.calls is not None:
            return self.calls.next_command()
        return self._ended.popleft() if self._ended else None

    def sync_clock(self, now: float, wall: float) -> None:
        """Tell the node what wall-clock time (UTC seconds) ``now`` is, for the store."""
        if self.calls is not None:
            self.calls.sync_clock(now, wall)

    def store_done(self, request: cmd.StoreRequest, result: object, now: float) -> None:
        """The answer to a store request (typed as the request's docstring says)."""
        if self.calls is not None:
            self.calls.store_done(request, result, now)
        self._after(now)

    def store_failed(self, request: cmd.StoreRequest, error: str, now: float) -> None:
        if self.calls is not None:
            self.calls.store_failed(request, error, now)
        self._after(now)

    def media_opened(self, leg_id: str, port: int, now: float) -> None:
        if self.calls is not None:
            self.calls.media_opened(leg_id, port, now)
        self._after(now)

    def media_failed(self, leg_id: str, error: str, now: float) -> None:
        if self.calls is not None:
            self.calls.media_failed(leg_id, error, now)
        self._after(now)

    def media_event(self, event: me.Event, now: float) -> None:
        if self.calls is not None:
            self.calls.media_event(event, now)
        self._after(now)

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        host = addr.host
        sources = self.sources
        if not sources.admit_datagram(host, data, now):
            return
        cap = sources.limits.max_transactions
        if (cap and self.endpoint.server_transaction_count >= cap) or (
            not sources.may_invite(host) and data.lstrip(b"\r\n").startswith(b"INVITE ")
        ):
            # Only then is the message parsed here, to be refused before it holds anything.
            msg = parse_message(data, stream=addr.transport != "UDP")
            if not self._refused(msg, addr, now):
                self.endpoint.receive_message(msg, addr, now)
        else:
            self.endpoint.receive_datagram(data, addr, now)
        self._process(now)

    def receive_message(
        self, msg: Request | Response | BadMessage, addr: Address, now: float
    ) -> None:
        """A message the TCP framer has already cut out and parsed."""
        request = msg.request if isinstance(msg, BadMessage) else msg
        if isinstance(request, Request):
            method, agent = request.method, request.header("User-Agent")
        else:
            method, agent = "SIP/2.0", None if request is None else request.header("Server")
        if not self.sources.admit_message(addr.host, method, agent, now):
            return
        if not self._refused(msg, addr, now):
            self.endpoint.receive_message(msg, addr, now)
        self._process(now)

    def held(self, now: float) -> dict[str, int]:
        """What the node holds for its peers now, against the caps (for status and tests)."""
        return {
            "server_transactions": self.endpoint.server_transaction_count,
            "dialogs": self._dialogs(),
            "ringing_triggers": len(self._ringing),
            "banned_sources": self.sources.stats(now).bans,
        }

    def _refused(self, msg: Request | Response | BadMessage, addr: Address, now: float) -> bool:
        """Answer ``msg`` here, holding nothing, if a rule refuses it: an INVITE from outside
        ``invite_from`` (403), a new request over ``max_transactions`` (503; for the trunk
        and ``exempt_from``, over twice that: see :data:`EXEMPT_RESERVE`)."""
        if not isinstance(msg, Request):
            return False
        method = msg.method
        if method == "INVITE" and not self.sources.may_invite(addr.host):
            self.sources.invite_refused(addr.host, now)
            self.endpoint.reject(msg, 403, addr)
            return True
        cap = self.sources.limits.max_transactions
        if cap and self.sources.exempt(addr.host):
            cap *= EXEMPT_RESERVE
        held = self.endpoint.server_transaction_count
        if not cap or held < cap or method == "ACK" or self.endpoint.find_server(msg) is not None:
            return False
        if method == "CANCEL":
            invite = Request(
                "INVITE", msg.uri, msg.vias, msg.from_, msg.to, msg.call_id, msg.cseq, ()
            )
            if self.endpoint.find_server(invite) is not None:
                return False  # it ends a call: it frees more than it holds
        self.caps.refused("max_transactions", held, cap, f"new requests ({method})", now)
        self.endpoint.reject(msg, 503, addr, headers=_RETRY_AFTER)
        return True

    def _dialogs(self) -> int:
        """Inbound calls held: ringing triggers, triggers answered into the menu, test lines."""
        return len(self._ringing) + self.inbound.answered_calls() + self.test_lines.active()

    def _dialogs_full(self, tx: txl.ServerTransaction, host: str, now: float) -> bool:
        """Answer 503 to a new INVITE over ``max_dialogs`` or ``max_early_per_source``."""
        limits = self.sources.limits
        cap = limits.max_dialogs
        if cap and self.sources.exempt(host):
            cap *= EXEMPT_RESERVE
        held = self._dialogs()
        if cap and held >= cap:
            self.caps.refused("max_dialogs", held, cap, "new INVITEs", now)
        else:
            per_source = limits.max_early_per_source
            held = self._early_by_source.get(host, 0)
            if not per_source or held < per_source:
                return False
            self.caps.refused(
                "max_early_per_source", held, per_source, f"new INVITEs from {host}", now
            )
        self.endpoint.respond(tx, 503, headers=_RETRY_AFTER, now=now)
        return True

    def handle_timer(self, now: float) -> None:
        self.endpoint.handle_timer(now)
        self.test_lines.handle_timer(now)
        self.inbound.handle_timer(now)
        if self.outbound is not None:
            self.outbound.handle_timer(now)
        if self.trunk is not None:
            self.trunk.handle_timer(now)
        if self.calls is not None:
            self.calls.handle_timer(now)
        self._expire_ringing(now)
        self._process(now)

    def get_timer(self) -> float | None:
        timers = [
            self.endpoint.get_timer(),
            self.test_lines.get_timer(),
            self.inbound.get_timer(),
        ]
        if self.outbound is not None:
            timers.append(self.outbound.get_timer())
        if self.trunk is not None:
            timers.append(self.trunk.get_timer())
        if self.calls is not None:
            timers.append(self.calls.get_timer())
        while self._ring_heap and self._ring_heap[0][1] not in self._ringing:
            heapq.heappop(self._ring_heap)
        if self._ring_heap:
            timers.append(self._ring_heap[0][0])
        present = [t for t in timers if t is not None]
        return min(present) if present else None

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        return self.endpoint.datagrams_to_send()

    # --- events -------------------------------------------------------------------------------

    def _after(self, now: float) -> None:
        """An input from the service's shell may have produced SIP events: process them."""
        self._process(now)

    def _process(self, now: float) -> None:
        endpoint = self.endpoint
        while True:
            self._legs_to_calls(now)
            event = endpoint.next_event()
            if event is None:
                return
            if self.trunk is not None and self.trunk.handle_event(event, now):
                continue
            if self.outbound is not None and self.outbound.handle_event(event, now):
                continue
            if self.inbound.handle_event(event, now):
                continue
            if self.test_lines.handle_event(event, now):
                continue
            if isinstance(event, ep.AckReceived):
                request = event.request
                if not self.inbound.ack(request) and not (
                    self.outbound is not None and self.outbound.ack(request)
                ):
                    self.test_lines.ack(request)
            elif isinstance(event, ep.RequestReceived):
                self._request(event, now)
            elif isinstance(event, ep.RequestCancelled):
                self._trigger_over(event.tx, "CANCEL", now)
            elif isinstance(event, ep.TransactionTimedOut):
                log.debug("transaction timed out: %s", event.tx)

    def _legs_to_calls(self, now: float) -> None:
        """Hand the controller what its legs did (rang, answered, failed, ended)."""
        calls, outbound = self.calls, self.outbound
        if calls is not None and outbound is not None:
            while (leg_event := outbound.next_event()) is not None:
                calls.leg_event(leg_event, now)
        while (inbound_event := self.inbound.next_event()) is not None:
            if isinstance(inbound_event, TriggerAnswered):
                # Answered into the menu: the trigger no longer rings, and asks no callback.
                ringing = self._ringing_by_key.pop(inbound_event.key, None)
                if ringing is not None:
                    self._ringing.pop(id(ringing.tx), None)
                    self._uncount(ringing)
                    self.triggers.trigger_answered(inbound_event.key)
            elif isinstance(inbound_event, InboundEnded) and calls is not None:
                calls.inbound_ended(inbound_event, now)

    def _request(self, event: ep.RequestReceived, now: float) -> None:
        req = event.request
        tx = event.tx
        if req.to.tag is not None:
            if req.method == "BYE" and self._early_bye(tx, req, now):
                return
            # Inside a dialog: a trigger answered into the menu, or a test line.
            if self.inbound.in_dialog(tx, req, now):
                return
            if not self.test_lines.in_dialog(tx, req, now):
                self.endpoint.respond(tx, 481, now=now)
            return
        if req.method == "INVITE":
            host = event.source.host
            if self._dialogs_full(tx, host, now):
                return
            dialled = normalize_number(req.uri.user or req.to.uri.user or "")
            if self.test_lines.wants(dialled):
                self.test_lines.invite(tx, req, event.source, dialled, now)
                return
            caller = _printable(req.from_.uri.user or req.from_.uri.host)
            key = f"{req.call_id};{req.from_.tag}"
            if key in self._ringing_by_key:
                # RFC 3261 section 8.2.2.2: the Call-ID and From tag of an INVITE still
                # ringing, on another branch, is a merged request. Taken as a second trigger
                # under the same key it overwrote the first's entry, and the first, answered
                # into the menu, then rang for good (issue 11, found by fuzzing).
                self.endpoint.respond(tx, 482, now=now)
                return
            outcome = self.triggers.trigger_started(key, dialled, caller, now)
            if outcome is TriggerOutcome.UNKNOWN:
                self.endpoint.respond(tx, 404, now=now)
                return
            to_tag = self.endpoint.new_tag()
            self.endpoint.respond(tx, 100, now=now)
            calls = self.calls
            early = (
                calls is not None
                and bool(req.body)
                and self._early_media.get(dialled, 0) < EARLY_MEDIA_PER_TRIGGER
                and calls.trigger_ringing(key, dialled, caller, now)
            )
            deadline = now + self.ring_limit
            if early:
                # The controller plays the early media (183) and may answer into the menu.
                self.inbound.offer(key, tx, req, event.source, to_tag)
                answer_after = self.config.trigger_answer_after
                deadline = now + (answer_after if answer_after > 0 else self.ring_limit)
            else:
                self.endpoint.respond(tx, 180, now=now, to_tag=to_tag)
            ringing = _Ringing(tx, key, deadline, to_tag, early)
            if early:
                ringing.number = dialled
                self._early_media[dialled] = self._early_media.get(dialled, 0) + 1
            if not self.sources.exempt(host):
                ringing.counted_source = host
                self._early_by_source[host] = self._early_by_source.get(host, 0) + 1
            self._ringing[id(tx)] = ringing
            self._ringing_by_key[key] = ringing
            heapq.heappush(self._ring_heap, (deadline, id(tx)))
        elif req.method == "BYE":
            self.endpoint.respond(tx, 481, now=now)
        else:
            self.endpoint.respond(tx, 405, now=now)

    def _early_bye(self, tx: txl.ServerTransaction, req: Request, now: float) -> bool:
        """A BYE in the early dialog of a ringing trigger: the caller hung up (RFC 3261 15).

        The BYE gets 200 and the INVITE 487 (section 15.1.2); the trigger ends as by CANCEL.
        """
        ringing = self._ringing_by_key.get(f"{req.call_id};{req.from_.tag}")
        if ringing is None or ringing.to_tag != req.to.tag:
            return False
        self.endpoint.respond(tx, 200, now=now)
        if ringing.tx.can_send_final():
            self.endpoint.respond(ringing.tx, 487, now=now)
        self._trigger_over(ringing.tx, "BYE", now)
        return True

    def _trigger_over(
        self, tx: txl.ServerTransaction, how: str, now: float, status: int = 487
    ) -> None:
        ringing = self._ringing.pop(id(tx), None)
        if ringing is None:
            return
        self._ringing_by_key.pop(ringing.key, None)
        self._uncount(ringing)
        if ringing.early_media:
            self.inbound.forget(ringing.key)
        ended = self.triggers.trigger_ended(ringing.key, how, now, status)
        if ended is not None:
            if self.calls is not None:
                self.calls.trigger_ended(ended, now)
            else:
                self._ended.append(ended)
        self.endpoint.forget(tx)

    def _uncount(self, ringing: _Ringing) -> None:
        for key, counts in (
            (ringing.counted_source, self._early_by_source),
            (ringing.number, self._early_media),
        ):
            if key is not None:
                left = counts.pop(key) - 1
                if left:
                    counts[key] = left

    def _expire_ringing(self, now: float) -> None:
        heap = self._ring_heap
        while heap and heap[0][0] <= now:
            _, key = heapq.heappop(heap)
            ringing = self._ringing.get(key)
            if ringing is None or ringing.deadline > now:
                continue
            calls = self.calls
            if (
                ringing.early_media
                and calls is not None
                and self.config.trigger_answer_after > 0
                and calls.trigger_due(ringing.key, now)
            ):
                continue  # answered into the menu (TriggerAnswered takes it off the list)
            if ringing.tx.can_send_final():
                # The caller kept ringing: release the trigger (480) and treat it as a trigger.
                self.endpoint.respond(ringing.tx, 480, now=now)
            self._trigger_over(ringing.tx, "ring timeout", now, 480)


_RETRY_AFTER: HeaderList = (("Retry-After", str(RETRY_AFTER)),)


def _printable(text: str) -> str:
    """``text`` as valid UTF-8: bytes the parser kept as surrogates (not UTF-8) become \\xNN
    escapes. A caller "81\\x91..." made its trigger CDR unwritable (UnicodeEncodeError in the
    store) and took the CDRs written with it down too (issue 11, found by fuzzing)."""
    if text.isascii():
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _as_network(text: str) -> str:
    """A bare host address becomes a /32 or /128 network; networks pass through."""
    if "/" in text:
        return text
    return f"{text}/128" if ":" in text else f"{text}/32"
