"""Long runs, for real: whole callback calls leave nothing behind in ``softswitch serve``'s parts.

A node as ``softswitch serve`` runs it (:class:`~softswitch.aio.server.Server` with the
service, a SQLite store, the media engine in process: ``workers = 0`` runs the same
:func:`media.worker.apply` the workers do) and the demo's emulated carrier
(:mod:`softswitch.demo.carrier`) on loopback: :data:`AT_ONCE` customers ring their trigger
numbers at once and hang up, are called back, hear the dial prompt, dial a destination as RFC
4733 events, talk to it and end with ``**``. Three batches; between the first and the third,
no container reachable from the server (the node, the service shell, the media engine, the
metrics: :func:`tests.census.census`) may have grown by :data:`AT_ONCE` entries or more
(one entry left per call grows by ``2 * AT_ONCE``). Short SIP timers (T1 = 20 ms) let every
transaction of a batch end before the next.

The controller's own structures are checked over many more calls on a fake clock
(tests/node/test_memory.py); the ones whose dead entries are dropped in amortized passes are
left out here, where one batch is too small to tell a pass from a leak.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from softswitch.aio.server import Server
from softswitch.config import Config, LimitsConfig, TrunkConfig
from softswitch.demo.carrier import (
    CarrierConfig,
    CustomerPhone,
    CustomerScript,
    DestinationPhone,
    EmulatedCarrier,
)
from softswitch.demo.run import free_port
from softswitch.sip.message import Address
from softswitch.store import Store
from softswitch.store.models import LegKind, Location, Rate
from tests.census import census, clear_caches, grown

AT_ONCE = 6
#: Swept or compacted in amortized passes (checked in tests/node/test_memory.py), or a time
#: window: the outbound cap's attempts of the last minute.
AMORTIZED = ("_heap", "_by_tx", "_placed", "_fixed_vias")


def trigger_number(i: int) -> str:
    return f"8150000000{i:02d}"


def customer(i: int) -> str:
    return f"8190123456{i:02d}"


def destination(n: int) -> str:
    return f"4412345{n:05d}"


async def provision(db_url: str) -> None:
    store = await Store.open(db_url)
    try:
        for i in range(AT_ONCE):
            await store.accounts.add(
                f"Customer {i}",
                triggers=[trigger_number(i)],
                location=Location(customer(i)),
                credit_limit=100_000,
            )
        await store.rates.set(Rate("44", "United Kingdom", 20, 6, 30))
    finally:
        await store.close()


async def batch(server: Server, carrier: EmulatedCarrier, number: int) -> None:
    """:data:`AT_ONCE` whole calls at once, each to a destination of its own."""
    for old in list(carrier.phones):
        carrier.phones.remove(old)
        carrier.engine.taps.pop(old.leg_id, None)
    calls: list[tuple[CustomerPhone, DestinationPhone]] = []
    for i in range(AT_ONCE):
        dialled = destination(number * AT_ONCE + i)
        dest = DestinationPhone(carrier, dialled, 0.05, 440.0)
        script = CustomerScript(
            digits=dialled + "*", listen_s=0.2, digit_ms=40, gap_ms=40, talk_s=0.3, settle_s=0.1
        )
        phone = CustomerPhone(carrier, customer(i), 0.05, script, dest)
        carrier.add_phone(phone)
        carrier.add_phone(dest)
        calls.append((phone, dest))
    node = Address("127.0.0.1", server.config.listen[0][1])
    results = await asyncio.gather(
        *(carrier.trigger(trigger_number(i), customer(i), target=node) for i in range(AT_ONCE))
    )
    assert all(r.ok for r in results), results
    ended = [phone.ended.wait() for pair in calls for phone in pair]
    await asyncio.wait_for(asyncio.gather(*ended), 20)
    assert all(p.hangup_sent_at is not None and d.connected_at for p, d in calls), "not talked"
    calls_ = server.node.calls
    assert calls_ is not None
    for _ in range(250):
        if calls_.idle:
            break
        await asyncio.sleep(0.02)
    assert calls_.idle
    await asyncio.sleep(1.5)  # Timer M (64 T1) and the rest: the batch's transactions end


def measure(server: Server) -> Counter[str]:
    clear_caches(server.node.endpoint._fixed_vias)
    return census(server, skip=AMORTIZED)


async def test_whole_calls_leave_nothing_behind_in_the_server(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'node.sqlite3'}"
    await provision(db_url)
    carrier = EmulatedCarrier(CarrierConfig(ring_s=0.1))
    await carrier.start()
    server = Server(
        Config(
            listen=(("127.0.0.1", free_port()),),
            db_url=db_url,
            trunk=TrunkConfig(
                proxy=(carrier.address.host, carrier.address.port),
                ip_auth=True,
                keepalive_interval=0,
            ),
            rtp_ports=(38000, 38999),
            media_workers=0,
            t1=0.02,
            t2=0.16,
            t4=0.2,
            # 18 calls on 6 trigger numbers in seconds are no flood here.
            limits=LimitsConfig(window=1.0),
        ),
        with_service=True,
    )
    await server.startup()
    try:
        await batch(server, carrier, 0)
        before = measure(server)
        await batch(server, carrier, 1)
        await batch(server, carrier, 2)
        after = measure(server)
    finally:
        await server.shutdown()
        await carrier.stop()
    assert before, "the census found nothing to count"
    assert any(path.endswith("engine._legs") for path in before)  # the media engine is in it
    containers = grown(before, after, AT_ONCE - 1)
    assert containers == {}, f"containers that grew with the calls: {containers}"
    store = await Store.open(db_url)
    try:
        cdrs = await store.cdrs.list()
    finally:
        await store.close()
    answered = [c for c in cdrs if c.leg is LegKind.DESTINATION and c.answer_at is not None]
    assert len(answered) == 3 * AT_ONCE
