"""``/metrics``: what a node is doing, for Prometheus (prometheus-client, one registry per node).

Counters and histograms are fed where the events pass: the web and mail triggers count
themselves; the service shell (:mod:`softswitch.aio.service`) reports every node command,
store answer and media event to :meth:`Metrics.command`, :meth:`Metrics.store_latency` and
:meth:`Metrics.media_event`, from which phone triggers, callback outcomes and retries, the
trigger-to-callback latency and DTMF digits by method are counted. Gauges that describe the
present (live calls and legs, trunk registration, RTP loss and jitter, late media ticks, the
loop's asyncio tasks) are read from the node and the media engine at scrape time by
:class:`_LiveCollector`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from media import engine as me
from softswitch.aio.mediapool import WorkerPool
from softswitch.logs import security_counts
from softswitch.node import commands as cmd
from softswitch.store.models import LegKind

if TYPE_CHECKING:
    from softswitch.aio.server import Server

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Trigger (CANCEL, web form, e-mail) to the callback INVITE: the SPEC's "well under a second".
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
STORE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
#: Sessions whose trigger time is remembered for the latency (bounded: a lost CDR must not
#: make this grow for ever).
MAX_TRACKED = 10_000


class Metrics:
    """The node's metrics; :meth:`render` is the ``/metrics`` body."""

    def __init__(self, server: Server | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.triggers = Counter(
            "softswitch_triggers",
            "Triggers received, by channel (phone, web, mail) and outcome",
            ["channel", "outcome"],
            registry=r,
        )
        self.callback_attempts = Counter(
            "softswitch_callback_attempts",
            "Callback attempts ended, by cause (answered, busy, no_answer ...)",
            ["cause"],
            registry=r,
        )
        self.callback_retries = Counter(
            "softswitch_callback_retries",
            "Callback attempts that were retries, by the cause of the attempt before",
            ["cause"],
            registry=r,
        )
        self.trigger_latency = Histogram(
            "softswitch_trigger_to_callback_seconds",
            "From the trigger to the first callback INVITE",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.dtmf = Counter(
            "softswitch_dtmf_digits",
            "Digits received, by method (rfc4733, inband)",
            ["method"],
            registry=r,
        )
        self.store_write = Histogram(
            "softswitch_store_request_seconds",
            "Store request latency, by request",
            ["request"],
            buckets=STORE_BUCKETS,
            registry=r,
        )
        self.http = Counter(
            "softswitch_http_requests",
            "HTTP requests to the web page and the admin API, by listener and status",
            ["listener", "status"],
            registry=r,
        )
        self._trigger_at: dict[str, float] = {}
        self._last_cause: dict[str, str] = {}
        if server is not None:
            r.register(_LiveCollector(server))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # --- fed by the service shell ---------------------------------------------------------------

    def command(self, command: object) -> None:
        """A node command is being carried out (the shell calls this for each one)."""
        if isinstance(command, cmd.EnqueueCallback) and command.sid:
            if len(self._trigger_at) >= MAX_TRACKED:
                self._trigger_at.pop(next(iter(self._trigger_at)))
            self._trigger_at.setdefault(command.sid, command.at)
        elif isinstance(command, cmd.WriteCdr):
            self._cdr(command)

    def _cdr(self, command: cmd.WriteCdr) -> None:
        cdr = command.cdr
        if cdr.leg is LegKind.TRIGGER:
            absorbed = "already under way" in (cdr.cause_text or "")
            self.triggers.labels("phone", "absorbed" if absorbed else "scheduled").inc()
            return
        if cdr.leg is not LegKind.CALLBACK:
            return
        sid = cdr.call_uuid
        cause = "answered" if cdr.answer_at is not None else _cause(cdr.cause_text)
        self.callback_attempts.labels(cause).inc()
        before = self._last_cause.pop(sid, None)
        if before is not None:
            self.callback_retries.labels(before).inc()
        else:
            at = self._trigger_at.pop(sid, None)
            if at is not None and cdr.setup_at is not None:
                self.trigger_latency.observe(max(0.0, cdr.setup_at - at))
        if cause != "answered" and len(self._last_cause) < MAX_TRACKED:
            self._last_cause[sid] = cause

    def store_latency(self, request: cmd.StoreRequest, seconds: float) -> None:
        self.store_write.labels(type(request).__name__).observe(seconds)

    def media_event(self, event: me.Event) -> None:
        if isinstance(event, me.DigitReceived):
            self.dtmf.labels(event.source).inc()


def _cause(text: str | None) -> str:
    """A CDR's cause text -> a short label (``busy``, ``no_answer`` ...: the first word)."""
    if not text:
        return "unknown"
    word = text.split()[0].strip(",.;:")
    return word if word.replace("_", "").isalnum() else "other"


class _LiveCollector(Collector):
    """Gauges read from the node and the media engine when Prometheus scrapes."""

    def __init__(self, server: Server) -> None:
        self.server = server

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        server = self.server
        now = server.loop.time()
        calls = server.node.calls
        live = calls.calls(now) if calls is not None else []
        yield _gauge("softswitch_active_calls", "Customer calls in progress", len(live))
        legs = GaugeMetricFamily(
            "softswitch_active_legs", "Legs of live calls, by leg", labels=["leg"]
        )
        by_leg: dict[str, int] = {}
        for call in live:
            for leg in call.legs:
                if leg.state != "ended":
                    by_leg[leg.name] = by_leg.get(leg.name, 0) + 1
        for name in ("callback", "destination", "operator"):
            legs.add_metric([name], by_leg.get(name, 0))
        yield legs
        trunk = server.node.trunk
        yield _gauge(
            "softswitch_trunk_registered",
            "1 when registered to the trunk (or IP-authenticated), 0 otherwise, -1: no trunk",
            -1 if trunk is None else int(trunk.registered or trunk.registration is None),
        )
        yield _gauge("softswitch_draining", "1 while SIGTERM's drain runs", int(server.draining))
        yield _gauge(
            "softswitch_asyncio_tasks",
            "asyncio tasks not yet done in the node's loop (a leak shows as steady growth)",
            len(asyncio.all_tasks(server.loop)),
        )
        collector = server.collector
        collections = CounterMetricFamily(
            "softswitch_gc_collections",
            "Cyclic garbage collections in the node's process, by kind (young: every 0.1 s; "
            "full: every 10 min, in a quiet second)",
            labels=["kind"],
        )
        paused = CounterMetricFamily(
            "softswitch_gc_pause_seconds",
            "Time the node's loop stood still in garbage collections, by kind",
            labels=["kind"],
        )
        longest = GaugeMetricFamily(
            "softswitch_gc_longest_pause_seconds",
            "The longest garbage-collection pause since start, by kind",
            labels=["kind"],
        )
        for kind, pauses in (("young", collector.young), ("full", collector.full)):
            collections.add_metric([kind], pauses.count)
            paused.add_metric([kind], pauses.seconds)
            longest.add_metric([kind], pauses.longest)
        yield collections
        yield paused
        yield longest
        yield CounterMetricFamily(
            "softswitch_gc_full_deferred",
            "Seconds a due full garbage collection waited for a quiet second (load)",
            value=collector.deferred,
        )
        service = server.service
        if service is not None:
            media = service.media.stats()
            yield _gauge(
                "softswitch_rtp_packets_lost",
                "RTP packets lost on the live legs (RFC 3550)",
                media.lost,
            )
            yield _gauge(
                "softswitch_rtp_jitter_seconds",
                "Largest interarrival jitter of live legs",
                media.jitter,
            )
            ticks = CounterMetricFamily(
                "softswitch_media_late_ticks",
                "20 ms media ticks that ran late (summed over media workers)",
                value=media.late_ticks,
            )
            yield ticks
            yield CounterMetricFamily(
                "softswitch_media_skipped_ticks",
                "20 ms media ticks skipped (the loop was blocked; summed over media workers)",
                value=media.skipped_ticks,
            )
            yield CounterMetricFamily(
                "softswitch_rtp_foreign_dropped",
                "RTP/RTCP packets dropped for coming from anywhere but the leg's latched source "
                "(those the media engine saw; once latched, the kernel drops the rest unseen)",
                value=media.foreign,
            )
            yield CounterMetricFamily(
                "softswitch_rtp_malformed",
                "RTP packets dropped because they did not parse",
                value=media.malformed,
            )
            pool = service.media
            if isinstance(pool, WorkerPool):
                yield _gauge(
                    "softswitch_media_workers", "Media worker processes", len(pool.workers)
                )
                yield CounterMetricFamily(
                    "softswitch_media_worker_restarts",
                    "Media workers that died and were started again",
                    value=pool.restarts,
                )
                carried = GaugeMetricFamily(
                    "softswitch_media_worker_legs",
                    "Legs carried, by media worker",
                    labels=["worker"],
                )
                for index, _, count, _ in pool.per_worker():
                    carried.add_metric([str(index)], count)
                yield carried
        events = CounterMetricFamily(
            "softswitch_security_events", "Security events, by kind", labels=["kind"]
        )
        for kind, count in security_counts().items():
            events.add_metric([kind], count)
        yield events


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)
