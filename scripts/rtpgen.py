#!/usr/bin/env python3
"""Paced RTP load generator for the media benchmark (one process, batched system calls).

Usage: rtpgen.py --targets JSON --seconds S [--warmup W] [--digit-every S] [--loopback]

`--targets` is a JSON list of [port_a, port_b] pairs on 127.0.0.1 (one bridged call each).
Every call has two streams, phone A -> port_a and phone B -> port_b: 172-byte PCMU packets every
20 ms, each stream at its own random phase (1 ms slots) so the load is spread like real phones.
Phones A share one UDP socket and phones B another (the server latches that address per leg);
the relayed packets come back to them. A pure-Python sendto/recv loop costs ~13 us per packet
pair, which would make the generator the bottleneck, so packets are built with numpy and moved
with sendmmsg/recvmmsg (libc via ctypes), a few hundred per system call.

Each audio payload starts with its send time (CLOCK_MONOTONIC ns, shared by all processes on
the host) followed by 0xFF silence, so the receiver measures the one-way delay the server adds.
Phone A of every call sends an in-band DTMF digit (100 ms tone, 100 ms gap) every
`--digit-every` seconds; those frames carry no stamp. `--loopback` sends every packet straight
back to the generator's own sockets: the no-relay run that shows what the generator sustains.
The delay is taken from the kernel's receive timestamp (SO_TIMESTAMPNS), not from when this
process gets round to reading, so a generator preempted by another job does not count as
server delay. Prints one JSON line: sent, received, lost, late (> 20 ms), delay p50/p99 (ms),
digits sent, generator CPU seconds.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import select
import socket
import struct
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from media.g711 import ulaw_encode
from media.tones import dtmf_tone

SLOT_NS = 1_000_000
SLOTS = 20  # per 20 ms packet interval
LATE_NS = 20_000_000
PKT = 172
RECV_BATCH = 1024
DIGITS = "0123456789*#"
DIGIT_FRAMES = 10
MSG_DONTWAIT = 0x40
# Linux: receive timestamps (struct timespec, CLOCK_REALTIME) as a control message, so a
# generator that is itself preempted for a while does not count the wait as server delay.
SO_TIMESTAMPNS = 35
CMSG_SIZE = 32  # CMSG_SPACE(sizeof(struct timespec)) on 64-bit Linux

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


class IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class MsgHdr(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_void_p),
        ("namelen", ctypes.c_uint32),
        ("iov", ctypes.POINTER(IoVec)),
        ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p),
        ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    ]


class MMsgHdr(ctypes.Structure):
    _fields_ = [("hdr", MsgHdr), ("len", ctypes.c_uint)]


_libc.sendmmsg.argtypes = [ctypes.c_int, ctypes.POINTER(MMsgHdr), ctypes.c_uint, ctypes.c_int]
_libc.recvmmsg.argtypes = [
    ctypes.c_int,
    ctypes.POINTER(MMsgHdr),
    ctypes.c_uint,
    ctypes.c_int,
    ctypes.c_void_p,
]


def _sockaddr(port: int) -> bytes:
    return (
        struct.pack("<H", socket.AF_INET)
        + struct.pack("!H", port)
        + socket.inet_aton("127.0.0.1")
        + b"\x00" * 8
    )


class Batch:
    """Preallocated mmsghdr array over rows of a numpy buffer (and of a control buffer, for the
    kernel's receive timestamps)."""

    def __init__(self, count: int, size: int, control: bool = False) -> None:
        self.buf = np.zeros((count, size), dtype=np.uint8)
        self.ctrl = np.zeros((count, CMSG_SIZE), dtype=np.uint8)
        self.iov = (IoVec * count)()
        self.msgs = (MMsgHdr * count)()
        base = self.buf.ctypes.data
        for i in range(count):
            self.iov[i].base = base + i * size
            self.iov[i].len = size
            self.msgs[i].hdr.iov = ctypes.pointer(self.iov[i])
            self.msgs[i].hdr.iovlen = 1
            if control:
                self.msgs[i].hdr.control = self.ctrl.ctypes.data + i * CMSG_SIZE
                self.msgs[i].hdr.controllen = CMSG_SIZE

    def arrivals(self, got: int, fallback: int, offset: int) -> np.ndarray:
        """Kernel receive times of the first `got` messages on the monotonic clock (ns)."""
        ctrl = self.ctrl[:got]
        level = ctrl[:, 8:12].copy().view("<i4").reshape(-1)
        kind = ctrl[:, 12:16].copy().view("<i4").reshape(-1)
        ts = ctrl[:, 16:32].copy().view("<i8")
        ok = (level == socket.SOL_SOCKET) & (kind == SO_TIMESTAMPNS)
        return np.where(ok, ts[:, 0] * 1_000_000_000 + ts[:, 1] - offset, fallback)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--targets", required=True)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--digit-every", type=float, default=2.0)
    ap.add_argument("--loopback", action="store_true")
    ap.add_argument("--cpu", type=int, default=None)
    args = ap.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    pairs = json.loads(args.targets)
    socks = []
    for _ in range(2):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 24)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 24)
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        socks.append(s)
    own = [s.getsockname() for s in socks]
    print(json.dumps({"addrs": own}), flush=True)
    sys.stdin.readline()  # the server has pointed its legs at us

    rng = np.random.default_rng(1)
    n_calls = len(pairs)
    n = 2 * n_calls
    side = np.tile(np.array([0, 1], dtype=np.int64), n_calls)
    ports = np.array(pairs, dtype=np.int64).reshape(-1)
    if args.loopback:
        ports = np.array([own[1 - s][1] for s in side], dtype=np.int64)
    slot = rng.integers(0, SLOTS, n)
    order = np.lexsort((side, slot))
    side, ports, slot = side[order], ports[order], slot[order]
    seq = rng.integers(0, 65536, n).astype(np.int64)
    ts = rng.integers(0, 1 << 32, n).astype(np.int64)
    ssrc = np.arange(n, dtype=np.int64) + 1000
    next_digit = np.where(side == 0, rng.uniform(0.2, args.digit_every, n), np.inf)
    digit_id = np.zeros(n, dtype=np.int64)
    digit_pos = np.full(n, -1, dtype=np.int64)
    pcm = [np.concatenate([dtmf_tone(d, 100, -6.0), np.zeros(800, dtype=np.int16)]) for d in DIGITS]
    frames = np.array(
        [[np.frombuffer(ulaw_encode(f), np.uint8) for f in p.reshape(-1, 160)] for p in pcm]
    )
    names = [
        np.frombuffer(b"".join(_sockaddr(int(p)) for p in ports[side == k]), np.uint8)
        for k in (0, 1)
    ]
    # Per slot and socket: the stream indexes to send, and a batch with names bound once.
    plan = []
    for sl in range(SLOTS):
        per_sock = []
        for k in (0, 1):
            idx = np.nonzero((slot == sl) & (side == k))[0]
            batch = Batch(max(1, len(idx)), PKT)
            namebuf = np.frombuffer(
                b"".join(_sockaddr(int(ports[i])) for i in idx) or b"\x00" * 16, np.uint8
            ).copy()
            for j in range(len(idx)):
                batch.msgs[j].hdr.name = namebuf.ctypes.data + 16 * j
                batch.msgs[j].hdr.namelen = 16
            batch.buf[:, 0] = 0x80
            batch.buf[:, 1] = 0
            per_sock.append((idx, batch, namebuf))
        plan.append(per_sock)
    del names
    recv_batch = Batch(RECV_BATCH, 2048, control=True)
    realtime_offset = time.time_ns() - time.monotonic_ns()
    fds = [s.fileno() for s in socks]

    sent = received = late = digits_sent = 0
    delays: list[np.ndarray] = []
    t0 = time.monotonic_ns() + 50_000_000
    measure_from = t0 + int(args.warmup * 1e9)
    end = measure_from + int(args.seconds * 1e9)
    cpu0 = time.process_time()
    wall0 = time.monotonic()
    k_slot = 0
    digit_count = 0

    def receive() -> None:
        nonlocal received, late
        for fd in fds:
            while True:
                got = _libc.recvmmsg(fd, recv_batch.msgs, RECV_BATCH, MSG_DONTWAIT, None)
                if got <= 0:
                    break
                arrival = time.monotonic_ns()
                arrivals = recv_batch.arrivals(got, arrival, realtime_offset)
                buf = recv_batch.buf[:got]
                stamps = buf[:, 12:20].copy().view(">u8").reshape(-1).astype(np.int64)
                stamped = (
                    np.all(buf[:, 20:24] == 0xFF, axis=1) & (stamps > t0) & (stamps <= arrival)
                )
                in_window = stamped & (stamps >= measure_from) & (stamps < end)
                d = np.maximum(arrivals[in_window] - stamps[in_window], 0)
                delays.append(d)
                late += int(np.count_nonzero(d > LATE_NS))
                received += int(np.count_nonzero(in_window))
                if measure_from <= arrival < end:
                    received += int(np.count_nonzero(~stamped))
                if got < RECV_BATCH:
                    break

    while True:
        due = t0 + k_slot * SLOT_NS
        now = time.monotonic_ns()
        if now >= due:
            if due >= end:
                break
            sl = k_slot % SLOTS
            tick_t = (due - t0) / 1e9
            measuring = due >= measure_from
            for k in (0, 1):
                idx, batch, _ = plan[sl][k]
                m = len(idx)
                if m == 0:
                    continue
                start = (digit_pos[idx] < 0) & (next_digit[idx] <= tick_t)
                if start.any():
                    sidx = idx[start]
                    digit_pos[sidx] = 0
                    digit_id[sidx] = (np.arange(len(sidx)) + digit_count) % len(DIGITS)
                    digit_count += len(sidx)
                    next_digit[sidx] += args.digit_every
                    if measuring:
                        digits_sent += len(sidx)
                buf = batch.buf
                s_seq = seq[idx]
                s_ts = ts[idx]
                buf[:m, 2] = s_seq >> 8
                buf[:m, 3] = s_seq & 0xFF
                buf[:m, 4:8] = (s_ts.astype(">u4").view(np.uint8)).reshape(m, 4)
                buf[:m, 8:12] = (ssrc[idx].astype(">u4").view(np.uint8)).reshape(m, 4)
                buf[:m, 12:] = 0xFF
                stamp = np.array([time.monotonic_ns()], dtype=">u8").view(np.uint8)
                buf[:m, 12:20] = stamp
                pos = digit_pos[idx]
                active = pos >= 0
                if active.any():
                    rows = np.nonzero(active)[0]
                    buf[rows, 12:] = frames[digit_id[idx[rows]], pos[rows]]
                    newpos = pos[rows] + 1
                    newpos[newpos >= DIGIT_FRAMES] = -1
                    digit_pos[idx[rows]] = newpos
                seq[idx] = (s_seq + 1) & 0xFFFF
                ts[idx] = (s_ts + 160) & 0xFFFFFFFF
                done = 0
                while done < m:
                    r = _libc.sendmmsg(
                        fds[k], ctypes.byref(batch.msgs[done]) if done else batch.msgs, m - done, 0
                    )
                    if r <= 0:
                        break
                    done += r
                if measuring:
                    sent += m
            k_slot += 1
            continue
        receive()
        wait = (due - time.monotonic_ns()) / 1e9
        if wait > 0:
            select.select(socks, [], [], wait)
    stop = time.monotonic_ns() + 150_000_000
    while time.monotonic_ns() < stop:
        select.select(socks, [], [], 0.01)
        receive()
    cpu = (time.process_time() - cpu0) / (time.monotonic() - wall0)
    arr = np.concatenate(delays) / 1e6 if delays else np.zeros(1)
    if len(arr) == 0:
        arr = np.zeros(1)
    print(
        json.dumps(
            {
                "sent": sent,
                "received": received,
                "lost": max(0, sent - received),
                "late": late,
                "p50_ms": float(np.percentile(arr, 50)),
                "p99_ms": float(np.percentile(arr, 99)),
                "digits_sent": digits_sent,
                "gen_cpu": cpu,
                "seconds": args.seconds,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
