"""Media worker processes (softswitch/aio/mediapool.py, media/worker.py) for real.

The protocol's pieces are checked on their own (frames cut anywhere, the port split, the
command mapping); the pool runs real ``python -m media.worker`` processes on loopback: legs of
one call land on one worker and calls spread over the least loaded, commands issued in one
loop iteration leave in one frame, RTP relayed through a worker's bridge and an RFC 4733 key
coming back as an event; and a worker killed with SIGKILL: its legs reported lost, an open in
flight failed, one ERROR line with its pid and exit code, a new worker in its place.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from media import engine as me
from media import worker as mw
from media.player import Tone
from media.rfc4733 import build_payload
from media.rtp import build_packet
from softswitch.aio.mediapool import (
    LocalMedia,
    MediaBackend,
    WorkerPool,
    auto_workers,
    split_ports,
    to_op,
)
from softswitch.config import ConfigError, load_config
from softswitch.node import commands as cmd

PCMU_SILENCE = b"\xff" * 160


# --- the pieces -----------------------------------------------------------------------------


def test_frames_cut_anywhere_come_back_whole_and_in_order() -> None:
    batches: list[list[mw.Op]] = [
        [("open", "a-1", True)],
        [("event", me.DigitReceived("a-1", "5", "inband", 40))],
    ]
    batches.append([("play", "a-1", (Path("/p/dial.wav"), Tone("ringback")), False, True)] * 50)
    stream = b"".join(mw.encode(b) for b in batches)
    for cut in (1, 3, 4, 5, 17, len(stream) // 2, len(stream)):
        reader = mw.FrameReader()
        got: list[list[mw.Op]] = []
        for start in range(0, len(stream), cut):
            got += reader.feed(stream[start : start + cut])
        assert got == batches


def test_a_frame_too_large_is_refused() -> None:
    with pytest.raises(ValueError, match="frame of"):
        mw.FrameReader().feed(mw.HEADER.pack(mw.MAX_FRAME + 1) + b"x")


def test_ports_are_split_into_disjoint_even_slices() -> None:
    slices = split_ports((16384, 32767), 3)
    assert [s[0] % 2 for s in slices if s is not None] == [0, 0, 0]
    flat = [p for s in slices if s is not None for p in range(s[0], s[1] + 1)]
    assert len(flat) == len(set(flat)) and min(flat) == 16384 and max(flat) == 32767
    assert split_ports((31001, 31008), 2) == [(31002, 31003), (31004, 31007)]
    assert split_ports(None, 2) == [None, None]
    with pytest.raises(ValueError, match="too small"):
        split_ports((31000, 31003), 3)


def test_auto_is_one_core_for_sip_and_the_rest_for_media() -> None:
    assert [auto_workers(n) for n in (1, 2, 16)] == [1, 1, 15]


def test_every_command_but_open_maps_to_an_operation(tmp_path: Path) -> None:
    ops = [
        to_op(cmd.CloseMedia("a"), tmp_path),
        to_op(cmd.SetRemote("a", "127.0.0.1", 4000, "PCMA", 101), tmp_path),
        to_op(cmd.PlayMedia("a", (Tone("busy"),), True, False), tmp_path),
        to_op(cmd.StopMedia("a"), tmp_path),
        to_op(cmd.SendDigits("a", "12", "rfc4733"), tmp_path),
        to_op(cmd.BridgeMedia("a", "b", True), tmp_path),
        to_op(cmd.UnbridgeMedia("a"), tmp_path),
        to_op(cmd.ConferenceMedia("s", ("a", "b", "c")), tmp_path),
        to_op(cmd.RecordMedia("a", "1-x.wav", 10.0, 3.0), tmp_path),
    ]
    assert [op[0] for op in ops] == [
        "close", "remote", "play", "stop_play", "digits", "bridge", "unbridge", "conference",
        "record",
    ]  # fmt: skip
    assert ops[-1][2] == str(tmp_path / "1-x.wav")  # the worker gets the whole path
    with pytest.raises(TypeError):
        to_op(cmd.OpenMedia("a"), tmp_path)


@pytest.mark.parametrize(
    ("text", "workers"),
    [("", None), ('workers = "auto"', None), ("workers = 0", 0), ("workers = 3", 3)],
)
def test_the_workers_setting(tmp_path: Path, text: str, workers: int | None) -> None:
    path = tmp_path / "s.toml"
    path.write_text(f"[media]\n{text}\n")
    assert load_config(path).media_workers == workers


@pytest.mark.parametrize("text", ['workers = "many"', "workers = -1", "workers = true"])
def test_a_bad_workers_setting_is_named(tmp_path: Path, text: str) -> None:
    path = tmp_path / "s.toml"
    path.write_text(f"[media]\n{text}\n")
    with pytest.raises(ConfigError, match="workers"):
        load_config(path)


@pytest.mark.parametrize(
    ("workers", "line", "key"),
    [('workers = "auto"\n', 3, "[media] workers"), ("", 2, "[media] rtp_ports")],
)
def test_auto_workers_that_the_port_range_cannot_hold_are_refused_at_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: str, line: int, key: str
) -> None:
    # Five cores: four workers, each needing an RTP/RTCP pair of its own.
    monkeypatch.setattr(os, "cpu_count", lambda: 5)
    path = tmp_path / "s.toml"
    path.write_text(f"[media]\nrtp_ports = [20000, 20005]\n{workers}")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    err = info.value
    assert (err.line, err.key) == (line, key), str(err)
    assert "holds 3 RTP port pair(s), fewer than the 4 media workers" in err.message
    # Four pairs are enough, and the setting stays "auto" for the node to resolve.
    path.write_text(f"[media]\nrtp_ports = [20000, 20007]\n{workers}")
    assert load_config(path).media_workers is None
    with pytest.raises(ValueError, match="too small"):  # what the node raised before
        split_ports((20000, 20005), auto_workers())


def test_explicit_workers_are_counted_against_pairs_as_the_node_splits_them(
    tmp_path: Path,
) -> None:
    # 31001-31004 holds one pair from its first even port (31002-31003), not two.
    path = tmp_path / "s.toml"
    path.write_text("[media]\nrtp_ports = [31001, 31004]\nworkers = 2\n")
    with pytest.raises(ConfigError, match="more workers than RTP port pairs") as info:
        load_config(path)
    assert (info.value.line, info.value.key) == (3, "[media] workers")
    path.write_text("[media]\nrtp_ports = [31001, 31005]\nworkers = 2\n")
    assert load_config(path).media_workers == 2
    assert len(split_ports((31001, 31005), 2)) == 2


# --- real workers ---------------------------------------------------------------------------


class Phone(asyncio.DatagramProtocol):
    """A loopback socket that sends RTP to a leg and keeps what it receives."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.received.append(data)

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def send(self, data: bytes, port: int) -> None:
        assert self.transport is not None
        self.transport.sendto(data, ("127.0.0.1", port))


async def phone() -> Phone:
    _, proto = await asyncio.get_running_loop().create_datagram_endpoint(
        Phone, local_addr=("127.0.0.1", 0)
    )
    return proto


async def until(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.01)


def free_range(size: int = 200) -> tuple[int, int]:
    """A block of ``size`` ports starting at a port free now (even)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        base = s.getsockname()[1] & ~1
    base = min(base, 65534 - size)
    return (base, base + size - 1)


@pytest.fixture
async def events() -> list[me.Event]:
    return []


async def make_pool(count: int, events: list[me.Event], tmp_path: Path) -> WorkerPool:
    pool = WorkerPool(
        count,
        host="127.0.0.1",
        port_range=free_range(),
        on_event=events.append,
        recordings=tmp_path,
        log_level="WARNING",
    )
    pool.start()
    await until(lambda: all(w.channel is not None for w in pool.workers), 20.0)
    return pool


@pytest.fixture
async def pool2(events: list[me.Event], tmp_path: Path) -> AsyncIterator[WorkerPool]:
    pool = await make_pool(2, events, tmp_path)
    yield pool
    await pool.stop()


def in_range(pool: WorkerPool, index: int, port: int) -> bool:
    ports = pool.ranges[index]
    assert ports is not None
    return ports[0] <= port <= ports[1]


async def test_legs_of_one_call_share_a_worker_and_calls_spread_over_the_least_loaded(
    pool2: WorkerPool,
) -> None:
    a1 = await pool2.open(cmd.OpenMedia("a1", True, call="A"))
    b1 = await pool2.open(cmd.OpenMedia("b1", True, call="B"))
    a2 = await pool2.open(cmd.OpenMedia("a2", False, call="A"))
    c1 = await pool2.open(cmd.OpenMedia("c1", True, call="C"))
    worker = {leg: w.index for leg, w in pool2._leg_worker.items()}
    assert worker["a1"] == worker["a2"] != worker["b1"] == worker["c1"]
    # Each worker binds in its own slice of the range.
    assert in_range(pool2, worker["a1"], a1) and in_range(pool2, worker["a1"], a2)
    assert in_range(pool2, worker["b1"], b1) and in_range(pool2, worker["b1"], c1)
    # A call whose legs are all closed is free to go elsewhere next time.
    for leg in ("a1", "a2"):
        pool2.apply(cmd.CloseMedia(leg))
    assert "A" not in pool2._calls and set(pool2.transports) == {"b1", "c1"}
    await pool2.open(cmd.OpenMedia("a3", True, call="A"))
    assert pool2._leg_worker["a3"].index == worker["a1"]  # the least loaded again
    pids = {w.pid for w in pool2.workers}
    assert len(pids) == 2 and os.getpid() not in pids


@pytest.mark.parametrize("workers", [2, 0])
async def test_rtp_is_relayed_and_keys_come_back_as_events(
    workers: int, events: list[me.Event], tmp_path: Path
) -> None:
    # workers = 0: LocalMedia, the same operations in the node's own loop.
    if workers:
        media: MediaBackend = await make_pool(workers, events, tmp_path)
    else:
        media = LocalMedia(
            host="127.0.0.1", port_range=free_range(), on_event=events.append, recordings=tmp_path
        )
        media.start()
    try:
        await relay_and_keys(media, events)
    finally:
        await media.stop()


async def relay_and_keys(media: MediaBackend, events: list[me.Event]) -> None:
    alice, bob = await phone(), await phone()
    pa = await media.open(cmd.OpenMedia("s-cb", True, call="s"))
    pb = await media.open(cmd.OpenMedia("s-dst", False, call="s"))
    pool = media if isinstance(media, WorkerPool) else None
    before = pool.frames_sent if pool is not None else 0
    # Issued in one loop iteration: one frame to the worker.
    media.apply(cmd.SetRemote("s-cb", "127.0.0.1", alice.port, "PCMU", 101))
    media.apply(cmd.SetRemote("s-dst", "127.0.0.1", bob.port, "PCMU", 101))
    media.apply(cmd.BridgeMedia("s-cb", "s-dst"))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    if pool is not None:
        assert pool.frames_sent == before + 1
    for seq in range(100):
        alice.send(build_packet(0, seq == 0, seq, seq * 160, 0x1111, PCMU_SILENCE), pa)
        bob.send(build_packet(0, seq == 0, seq, seq * 160, 0x2222, PCMU_SILENCE), pb)
        await asyncio.sleep(0.004)
    await until(lambda: len(alice.received) >= 50 and len(bob.received) >= 50)
    # The customer presses 7 (RFC 4733, event 7): the worker reports it.
    for k, end in enumerate((False, False, True, True, True)):
        payload = build_payload(7, end, 10, 160 * (k + 1))
        alice.send(build_packet(101, k == 0, 100 + k, 16000, 0x1111, payload), pa)
    await until(lambda: any(isinstance(e, me.DigitReceived) for e in events))
    [digit] = [e for e in events if isinstance(e, me.DigitReceived)]
    assert (digit.leg_id, digit.digit, digit.source) == ("s-cb", "7", "rfc4733")
    await until(lambda: media.stats().legs == 2, 3.0)  # a pool's: the periodic statistics
    for p in (alice, bob):
        assert p.transport is not None
        p.transport.close()


async def test_a_killed_worker_loses_only_its_legs_and_is_replaced(
    events: list[me.Event], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pool = await make_pool(2, events, tmp_path)
    try:
        await pool.open(cmd.OpenMedia("x-1", True, call="X"))
        await pool.open(cmd.OpenMedia("y-1", True, call="Y"))
        await pool.open(cmd.OpenMedia("x-2", False, call="X"))
        pool.apply(cmd.BridgeMedia("x-1", "x-2"))
        victim = pool._leg_worker["x-1"]
        survivor = pool._leg_worker["y-1"]
        assert victim is not survivor
        # An open in flight when it dies fails (the worker is stopped so it cannot answer).
        os.kill(victim.pid, signal.SIGSTOP)
        pending = asyncio.ensure_future(pool.open(cmd.OpenMedia("x-3", True, call="X")))
        await asyncio.sleep(0.1)
        assert not pending.done()
        with caplog.at_level(logging.INFO, logger="softswitch.media"):
            os.kill(victim.pid, signal.SIGKILL)
            with pytest.raises(OSError, match="died"):
                await pending
            lost = {e.leg_id for e in events if isinstance(e, me.MediaLost)}
            assert lost == {"x-1", "x-2"}
            assert set(pool.transports) == {"y-1"}
            fresh = pool.workers[victim.index]
            await until(lambda: fresh.channel is not None, 20.0)
        [error] = [r for r in caplog.records if r.levelname == "ERROR"]
        assert f"(pid {victim.pid})" in error.getMessage()
        assert "exit code -9 (SIGKILL)" in error.getMessage()
        assert fresh.pid not in (0, victim.pid) and pool.restarts == 1
        # The survivor's call never noticed; a new call works on the new worker.
        assert pool._leg_worker["y-1"] is survivor and survivor.alive
        port = await pool.open(cmd.OpenMedia("z-1", True, call="Z"))
        assert pool._leg_worker["z-1"] is fresh and in_range(pool, fresh.index, port)
    finally:
        await pool.stop()
    assert all(w.proc is not None and w.proc.returncode == 0 for w in pool.workers)


async def test_a_pool_that_stops_leaves_no_worker_and_a_dead_node_leaves_none_either(
    events: list[me.Event], tmp_path: Path
) -> None:
    pool = await make_pool(1, events, tmp_path)
    [worker] = pool.workers
    assert worker.channel is not None and worker.channel.transport is not None
    # The node dying closes its end of the control socket: the worker exits on its own.
    worker.channel.transport.abort()
    assert worker.proc is not None
    assert await asyncio.wait_for(worker.proc.wait(), 10.0) == 0
    await pool.stop()


async def test_an_event_the_node_fails_on_does_not_cost_the_worker(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # An exception out of the node's event handling must not reach the channel's
    # data_received (asyncio would close it and the worker would exit with all its calls).
    seen: list[me.Event] = []

    def fragile(event: me.Event) -> None:
        seen.append(event)
        if len(seen) == 1:
            raise RuntimeError("a bug in the controller")

    pool = WorkerPool(
        1,
        host="127.0.0.1",
        port_range=free_range(),
        on_event=fragile,
        recordings=tmp_path,
        log_level="WARNING",
    )
    pool.start()
    try:
        await until(lambda: pool.workers[0].channel is not None, 20.0)
        alice = await phone()
        port = await pool.open(cmd.OpenMedia("k-1", True, call="k"))
        pool.apply(cmd.SetRemote("k-1", "127.0.0.1", alice.port, "PCMU", 101))
        pid = pool.workers[0].pid
        for n, key in enumerate((3, 9)):
            for k, end in enumerate((False, False, True, True, True)):
                payload = build_payload(key, end, 10, 160 * (k + 1))
                alice.send(build_packet(101, k == 0, 10 * n + k, 16000 * (n + 1), 7, payload), port)
            await until(lambda n=n: len(seen) > n)
        assert [e.digit for e in seen if isinstance(e, me.DigitReceived)] == ["3", "9"]
        assert "media event" in caplog.text and "a bug in the controller" in caplog.text
        assert pool.workers[0].pid == pid and pool.restarts == 0
        assert alice.transport is not None
        alice.transport.close()
    finally:
        await pool.stop()
