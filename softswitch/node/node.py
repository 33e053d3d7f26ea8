"""One switch node, sans-IO: the SIP endpoint, the trunk registration and the service, joined.

The asyncio shell (:mod:`softswitch.aio.server`) feeds it datagrams and timer ticks with ``now``
and sends what ``datagrams_to_send()`` returns; everything else happens here, testable with a
fake clock. The node owns the policy that is neither SIP nor service: which INVITEs are trigger
calls, how long a trigger may ring, how the trunk is kept registered and alive.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable
from dataclasses import dataclass

from softswitch.config import Config
from softswitch.node.outbound import OutboundCalls
from softswitch.node.testline import TestLines
from softswitch.node.trunk import Trunk
from softswitch.service.trigger import (
    CallbackRequested,
    TriggerOutcome,
    TriggerService,
    normalize_number,
)
from softswitch.sip import endpoint as ep
from softswitch.sip import transaction as txl
from softswitch.sip.message import Address, BadMessage, Request, Response
from softswitch.sip.timers import TimerConfig

log = logging.getLogger("softswitch.node")

#: How long a trigger call may ring before the switch gives up on the caller hanging up
#: (about 4 rings of 5 s; SPEC section 4 later answers it for the location-change menu).
TRIGGER_RING_LIMIT = 20.0


@dataclass(slots=True)
class _Ringing:
    tx: txl.ServerTransaction
    key: str
    deadline: float
    trigger: str
    caller: str
    started_at: float


@dataclass(frozen=True, slots=True)
class TriggerCall:
    """A trigger call that has ended: the record its CDR is made from (SPEC section 7).

    ``callback`` is True when it scheduled a callback (False: absorbed by a pending one).
    Times are the node's ``now`` (the ring began when the INVITE was answered with 180).
    """

    trigger: str
    caller: str
    started_at: float
    ended_at: float
    how: str
    status: int
    callback: bool


class Node:
    """Everything one ``softswitch serve`` process does, without I/O."""

    def __init__(
        self,
        config: Config,
        *,
        token: Callable[[], str] | None = None,
        ring_limit: float = TRIGGER_RING_LIMIT,
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
        self.ring_limit = ring_limit
        self._ringing: dict[int, _Ringing] = {}
        self._ring_heap: list[tuple[float, int]] = []
        self.callbacks: list[CallbackRequested] = []
        #: Every finished trigger call, for the service's trigger-leg CDRs (drained by it).
        self.trigger_calls: list[TriggerCall] = []
        self.keep_trigger_calls = False

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

    def stop(self, now: float) -> None:
        """Begin a graceful stop: unregister from the trunk."""
        if self.trunk is not None:
            self.trunk.stop(now)

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self.endpoint.receive_datagram(data, addr, now)
        self._process(now)

    def receive_message(
        self, msg: Request | Response | BadMessage, addr: Address, now: float
    ) -> None:
        """A message the TCP framer has already cut out and parsed."""
        self.endpoint.receive_message(msg, addr, now)
        self._process(now)

    def handle_timer(self, now: float) -> None:
        self.endpoint.handle_timer(now)
        self.test_lines.handle_timer(now)
        if self.outbound is not None:
            self.outbound.handle_timer(now)
        if self.trunk is not None:
            self.trunk.handle_timer(now)
        self._expire_ringing(now)
        self._process(now)

    def get_timer(self) -> float | None:
        timers = [self.endpoint.get_timer(), self.test_lines.get_timer()]
        if self.outbound is not None:
            timers.append(self.outbound.get_timer())
        if self.trunk is not None:
            timers.append(self.trunk.get_timer())
        while self._ring_heap and self._ring_heap[0][1] not in self._ringing:
            heapq.heappop(self._ring_heap)
        if self._ring_heap:
            timers.append(self._ring_heap[0][0])
        present = [t for t in timers if t is not None]
        return min(present) if present else None

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        return self.endpoint.datagrams_to_send()

    # --- events -------------------------------------------------------------------------------

    def _process(self, now: float) -> None:
        endpoint = self.endpoint
        while (event := endpoint.next_event()) is not None:
            if self.trunk is not None and self.trunk.handle_event(event, now):
                continue
            if self.outbound is not None and self.outbound.handle_event(event, now):
                continue
            if self.test_lines.handle_event(event, now):
                continue
            if isinstance(event, ep.AckReceived):
                self.test_lines.ack(event.request)
            elif isinstance(event, ep.RequestReceived):
                self._request(event, now)
            elif isinstance(event, ep.RequestCancelled):
                self._trigger_over(event.tx, "CANCEL", now)
            elif isinstance(event, ep.TransactionTimedOut):
                log.debug("transaction timed out: %s", event.tx)

    def _request(self, event: ep.RequestReceived, now: float) -> None:
        req = event.request
        tx = event.tx
        if req.to.tag is not None:
            # Inside a dialog: only test-line calls have dialogs (triggers are never answered).
            if not self.test_lines.in_dialog(tx, req, now):
                self.endpoint.respond(tx, 481, now=now)
            return
        if req.method == "INVITE":
            dialled = normalize_number(req.uri.user or req.to.uri.user or "")
            if self.test_lines.wants(dialled):
                self.test_lines.invite(tx, req, event.source, dialled, now)
                return
            caller = req.from_.uri.user or req.from_.uri.host
            key = f"{req.call_id};{req.from_.tag}"
            outcome = self.triggers.trigger_started(key, dialled, caller)
            if outcome is TriggerOutcome.UNKNOWN:
                self.endpoint.respond(tx, 404, now=now)
                return
            self.endpoint.respond(tx, 100, now=now)
            self.endpoint.respond(tx, 180, now=now)
            deadline = now + self.ring_limit
            self._ringing[id(tx)] = _Ringing(tx, key, deadline, dialled, caller, now)
            heapq.heappush(self._ring_heap, (deadline, id(tx)))
        elif req.method == "BYE":
            self.endpoint.respond(tx, 481, now=now)
        else:
            self.endpoint.respond(tx, 405, now=now)

    def _trigger_over(
        self, tx: txl.ServerTransaction, how: str, now: float, status: int = 487
    ) -> None:
        ringing = self._ringing.pop(id(tx), None)
        if ringing is None:
            return
        callback = self.triggers.trigger_ended(ringing.key, how, now)
        if callback is not None:
            self.callbacks.append(callback)
            if len(self.callbacks) > 10000:
                del self.callbacks[:5000]
        if self.keep_trigger_calls:
            self.trigger_calls.append(
                TriggerCall(
                    ringing.trigger,
                    ringing.caller,
                    ringing.started_at,
                    now,
                    how,
                    status,
                    callback is not None,
                )
            )
        self.endpoint.forget(tx)

    def _expire_ringing(self, now: float) -> None:
        heap = self._ring_heap
        while heap and heap[0][0] <= now:
            _, key = heapq.heappop(heap)
            ringing = self._ringing.get(key)
            if ringing is None or ringing.deadline > now:
                continue
            if ringing.tx.can_send_final():
                # The caller kept ringing: release the trigger (480) and treat it as a trigger.
                self.endpoint.respond(ringing.tx, 480, now=now)
            self._trigger_over(ringing.tx, "ring timeout", now, 480)
        self.triggers.expire(now)


def _as_network(text: str) -> str:
    """A bare host address becomes a /32 or /128 network; networks pass through."""
    if "/" in text:
        return text
    return f"{text}/128" if ":" in text else f"{text}/32"
