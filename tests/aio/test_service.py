"""The service's asyncio shell for real: loopback sockets, a SQLite store, the media engine.

The call controller's rules are tested on a fake clock (tests/node/test_calls.py); these tests
check that the shell carries its commands out: store requests become rows (CDRs, the queue),
an OpenMedia binds an RTP socket whose port is offered in the INVITE, a stop writes the CDRs
of the calls it hangs up, and a prompt set without a prompt the call flow plays stops the
node at start-up instead of leaving customers in silence.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest
from sqlalchemy.exc import DBAPIError

from softswitch.aio.server import Server
from softswitch.config import Config, TrunkConfig
from softswitch.demo.run import free_port
from softswitch.node import commands as cmd
from softswitch.prompts import LANGUAGES, PROMPTS_DIR, MissingPromptsError
from softswitch.sip.message import Request
from softswitch.sip.parser import parse_message
from softswitch.store import Store
from softswitch.store.db import DatabaseUnavailable
from softswitch.store.models import CallbackState, Cdr, LegKind, Location

TRIGGER = "815012345678"
CUSTOMER = "819012345678"


class Carrier(asyncio.DatagramProtocol):
    """The trunk's side: collects what the node sends, sends what the test says."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.put_nowait(data)

    async def next_request(self, method: str, timeout: float = 5.0) -> Request:
        while True:
            msg = parse_message(await asyncio.wait_for(self.received.get(), timeout))
            if isinstance(msg, Request) and msg.method == method:
                return msg


def trigger(port: int, n: int, cseq_method: str = "INVITE", to_tag: str = "") -> bytes:
    method = "CANCEL" if cseq_method == "CANCEL" else "INVITE"
    to = f"<sip:{TRIGGER}@carrier.test>" + (f";tag={to_tag}" if to_tag else "")
    return (
        f"{method} sip:{TRIGGER}@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-t{n}\r\n"
        f"From: <sip:{CUSTOMER}@carrier.test>;tag=c{n}\r\nTo: {to}\r\n"
        f"Call-ID: trigger-{n}\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def reply(req: Request, status: int) -> bytes:
    via = "".join(f"Via: {v}\r\n" for v in req.vias)
    return (
        f"SIP/2.0 {status} X\r\n{via}From: {req.from_}\r\nTo: {req.to};tag=far\r\n"
        f"Call-ID: {req.call_id}\r\nCSeq: {req.cseq}\r\nContent-Length: 0\r\n\r\n"
    ).encode()


async def provision(db_url: str) -> None:
    store = await Store.open(db_url)
    try:
        await store.accounts.add("Alice", triggers=[TRIGGER], location=Location(CUSTOMER))
    finally:
        await store.close()


async def start_node(
    tmp_path: Path,
    rtp_ports: tuple[int, int],
    *,
    provision_account: bool = True,
    **config: object,
) -> tuple[Server, Carrier, asyncio.DatagramTransport, str]:
    """A node with the service on a provisioned SQLite store, its trunk a local socket."""
    db_url = f"sqlite:///{tmp_path / 'node.sqlite3'}"
    if provision_account:
        await provision(db_url)
    loop = asyncio.get_running_loop()
    transport, carrier = await loop.create_datagram_endpoint(Carrier, local_addr=("127.0.0.1", 0))
    trunk_port = transport.get_extra_info("sockname")[1]
    server = Server(
        Config(
            listen=(("127.0.0.1", free_port()),),
            db_url=db_url,
            trunk=TrunkConfig(proxy=("127.0.0.1", trunk_port), ip_auth=True, keepalive_interval=0),
            rtp_ports=rtp_ports,
            **config,  # type: ignore[arg-type]
        ),
        with_service=True,
    )
    await server.startup()
    return server, carrier, transport, db_url


async def ring_and_hang_up(server: Server, transport: asyncio.DatagramTransport) -> None:
    """The customer rings the trigger and hangs up (CANCEL)."""
    trunk_port = transport.get_extra_info("sockname")[1]
    node = ("127.0.0.1", server.config.listen[0][1])
    transport.sendto(trigger(trunk_port, 1), node)
    await asyncio.sleep(0.05)
    transport.sendto(trigger(trunk_port, 1, "CANCEL"), node)


async def test_trigger_to_callback_to_records_through_the_shell(tmp_path: Path) -> None:
    server, carrier, transport, db_url = await start_node(
        tmp_path, (31000, 31999), callback_attempts=1
    )
    port = server.config.listen[0][1]
    try:
        await ring_and_hang_up(server, transport)
        invite = await carrier.next_request("INVITE")
        assert invite.uri.user == "+" + CUSTOMER
        offered = next(
            int(line.split()[1])
            for line in invite.body.decode().splitlines()
            if line.startswith("m=audio")
        )
        assert 31000 <= offered <= 31999
        assert server.service is not None
        assert len(server.service.media.transports) == 1  # the callback leg's RTP socket
        transport.sendto(reply(invite, 486), ("127.0.0.1", port))
        await carrier.next_request("ACK")
        for _ in range(100):
            if server.node.calls is not None and server.node.calls.idle:
                break
            await asyncio.sleep(0.02)
        assert server.service.media.transports == {}
    finally:
        await server.shutdown()
        transport.close()
    store = await Store.open(db_url)
    try:
        cdrs = {c.leg: c for c in await store.cdrs.list()}
        assert set(cdrs) == {LegKind.TRIGGER, LegKind.CALLBACK}
        assert cdrs[LegKind.CALLBACK].cause_code == 486
        [row] = await store.callbacks.list()
        assert row.state is CallbackState.FAILED and row.last_error == "callback_busy"
    finally:
        await store.close()


async def test_stopping_writes_the_records_of_the_calls_it_hangs_up(tmp_path: Path) -> None:
    server, carrier, transport, db_url = await start_node(tmp_path, (32000, 32999))
    try:
        await ring_and_hang_up(server, transport)
        invite = await carrier.next_request("INVITE")
    finally:
        await server.shutdown()  # the callback still rings: CANCELled, recorded, requeued
        transport.close()
    store = await Store.open(db_url)
    try:
        [callback] = [c for c in await store.cdrs.list() if c.leg is LegKind.CALLBACK]
        assert callback.cause_text == "node_stopping" and callback.answer_at is None
        [row] = await store.callbacks.list()
        assert row.state is CallbackState.PENDING  # the customer still gets the callback
    finally:
        await store.close()
    assert invite.call_id


async def test_a_prompt_set_without_a_prompt_the_call_flow_plays_stops_the_node(
    tmp_path: Path,
) -> None:
    prompts = tmp_path / "prompts"
    for lang in LANGUAGES:
        shutil.copytree(PROMPTS_DIR / lang, prompts / lang)
    (prompts / "ja" / "call_failed.wav").unlink()
    port = free_port()
    config = Config(
        listen=(("127.0.0.1", port),),
        db_url=f"sqlite:///{tmp_path / 'node.sqlite3'}",
        prompts_dir=prompts,
    )
    server = Server(config, with_service=True)
    with pytest.raises(MissingPromptsError, match=r"ja/call_failed\.wav"):
        await server.startup()
    # Nothing was left bound: the port is free again.
    again = Server(Config(listen=(("127.0.0.1", port),)))
    await again.startup()
    await again.shutdown()


async def test_a_node_killed_mid_call_is_recovered_by_the_next_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The "kill": the first node's sockets and store close with no stop at all (no CDR, no
    # settlement); the next node on the same store finishes its call as interrupted and,
    # since the customer had not answered yet, calls them back once more.
    monkeypatch.setattr("softswitch.node.calls.STALE_AFTER", 0.5)
    server, carrier, transport, db_url = await start_node(tmp_path, (33000, 33999))
    node = ("127.0.0.1", server.config.listen[0][1])
    try:
        await ring_and_hang_up(server, transport)
        invite = await carrier.next_request("INVITE")
        transport.sendto(reply(invite, 180), node)
        await asyncio.sleep(0.3)  # its description is written down
    finally:
        await server._close()  # killed: no stop, no CDRs, no settlement
        transport.close()
    store = await Store.open(db_url)
    try:
        assert [c.leg for c in await store.cdrs.list()] == [LegKind.TRIGGER]
        assert len(await store.live_calls.list()) == 1
    finally:
        await store.close()
    await asyncio.sleep(0.6)
    survivor, carrier2, transport2, _ = await start_node(
        tmp_path, (34000, 34999), provision_account=False
    )
    try:
        again = await carrier2.next_request("INVITE", timeout=10.0)
        assert again.uri.user == "+" + CUSTOMER
        transport2.sendto(reply(again, 486), ("127.0.0.1", survivor.config.listen[0][1]))
        await carrier2.next_request("ACK")
    finally:
        await survivor.shutdown()
        transport2.close()
    store = await Store.open(db_url)
    try:
        cdrs = await store.cdrs.list()
        interrupted = [c for c in cdrs if c.cause_text.startswith("interrupted")]
        assert [c.leg for c in interrupted] == [LegKind.CALLBACK]
        assert interrupted[0].answer_at is None and interrupted[0].end_at is not None
        assert len({c.call_uuid for c in cdrs}) == 1  # one customer call, two nodes
        assert await store.live_calls.list() == ()
    finally:
        await store.close()


async def test_the_quote_counts_the_days_spending_and_the_live_holds(tmp_path: Path) -> None:
    # With the daily spend cap on, the controller asks what the account spent since a time;
    # the shell answers from the CDRs and the credit held by the account's live calls.
    server, _, transport, db_url = await start_node(tmp_path, (35000, 35999))
    now = time.time()
    store = await Store.open(db_url)
    try:
        [alice] = await store.accounts.list()
        alice = await store.accounts.update(alice.id, credit_limit=1000)
        for uuid, setup, cost in (("old", now - 2 * 86400, 500), ("today", now - 600, 30)):
            await store.cdrs.write(
                Cdr(uuid, LegKind.DESTINATION, alice.id, CUSTOMER, "441234567890", setup, cost=cost)
            )
        assert await store.credit.reserve(alice.id, 12, "live-call", now=now)
    finally:
        await store.close()
    try:
        assert server.service is not None
        quote = cmd.QuoteRate(1, "s", alice.id, "441234567890", since=now - 86400)
        answer = await server.service._run(quote)
        assert isinstance(answer, tuple)
        _, available, spent = answer
        assert spent == 30 + 12 and available == 1000 - 12
        no_cap = cmd.QuoteRate(2, "s", alice.id, "441234567890")
        answer = await server.service._run(no_cap)
        assert isinstance(answer, tuple) and answer[2] == 0
    finally:
        await server.shutdown()
        transport.close()


async def test_writes_that_must_last_wait_for_the_database_to_come_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A PostgreSQL restart: the connection is refused a few times (nothing ran), then works.
    # A CDR waits and is written once; a read fails at once (the controller degrades).
    server, _, transport, db_url = await start_node(tmp_path, (36000, 36999))
    assert server.service is not None
    shell = server.service
    monkeypatch.setattr("softswitch.aio.service.STORE_RETRY_FIRST", 0.01)
    real_run = shell._run
    refusals = [3]

    async def restarting(request: cmd.StoreRequest) -> object:
        if refusals[0] > 0:
            refusals[0] -= 1
            raise DatabaseUnavailable("cannot connect to PostgreSQL at 127.0.0.1:5432: refused")
        return await real_run(request)

    monkeypatch.setattr(shell, "_run", restarting)
    cdr = Cdr("outage", LegKind.TRIGGER, 1, CUSTOMER, TRIGGER, time.time(), cause_code=487)
    try:
        with caplog.at_level("INFO", logger="softswitch.service"):
            await shell._run_retrying(cmd.WriteCdr(1, "outage", cdr))
            refusals[0] = 1
            with pytest.raises(DatabaseUnavailable):
                await shell._run_retrying(cmd.LoadAccounts(2))
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        back = "the database is back: WriteCdr writes go through again" in caplog.messages

        # Cut off mid-request (whether it committed is unknown): failed at once, in one line.
        async def cut_off(request: cmd.StoreRequest) -> object:
            closed = ConnectionError("connection was closed in the middle of operation")
            raise DBAPIError.instance("COMMIT", {}, closed, Exception, connection_invalidated=True)

        monkeypatch.setattr(shell, "_run", cut_off)
        caplog.clear()
        lost = Cdr("cut", LegKind.TRIGGER, 1, CUSTOMER, TRIGGER, time.time(), cause_code=487)
        await shell._store_task(cmd.WriteCdr(3, "cut", lost))
        [error] = [r for r in caplog.records if r.levelname == "ERROR"]
        assert error.exc_info is None and error.getMessage().startswith(
            f"CDR NOT WRITTEN (lost the connection to SQLite database {tmp_path}/node.sqlite3: "
            "connection was closed in the middle of operation): Cdr(call_uuid='cut'"
        )
    finally:
        await server.shutdown()
        transport.close()
    assert warnings == [
        "cannot connect to PostgreSQL at 127.0.0.1:5432: refused; WriteCdr writes are kept and "
        "tried again"
    ]
    assert back
    store = await Store.open(db_url)
    try:
        assert [c.call_uuid for c in await store.cdrs.list()] == ["outage"]
    finally:
        await store.close()
