"""The admin API and ``/metrics``, on their own listener (``[admin]``, loopback by default).

Every route but ``/health`` needs ``Authorization: Bearer <[admin] token>``; a wrong or
missing token is a security event. JSON in, JSON out:

=================================  ==========================================================
``GET /health``                    ``{"status": "ok" | "draining"}`` (no token: for probes)
``GET /api/status``                node, version, uptime, trunk registration, live calls,
                                   pending callbacks, trigger numbers, draining, and the
                                   cluster: every node on the store, its state, heartbeat
``GET /api/calls``                 live calls: legs and their states, durations, key source
``POST /api/calls/{id}/hangup``    end a live call (its id, or the first 8 characters)
``GET /api/callbacks``             callbacks waiting in the store's queue
``GET /api/security-events``       the last security events (``?limit=``, newest first)
``GET /metrics``                   Prometheus text format
=================================  ==========================================================
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from aiohttp import web

from softswitch.logs import recent_security_events, security_event
from softswitch.node.calls import CallInfo
from softswitch.store.models import CallbackState
from softswitch.web.metrics import CONTENT_TYPE

if TYPE_CHECKING:
    from softswitch.aio.ops import Operations

__all__ = ["AdminApi"]


class AdminApi:
    """The admin listener's routes; ``ops`` reaches the node, the store and the metrics."""

    def __init__(self, token: str, ops: Operations) -> None:
        self.token = token
        self.ops = ops

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth], client_max_size=64 * 1024)
        app.router.add_get("/health", self.health)
        app.router.add_get("/api/status", self.status)
        app.router.add_get("/api/calls", self.calls)
        app.router.add_post("/api/calls/{sid}/hangup", self.hang_up)
        app.router.add_get("/api/callbacks", self.callbacks)
        app.router.add_get("/api/security-events", self.security_events)
        app.router.add_get("/metrics", self.metrics)
        return app

    @web.middleware
    async def _auth(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        if request.path != "/health":
            given = request.headers.get("Authorization", "")
            expected = f"Bearer {self.token}"
            if not hmac.compare_digest(given.encode(), expected.encode()):
                security_event(
                    "admin_unauthorized",
                    request.remote,
                    path=request.path[:80],
                    reason="no token" if not given else "wrong token",
                )
                self.ops.count_http("admin", 401)
                return web.json_response(
                    {"error": "unauthorized"},
                    status=401,
                    headers={"WWW-Authenticate": 'Bearer realm="softswitch"'},
                )
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            self.ops.count_http("admin", exc.status)
            raise
        self.ops.count_http("admin", response.status)
        return response

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "draining" if self.ops.draining else "ok"})

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response(await self.ops.status())

    async def calls(self, request: web.Request) -> web.Response:
        return web.json_response({"calls": [_call(c) for c in self.ops.live_calls()]})

    async def hang_up(self, request: web.Request) -> web.Response:
        sid = request.match_info["sid"]
        if not self.ops.hang_up(sid):
            return web.json_response({"error": f"no live call {sid}"}, status=404)
        return web.json_response({"hung_up": sid})

    async def callbacks(self, request: web.Request) -> web.Response:
        rows = await self.ops.pending_callbacks()
        return web.json_response(
            {
                "callbacks": [
                    {
                        "id": p.id,
                        "account_id": p.account_id,
                        "trigger": p.trigger,
                        "requested_at": p.requested_at,
                        "due_at": p.due_at,
                        "attempts": p.attempts,
                        "state": p.state.value,
                        "claimed_by": p.claimed_by,
                        "last_error": p.last_error,
                    }
                    for p in rows
                    if p.state in (CallbackState.PENDING, CallbackState.CLAIMED)
                ]
            }
        )

    async def security_events(self, request: web.Request) -> web.Response:
        try:
            limit = max(1, min(200, int(request.query.get("limit", "50"))))
        except ValueError:
            return web.json_response({"error": "limit: expected a number"}, status=400)
        events = [e.as_dict() for e in recent_security_events(limit)]
        return web.json_response({"events": events})

    async def metrics(self, request: web.Request) -> web.Response:
        body = self.ops.metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def _call(info: CallInfo) -> dict[str, Any]:
    data = asdict(info)
    data["legs"] = [asdict(leg) for leg in info.legs]
    return data
