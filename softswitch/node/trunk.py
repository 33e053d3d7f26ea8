"""The carrier trunk: registration and keep-alive wired to the endpoint's transactions.

:class:`softswitch.sip.registration.Registration` and ``KeepAlive`` produce requests and take
responses; this glue sends their requests in client transactions to the trunk proxy, routes the
answers (and Timer F timeouts) back to whichever object owns the transaction, and keeps the
timers. Sans-IO like the rest: the node calls it with ``now``.
"""

from __future__ import annotations

import logging

from softswitch.config import TrunkConfig
from softswitch.sip import endpoint as ep
from softswitch.sip import registration as reg
from softswitch.sip.message import URI, Address, Request
from softswitch.sip.uri import parse_uri

log = logging.getLogger("softswitch.trunk")


class Trunk:
    """Keeps one trunk registered (unless IP-authenticated) and probed with OPTIONS."""

    def __init__(self, config: TrunkConfig, endpoint: ep.Endpoint) -> None:
        self.config = config
        self.endpoint = endpoint
        transport = config.transport.upper()
        self.proxy = Address(config.proxy[0], config.proxy[1], transport)
        local = endpoint.config
        self._via = endpoint.local_via(transport)
        contact = URI(user=config.username or "softswitch", host=local.host, port=local.port)
        self._owners: dict[int, str] = {}
        self.registration: reg.Registration | None = None
        if config.registrar is not None and not config.ip_auth:
            registrar = parse_uri(config.registrar)
            aor = URI(
                scheme=registrar.scheme,
                user=config.username,
                host=registrar.host,
                port=registrar.port,
            )
            self.registration = reg.Registration(
                reg.RegistrationConfig(
                    registrar=registrar,
                    aor=aor,
                    contact=contact,
                    proxy=self.proxy,
                    local_via=self._via,
                    username=config.username,
                    password=config.password,
                    expires=config.expires,
                ),
                new_id=endpoint.new_tag,
            )
        target = URI(host=self.proxy.host, port=self.proxy.port)
        # keepalive_interval = 0 turns the OPTIONS probe off (a registering trunk's refreshes
        # already show whether it is alive).
        self.keepalive: reg.KeepAlive | None = None
        if config.keepalive_interval > 0:
            self.keepalive = reg.KeepAlive(
                target,
                contact,
                self._via,
                interval=config.keepalive_interval,
                new_id=endpoint.new_tag,
            )
        self._stopping = False

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self, now: float) -> None:
        if self.registration is not None:
            self._send(self.registration.start(now), "register", now)
        else:
            log.info(
                "trunk %s is IP-authenticated: no REGISTER, OPTIONS every %.0f s",
                self.proxy,
                self.config.keepalive_interval,
            )

    def stop(self, now: float) -> None:
        self._stopping = True
        if self.registration is not None:
            request = self.registration.stop(now)
            if request is not None:
                self._send(request, "register", now)

    def stopped(self) -> bool:
        """True once a stop has finished unregistering (or there was nothing to undo)."""
        if self.registration is None:
            return True
        return self.registration.state in (reg.RegState.UNREGISTERED, reg.RegState.BACKING_OFF)

    @property
    def registered(self) -> bool:
        return self.registration is not None and self.registration.state is reg.RegState.REGISTERED

    # --- timers and events --------------------------------------------------------------------

    def get_timer(self) -> float | None:
        timers = [self.keepalive.get_timer() if self.keepalive is not None else None]
        if self.registration is not None:
            timers.append(self.registration.get_timer())
        present = [t for t in timers if t is not None]
        return min(present) if present else None

    def handle_timer(self, now: float) -> None:
        if self.registration is not None and not self._stopping:
            request = self.registration.handle_timer(now)
            if request is not None:
                self._send(request, "register", now)
        if not self._stopping and self.keepalive is not None:
            probe = self.keepalive.handle_timer(now)
            if probe is not None:
                self._send(probe, "keepalive", now)

    def handle_event(self, event: ep.EndpointEvent, now: float) -> bool:
        """Take the events that belong to the trunk's transactions; True if it was ours."""
        if isinstance(event, ep.ResponseReceived):
            owner = self._owners.get(id(event.tx))
            if owner is None:
                return False
            if event.response.status >= 200:
                self._owners.pop(id(event.tx), None)
            if owner == "register" and self.registration is not None:
                source = event.source or self.proxy
                request = self.registration.receive_response(event.response, source, now)
                if request is not None:
                    self._send(request, "register", now)
            elif owner == "keepalive" and self.keepalive is not None:
                before = self.keepalive.state
                self.keepalive.receive_response(event.response, now)
                if self.keepalive.is_up and before is not reg.TrunkState.UP:
                    self._network_up(now, came_back=before is reg.TrunkState.DOWN)
            return True
        if isinstance(event, ep.TransactionTimedOut):
            owner = self._owners.pop(id(event.tx), None)
            if owner is None:
                return False
            if owner == "register" and self.registration is not None:
                self.registration.on_timeout(now, event.tx.request)
            elif owner == "keepalive" and self.keepalive is not None:
                self.keepalive.on_timeout(now)
            return True
        return False

    def _network_up(self, now: float, *, came_back: bool = False) -> None:
        """The trunk answers again: re-register at once instead of waiting out a back-off.

        ``came_back``: the probes had gone unanswered (the trunk was DOWN). A carrier that
        restarted may have forgotten our binding (registrars that keep them in memory do),
        so a binding we still count as registered is renewed at once too, not at its refresh.
        """
        registration = self.registration
        if registration is None or self._stopping:
            return
        state = registration.state
        if state is reg.RegState.BACKING_OFF or (came_back and state is reg.RegState.REGISTERED):
            request = registration.network_up(now)
            if request is not None:
                self._send(request, "register", now)

    def _send(self, request: Request, owner: str, now: float) -> None:
        tx = self.endpoint.send_request(request, self.proxy, now)
        self._owners[id(tx)] = owner
