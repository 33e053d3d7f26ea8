"""Operations around a running node: the web and e-mail triggers, the admin API, metrics.

:class:`Operations` is started and stopped by :class:`softswitch.aio.server.Server` (hooks in
``startup`` and ``shutdown``). It owns what the listeners share, in one place:

* the trigger limits (:class:`~softswitch.service.ratelimit.TriggerLimits`): per source (the
  client's address; for mail also the sender) and per trigger number, for the web page and
  e-mail alike;
* the one path from a web or mail trigger into the node: :meth:`request_callback` checks the
  limits, calls ``CallController.callback_requested`` (the phone trigger's scheduling and
  de-duplication) and then ``server.transmit()``;
* the metrics registry (:class:`~softswitch.web.metrics.Metrics`), which the service shell
  also feeds;
* the listeners: ``[web]`` (aiohttp, :mod:`softswitch.web.page`), ``[mail]`` (aiosmtpd,
  :mod:`softswitch.mail`) and ``[admin]`` (aiohttp, :mod:`softswitch.web.admin`); each binds
  at start-up or the node does not start.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import Info

from softswitch import __version__
from softswitch.aio.mediapool import WorkerPool
from softswitch.config import Config
from softswitch.logs import security_event
from softswitch.node.calls import CallInfo
from softswitch.node.sources import SCANNER
from softswitch.service import dialplan
from softswitch.service.callbacks import STALE_AFTER
from softswitch.service.ratelimit import TriggerLimits
from softswitch.store.models import PendingCallback
from softswitch.web.metrics import Metrics

if TYPE_CHECKING:
    from softswitch.aio.server import Server
    from softswitch.mail import MailTrigger

__all__ = ["SCANNER", "Operations"]

log = logging.getLogger("softswitch.ops")

#: Nodes that stopped or died longer ago than this are history, not the cluster.
CLUSTER_SHOWS_GONE = 3600.0


class Operations:
    """The node's web, mail and admin listeners and what they share; see the module docstring."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.config: Config = server.config
        # The node's own limits when it runs the service, so phone triggers count with these.
        calls = server.node.calls
        self.limits = calls.limits if calls is not None else TriggerLimits(self.config.limits)
        self.metrics = Metrics(server)
        # Which node this is, for joining its series with its CDRs and logs (issue 12):
        # softswitch_node_info{node_id="host:pid:token",version=...} 1.
        Info(
            "softswitch_node",
            "This node's id (as in CDRs and logs)",
            registry=self.metrics.registry,
        ).info({"node_id": calls.node_id if calls is not None else "", "version": __version__})
        self.started_at = time.time()
        self._runners: list[web.AppRunner] = []
        self._smtp: list[Any] = []
        self._mail: MailTrigger | None = None
        #: Where each listener is bound: name -> (host, port) (tests use port 0).
        self.bound: dict[str, tuple[str, int]] = {}

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind every configured listener (an error leaves nothing bound and stops start-up)."""
        config = self.config
        try:
            if config.admin.token is not None:
                from softswitch.web.admin import AdminApi

                app = AdminApi(config.admin.token, self).app()
                self.bound["admin"] = await self._serve_http(app, config.admin.listen)
            else:
                log.info("admin API off: no [admin] token (or SOFTSWITCH_ADMIN_TOKEN)")
            if config.web is not None:
                from softswitch.web.page import TriggerPage

                page = TriggerPage(config.web, self).app()
                self.bound["web"] = await self._serve_http(page, config.web.listen)
            if config.mail is not None:
                from softswitch.mail import MailTrigger

                answer = config.web.answer_time if config.web is not None else 0.5
                mail = self._mail = MailTrigger(config.mail, self, answer_time=answer)
                host, port = config.mail.listen
                smtp = await self.server.loop.create_server(mail.protocol, host=host, port=port)
                self._smtp.append(smtp)
                sock = smtp.sockets[0].getsockname()
                self.bound["mail"] = (sock[0], sock[1])
        except BaseException:
            await self.stop()
            raise
        for name, (host, port) in self.bound.items():
            log.info("%s listening on %s:%d", name, host, port)

    async def _serve_http(self, app: web.Application, listen: tuple[str, int]) -> tuple[str, int]:
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, listen[0], listen[1], reuse_address=True)
        await site.start()
        host, port = runner.addresses[-1][:2]
        return (str(host), int(port))

    async def stop(self) -> None:
        for smtp in self._smtp:
            smtp.close()
            await smtp.wait_closed()
        self._smtp.clear()
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()

    def reconfigure(self, config: Config) -> None:
        """SIGHUP: the limits and the mail senders change at once; listeners need a restart."""
        self.config = config
        self.limits.reconfigure(config.limits)
        if self._mail is not None and config.mail is not None:
            self._mail.config = config.mail

    # --- the triggers' one path into the node ---------------------------------------------------

    @property
    def draining(self) -> bool:
        return self.server.draining

    def banned(self, source: str) -> bool:
        return self.limits.banned(source, self.server.loop.time())

    def check_destination(self, digits: str) -> str:
        """The E.164 digits of a destination a web trigger may connect, or DestinationRefused."""
        trunk = self.server.config.trunk
        prefix = trunk.international_prefix if trunk is not None else "+"
        blocked = self.server.config.blocked_prefixes
        return dialplan.normalize_destination(digits, prefix, blocked_prefixes=blocked).e164

    def request_callback(
        self,
        channel: str,
        source: str,
        trigger: str,
        destination: str | None,
        *,
        keys: Sequence[str] = (),
    ) -> str:
        """A trigger from the web page or a mail: ``scheduled``, ``absorbed``, ``unknown``,
        ``refused`` (as ``callback_requested`` says) or ``limited`` (over a limit).

        ``keys`` are what the per-source limit counts, each under it (a mail: its client's
        address and ``mail:<sender>``); by default the client's address ``source`` alone."""
        server = self.server
        now = server.loop.time()
        decision = self.limits.check(tuple(keys) or source, trigger, now)
        if not decision.allowed:
            kind = "banned" if decision.reason == "banned" else "rate_limited"
            security_event(
                kind,
                source,
                channel=channel,
                limit=decision.reason,
                trigger=trigger,
                retry_after=f"{decision.retry_after:.0f}",
            )
            self.metrics.triggers.labels(channel, "limited").inc()
            return "limited"
        calls = server.node.calls
        if calls is None:
            outcome = "refused"
        else:
            outcome = calls.callback_requested(
                trigger, now, source=f"{channel} {source}", destination=destination
            )
            server.transmit()
        self.metrics.triggers.labels(channel, outcome).inc()
        if outcome == "unknown":
            security_event(f"{channel}_rejected", source, reason="unknown_number", trigger=trigger)
        else:
            log.info(
                "%s trigger %s from %s%s: %s",
                channel,
                trigger,
                source,
                f" (destination {destination})" if destination else "",
                outcome,
            )
        return outcome

    def count_http(self, listener: str, status: int) -> None:
        self.metrics.http.labels(listener, str(status)).inc()

    # --- what the admin API reads -----------------------------------------------------------------

    def live_calls(self) -> list[CallInfo]:
        calls = self.server.node.calls
        return [] if calls is None else calls.calls(self.server.loop.time())

    def hang_up(self, sid: str) -> bool:
        calls = self.server.node.calls
        if calls is None:
            return False
        done = calls.hang_up(sid, self.server.loop.time())
        self.server.transmit()
        return done

    async def pending_callbacks(self) -> tuple[PendingCallback, ...]:
        service = self.server.service
        if service is None:
            return ()
        return await service.queue.list()

    async def status(self) -> dict[str, Any]:
        server = self.server
        trunk = server.node.trunk
        calls = server.node.calls
        pending = [p for p in await self.pending_callbacks() if p.state.value == "pending"]
        if trunk is None:
            trunk_state: dict[str, Any] = {"configured": False}
        else:
            registration = trunk.registration
            trunk_state = {
                "configured": True,
                "proxy": "{}:{}".format(*trunk.config.proxy),
                "ip_auth": registration is None,
                "registered": trunk.registered or registration is None,
                "state": "ip_auth" if registration is None else registration.state.name.lower(),
            }
        live = self.live_calls()
        return {
            "node": calls.node_id if calls is not None else f"{os.uname().nodename}",
            "server_time": time.time(),
            "cluster": await self.cluster(),
            "version": __version__,
            "pid": os.getpid(),
            "started_at": self.started_at,
            "uptime": time.time() - self.started_at,
            "draining": server.draining,
            "trunk": trunk_state,
            "calls": len(live),
            "legs": sum(1 for c in live for leg in c.legs if leg.state != "ended"),
            "pending_callbacks": len(pending),
            "trigger_numbers": len(server.node.triggers.numbers),
            "media": self.media_status(),
            # What peers make the node hold, against the [sip] caps (README "Reliability").
            "sip": {**server.node.held(server.loop.time()), "tcp_connections": len(server.tcp)},
            "listeners": {
                "sip": [f"{t}:{h}:{p}" for t, h, p in server.bound],
                **{name: f"{h}:{p}" for name, (h, p) in self.bound.items()},
            },
        }

    def media_status(self) -> dict[str, Any]:
        """Where the media runs (``workers``: 0 in the node's process) and what it carries:
        legs and tick counters summed, each worker's pid, legs assigned and counters."""
        service = self.server.service
        if service is None:
            return {"workers": 0, "legs": 0}
        media = service.media
        total = media.stats()
        out: dict[str, Any] = {
            "workers": 0,
            "legs": len(media.transports),
            "late_ticks": total.late_ticks,
            "skipped_ticks": total.skipped_ticks,
        }
        if isinstance(media, WorkerPool):
            out["workers"] = len(media.workers)
            out["restarts"] = media.restarts
            out["per_worker"] = [
                {
                    "index": index,
                    "pid": pid,
                    "legs": legs,
                    "late_ticks": stats.late_ticks,
                    "skipped_ticks": stats.skipped_ticks,
                }
                for index, pid, legs, stats in media.per_worker()
            ]
        return out

    async def cluster(self) -> list[dict[str, Any]]:
        """The nodes sharing this store (issue 12): each one's id, SIP address, version, start,
        last heartbeat, state (``up``, ``dead``: silent for ``STALE_AFTER``, ``stopped``) and
        the live calls it has written down; nodes gone for over an hour are left out."""
        service = self.server.service
        if service is None:
            return []
        now = time.time()
        live = Counter(c.node_id for c in await service.live_calls.list())
        this = service.node_id
        out = []
        for node in await service.nodes.list():
            state = node.state(now, STALE_AFTER)
            if state != "up" and node.heartbeat_at < now - CLUSTER_SHOWS_GONE:
                continue
            out.append(
                {
                    "id": node.id,
                    "this": node.id == this,
                    "address": node.address,
                    "version": node.version,
                    "started_at": node.started_at,
                    "heartbeat_at": node.heartbeat_at,
                    "stopped_at": node.stopped_at,
                    "state": state,
                    "live_calls": live.get(node.id, 0),
                }
            )
        return out
