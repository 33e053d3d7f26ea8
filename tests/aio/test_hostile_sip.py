"""Hostile SIP against a running node (issue 11): every mutation group of interop/hostile.py,
over UDP and TCP, then seeded random combinations, against the in-process ``Server`` with the
service on (a provisioned account, so a trigger INVITE's SDP is parsed for early media).

Each case must get the RFC's answer or a silent drop, and a valid OPTIONS from another socket
must be answered after every case. Nothing may raise into the event loop or log an error,
and once the timers of what the cases started have run (Timer H/J, the ring limit), the node
holds nothing for them. About 15 s; ``scripts/fuzz_sip.py`` runs as long as you like against
a ``softswitch serve`` subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import traceback
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from interop.hostile import GROUPS, Case, Outcome, Peer, Prober, _cancel, base, cases, random_cases
from softswitch.aio.server import Server
from softswitch.node.node import EARLY_MEDIA_PER_TRIGGER
from softswitch.store import Store
from softswitch.store.models import LegKind
from tests.aio.test_service import start_node

RANDOM_CASES = {"UDP": 800, "TCP": 300}


class Errors(logging.Handler):
    """Every ERROR (or worse) any logger emits."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(self.format(record))


@pytest.fixture
def errors() -> Iterator[Errors]:
    handler = Errors()
    logging.getLogger().addHandler(handler)
    yield handler
    logging.getLogger().removeHandler(handler)


async def run_timers(server: Server, horizon: float) -> float:
    """Run the node's timers ``horizon`` seconds ahead of the loop's clock, each one's
    consequences (new timers, the service's commands) included; the node's time at the end."""
    now = server.loop.time()
    end = now + horizon
    while (when := server.node.get_timer()) is not None and when <= end:
        now = max(now + 1.0, when)  # what falls due within a second runs together
        server.node.handle_timer(now)
        server.transmit()
        await asyncio.sleep(0.001)
    return now


def run(node: tuple[str, int], transport: str, seed: int) -> list[Outcome]:
    with Prober(node, transport) as prober:
        batch: list[Case] = [*cases(prober.peer, prefix=f"{transport}c")]
        batch += random_cases(prober.peer, seed, RANDOM_CASES[transport], prefix=f"{transport}r")
        return [prober.run(case) for case in batch]


async def test_hostile_sip_gets_the_rfc_answer_and_the_node_keeps_serving(
    tmp_path: Path, errors: Errors
) -> None:
    server, _, carrier, _ = await start_node(tmp_path, (34000, 34999), callback_attempts=1)
    loop = asyncio.get_running_loop()
    raised: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: raised.append(context))
    node = ("127.0.0.1", server.config.listen[0][1])
    try:
        outcomes = await asyncio.to_thread(run, node, "UDP", 11)
        outcomes += await asyncio.to_thread(run, node, "TCP", 12)
        wrong = [o.describe() for o in outcomes if not o.ok]
        assert not wrong, f"{len(wrong)} of {len(outcomes)} cases:\n" + "\n".join(wrong)
        assert not raised, "\n".join(
            "".join(traceback.format_exception(c["exception"])) if "exception" in c else str(c)
            for c in raised[:3]
        )
        assert not errors.records, errors.records[:5]
        tried = Counter(o.case.group for o in outcomes)
        assert set(GROUPS) <= set(tried)
        # Everything the cases started ends by its own timers (Timer H/J, the ring limit, the
        # BYE of a trigger answered into the menu whose 200 was never ACKed, then Timer F).
        now = await run_timers(server, 600.0)
        held = server.node.held(now)
        assert held == {
            "server_transactions": 0,
            "dialogs": 0,
            "ringing_triggers": 0,
            "banned_sources": 0,
        }, held
    finally:
        loop.set_exception_handler(None)
        await server.shutdown()
        carrier.close()


async def test_a_flood_at_one_trigger_number_gets_early_media_three_times_only(
    tmp_path: Path,
) -> None:
    """Each early-media trigger holds an RTP socket and a session: a flood of INVITEs at one
    trigger number gets EARLY_MEDIA_PER_TRIGGER of them, and plain ringing for the rest."""
    server, _, carrier, _ = await start_node(tmp_path, (35000, 35999), callback_attempts=1)
    node = ("127.0.0.1", server.config.listen[0][1])

    def ring(count: int) -> list[int]:
        """``count`` INVITEs ringing at once: the best answer each got within 3 s."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            peer = Peer("127.0.0.1", sock.getsockname()[1], *node)
            for n in range(count):
                sock.sendto(base("invite", peer, f"flood{n}x").render(), node)
            best: dict[bytes, int] = {}
            sock.settimeout(3.0)
            with contextlib.suppress(TimeoutError):
                while len([s for s in best.values() if s > 100]) < count:
                    data = sock.recv(65536)
                    call = data.split(b"Call-ID: ", 1)[1].split(b"\r\n", 1)[0]
                    best[call] = max(best.get(call, 0), int(data[8:11]))
            return list(best.values())

    try:
        assert sorted(await asyncio.to_thread(ring, 8)) == [180] * 5 + [183] * 3
        assert server.service is not None
        assert len(server.service.media.transports) <= EARLY_MEDIA_PER_TRIGGER
    finally:
        await server.shutdown()
        carrier.close()


async def test_a_second_invite_with_a_ringing_triggers_call_id_and_tag_is_482(
    tmp_path: Path,
) -> None:
    """Found by a 10-minute fuzz run: two INVITEs with the same Call-ID and From tag on
    different branches were taken as two triggers under one key; the second overwrote the
    first's entry, and when the first (with early media) was answered into the menu the
    node took the wrong one off its list: one transaction, dialog and media leg held for good.
    RFC 3261 section 8.2.2.2: a merged request gets 482."""
    server, _, carrier, _ = await start_node(tmp_path, (37000, 37999), callback_attempts=1)
    node = ("127.0.0.1", server.config.listen[0][1])

    def two_invites() -> list[int]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            peer = Peer("127.0.0.1", sock.getsockname()[1], *node)
            first = base("invite", peer, "merged1x").render()
            second = first.replace(b"branch=z9hG4bK-merged1x", b"branch=z9hG4bK-other2x")
            got: list[int] = []
            sock.settimeout(1.0)
            for data in (first, second):
                sock.sendto(data, node)
                with contextlib.suppress(TimeoutError):
                    while True:
                        answer = sock.recv(65536)
                        if b"z9hG4bK-other2x" in answer or data is first:
                            got.append(int(answer[8:11]))
                got.append(0)
            return got

    try:
        got = await asyncio.to_thread(two_invites)
        # The 482 is retransmitted until ACKed (never, here): nothing else for the second.
        assert got[:4] == [100, 183, 0, 482] and set(got[4:]) == {482, 0}, got
        now = await run_timers(server, 600.0)
        held = server.node.held(now)
        assert held["server_transactions"] == 0 and held["ringing_triggers"] == 0, held
        assert held["dialogs"] == 0, held
    finally:
        await server.shutdown()
        carrier.close()


async def test_a_trigger_without_contact_left_ringing_is_released_not_held_for_good(
    tmp_path: Path,
) -> None:
    """Found by a 10-minute fuzz run: a trigger INVITE without Contact rang with early media;
    answering it into the menu (the caller stayed on the line) raised DialogError out of the
    node's timer, and the trigger rang for good (a transaction, a dialog, a media leg)."""
    server, _, carrier, _ = await start_node(tmp_path, (38000, 38999), callback_attempts=1)
    loop = asyncio.get_running_loop()
    raised: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: raised.append(context))
    node = ("127.0.0.1", server.config.listen[0][1])

    def ring() -> list[int]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            peer = Peer("127.0.0.1", sock.getsockname()[1], *node)
            sock.sendto(base("invite", peer, "nocontact1x").drop("Contact").render(), node)
            got: list[int] = []
            sock.settimeout(1.0)
            with contextlib.suppress(TimeoutError):
                while 183 not in got:
                    got.append(int(sock.recv(65536)[8:11]))
            return got

    try:
        assert await asyncio.to_thread(ring) == [100, 183]
        now = await run_timers(server, 600.0)
        assert not raised, raised[:3]
        held = server.node.held(now)
        assert held["server_transactions"] == 0 and held["ringing_triggers"] == 0, held
        assert held["dialogs"] == 0, held
    finally:
        loop.set_exception_handler(None)
        await server.shutdown()
        carrier.close()


async def test_a_caller_number_that_is_not_utf8_still_gets_its_trigger_cdr(
    tmp_path: Path,
) -> None:
    """Found by a 10-minute fuzz run: a From user escaping a byte that is not UTF-8 ("81%91...")
    made the trigger CDR unwritable (UnicodeEncodeError in the store, "CDR NOT WRITTEN")."""
    server, _, carrier, db_url = await start_node(tmp_path, (39000, 39999), callback_attempts=1)
    node = ("127.0.0.1", server.config.listen[0][1])

    def ring_and_cancel() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            peer = Peer("127.0.0.1", sock.getsockname()[1], *node)
            template = base("invite", peer, "utf1x")
            caller = template.get("From").split("sip:")[1].split("@")[0]
            invite = template.render().replace(caller.encode(), b"81%91" + caller[3:].encode())
            sock.sendto(invite, node)
            sock.settimeout(1.0)
            with contextlib.suppress(TimeoutError):
                while True:
                    answer = sock.recv(65536)
                    if answer[8:11] in (b"180", b"183"):
                        cancel = _cancel(answer, template.uri.encode())
                        sock.sendto(cancel, node)
                    elif answer[8:11] == b"487":
                        break

    try:
        await asyncio.to_thread(ring_and_cancel)
        await asyncio.sleep(0.5)  # the CDR is written
    finally:
        await server.shutdown()
        carrier.close()
    store = await Store.open(db_url)
    try:
        [trigger] = [c for c in await store.cdrs.list() if c.leg is LegKind.TRIGGER]
    finally:
        await store.close()
    assert trigger.from_number.startswith("81\\x91"), trigger
