"""A real node whose media runs in worker processes, against the demo's emulated carrier.

In process: the node (``Server`` with the service, a SQLite store, ``[media] workers`` set) and
the carrier (:mod:`softswitch.demo.carrier`: the customer's and the destination's phones, with
their own media engine) on loopback. The customer rings the trigger, is called back, hears the
dial prompt, dials with RFC 4733 keys, the destination answers, and each side hears the other's
tone through the node's media worker. Then a worker killed mid-call: the call ends with BYE on
both legs and its CDRs, one ERROR line names the worker, and the next call works on the
worker started in its place.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from softswitch.aio.mediapool import WorkerPool
from softswitch.aio.server import Server
from softswitch.config import Config, TrunkConfig
from softswitch.demo.carrier import (
    CarrierConfig,
    CustomerPhone,
    CustomerScript,
    DestinationPhone,
    EmulatedCarrier,
    call_checks,
)
from softswitch.demo.run import free_port
from softswitch.sip.message import Address
from softswitch.store import Store
from softswitch.store.models import AccountKind, CallbackState, Language, LegKind, Location, Rate

TRIGGERS = ("815012345678", "815012345679")
CUSTOMERS = ("819012345678", "819012345670")
DESTINATIONS = ("441234567890", "441234567891")


def script(destination: str, talk_s: float) -> CustomerScript:
    return CustomerScript(
        digits=destination + "*",
        listen_s=0.5,
        digit_ms=80,
        gap_ms=60,
        talk_s=talk_s,
        prompt_timeout=10.0,
        connect_timeout=10.0,
    )


async def provision(db_url: str) -> None:
    store = await Store.open(db_url)
    try:
        for k in range(2):
            await store.accounts.add(
                f"Customer {k}",
                kind=AccountKind.TRAVELER,
                language=Language.EN,
                triggers=[TRIGGERS[k]],
                location=Location(CUSTOMERS[k]),
                credit_limit=10_000,
            )
        await store.rates.set(Rate("44", "United Kingdom", 20, 6, 30))
    finally:
        await store.close()


async def start(tmp_path: Path, workers: int, talk_s: float) -> tuple[Server, EmulatedCarrier]:
    db_url = f"sqlite:///{tmp_path / 'node.sqlite3'}"
    await provision(db_url)
    carrier = EmulatedCarrier(
        CarrierConfig(
            customer_number=CUSTOMERS[0],
            destination_number=DESTINATIONS[0],
            customer_answer_after=0.05,
            destination_answer_after=0.05,
            ring_s=0.3,
            script=script(DESTINATIONS[0], talk_s),
        )
    )
    await carrier.start()
    server = Server(
        Config(
            listen=(("127.0.0.1", free_port()),),
            db_url=db_url,
            trunk=TrunkConfig(
                proxy=(carrier.address.host, carrier.address.port),
                ip_auth=True,
                keepalive_interval=0,
                caller_id="81300000000",
            ),
            rtp_ports=(37000, 37999),
            media_workers=workers,
        ),
        with_service=True,
    )
    await server.startup()
    return server, carrier


def pool_of(server: Server) -> WorkerPool:
    assert server.service is not None
    pool = server.service.media
    assert isinstance(pool, WorkerPool)
    return pool


async def until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.02)


async def trigger(server: Server, carrier: EmulatedCarrier, number: str, caller: str) -> None:
    node = Address("127.0.0.1", server.config.listen[0][1])
    result = await carrier.trigger(number, caller, target=node)
    assert result.ok, result


async def cdrs(server: Server) -> list[tuple[LegKind, str | None, bool]]:
    store = await Store.open(server.config.db_url)
    try:
        return [(c.leg, c.cause_text, c.answer_at is not None) for c in await store.cdrs.list()]
    finally:
        await store.close()


async def test_a_bridged_call_through_a_media_worker(tmp_path: Path) -> None:
    server, carrier = await start(tmp_path, workers=2, talk_s=1.5)
    pool = pool_of(server)
    try:
        await until(lambda: all(w.channel is not None for w in pool.workers), 20.0)
        await trigger(server, carrier, TRIGGERS[0], CUSTOMERS[0])
        await until(lambda: carrier.destination.connected.is_set(), 20.0)
        # Both legs of the call on one worker, none in the node's own process.
        [(worker, legs)] = pool._calls.values()
        assert legs == 2 and set(pool._leg_worker.values()) == {worker}
        assert worker.pid not in (0, os.getpid())
        assert await carrier.wait_call_over(20.0)
        failed = [(c.name, c.detail) for c in call_checks(carrier) if not c.ok]
        assert failed == []
        await until(lambda: pool.stats().legs == 0 and not pool.transports, 5.0)
    finally:
        await server.shutdown()
        await carrier.stop()
    assert all(w.proc is not None and w.proc.returncode == 0 for w in pool.workers)
    records = await cdrs(server)
    assert {(leg, answered) for leg, _, answered in records} >= {
        (LegKind.CALLBACK, True),
        (LegKind.DESTINATION, True),
    }


async def test_a_killed_worker_ends_its_call_with_records_and_the_next_call_works(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server, carrier = await start(tmp_path, workers=1, talk_s=60.0)
    pool = pool_of(server)
    try:
        await until(lambda: pool.workers[0].channel is not None, 20.0)
        await trigger(server, carrier, TRIGGERS[0], CUSTOMERS[0])
        customer, destination = carrier.customer, carrier.destination
        # Talking: each side hears the other through the worker.
        await until(lambda: destination.loud_seconds("talk") > 0.5, 30.0)
        await until(lambda: customer.loud_seconds("talk") > 0.5, 5.0)
        victim = pool.workers[0]
        with caplog.at_level(logging.INFO, logger="softswitch.media"):
            os.kill(victim.pid, signal.SIGKILL)
            assert await carrier.wait_call_over(10.0)
            fresh = pool.workers[0]
            await until(lambda: fresh.channel is not None, 20.0)
        assert (customer.ended_by, destination.ended_by) == ("node", "node")
        [error] = [
            r for r in caplog.records if r.levelname == "ERROR" and r.name == "softswitch.media"
        ]
        assert f"media worker 0 (pid {victim.pid}) died, exit code -9" in error.getMessage()
        await until(lambda: server.node.calls is not None and server.node.calls.idle, 10.0)
        legs = await cdrs(server)
        assert (LegKind.CALLBACK, "media_lost", True) in legs
        assert (LegKind.DESTINATION, "media_lost", True) in legs

        # The next customer's whole call runs on the new worker.
        nxt = DestinationPhone(carrier, DESTINATIONS[1], 0.05, 440.0)
        carrier.add_phone(nxt)
        carrier.customer = CustomerPhone(
            carrier, CUSTOMERS[1], 0.05, script(DESTINATIONS[1], 1.5), nxt
        )
        carrier.add_phone(carrier.customer)
        carrier.destination = nxt
        await trigger(server, carrier, TRIGGERS[1], CUSTOMERS[1])
        await until(lambda: nxt.connected.is_set(), 20.0)
        assert set(pool._leg_worker.values()) == {fresh} and fresh.pid != victim.pid
        assert await carrier.wait_call_over(20.0)
        failed = [(c.name, c.detail) for c in call_checks(carrier) if not c.ok]
        assert failed == []
    finally:
        await server.shutdown()
        await carrier.stop()
    store = await Store.open(server.config.db_url)
    try:
        rows = await store.callbacks.list()
        assert [r.state for r in rows] == [CallbackState.DONE] * 2
    finally:
        await store.close()
