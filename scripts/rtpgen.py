#!/usr/bin/env python3
"""Paced RTP load generator for the media benchmark (one process, no asyncio).

Usage: rtpgen.py --targets JSON --seconds S [--warmup W] [--digit-every S]

`--targets` is a JSON list of [port_a, port_b] pairs on 127.0.0.1 (one bridged call each):
every call has two streams, phone A -> port_a and phone B -> port_b, 172-byte PCMU packets
every 20 ms, each stream at its own random phase so the load is spread like real phones. All
phones share one UDP socket per direction (the engine latches that address per leg), and the
relayed packets come back to them. Each audio payload starts with the send time
(CLOCK_MONOTONIC ns, shared by all processes on the host), so the receiver measures the one-way
delay added by the relay. Phone A of every call sends an in-band DTMF digit every
`--digit-every` seconds (a 100 ms burst; these frames carry no timestamp).
With `--loopback` the packets go straight back to the generator's own sockets: the no-relay
run that shows what the generator itself can sustain.
Prints one JSON line: sent, received, lost, late (> 20 ms), delay p50/p99 (ms), digits sent,
generator CPU seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import socket
import struct
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from media.g711 import ulaw_encode  # noqa: E402
from media.tones import dtmf_tone  # noqa: E402

TICK_NS = 20_000_000
LATE_NS = 20_000_000
STAMP = struct.Struct("!Q")
HDR = struct.Struct("!BBHII")


def _digit_frames(digit: str) -> list[bytes]:
    pcm = np.concatenate([dtmf_tone(digit, 100, -6.0), np.zeros(800, dtype=np.int16)])
    return [ulaw_encode(f) for f in pcm.reshape(-1, 160)]


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
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 23)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 23)
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        socks.append(s)
    own = [s.getsockname() for s in socks]
    print(json.dumps({"addrs": own}), flush=True)
    # Wait for the server to point its legs at our addresses.
    sys.stdin.readline()
    rng = random.Random(1)
    digits = "0123456789*#"
    digit_frames = {d: _digit_frames(d) for d in digits}
    silence = b"\xff" * 160
    streams = []  # [phase_ns, sock_index, dest, ssrc, seq, ts, digit_queue, next_digit_ns]
    for i, (pa, pb) in enumerate(pairs):
        for side, port in ((0, pa), (1, pb)):
            dest = own[1 - side] if args.loopback else ("127.0.0.1", port)
            streams.append(
                [
                    rng.randrange(TICK_NS),
                    side,
                    dest,
                    (i << 1) | side,
                    rng.randrange(65536),
                    rng.randrange(1 << 32),
                    [],
                    rng.uniform(0.2, args.digit_every) if side == 0 else None,
                ]
            )
    streams.sort(key=lambda s: s[0])
    n_streams = len(streams)
    t0 = time.monotonic_ns() + 50_000_000
    measure_from = t0 + int(args.warmup * 1e9)
    end = measure_from + int(args.seconds * 1e9)
    sent = received = late = 0
    digits_sent = 0
    delays: list[int] = []
    cpu0 = time.process_time()
    tick = 0
    idx = 0
    sendto = [s.sendto for s in socks]
    recv = [s.recv for s in socks]
    while True:
        base = t0 + tick * TICK_NS
        now = time.monotonic_ns()
        if base >= end and idx == 0:
            break
        # Send every stream whose phase in this tick has passed.
        while idx < n_streams and base + streams[idx][0] <= now:
            st = streams[idx]
            idx += 1
            seq = st[4]
            st[4] = (seq + 1) & 0xFFFF
            ts = st[5]
            st[5] = (ts + 160) & 0xFFFFFFFF
            queue = st[6]
            nd = st[7]
            if nd is not None and not queue and now - t0 >= nd * 1e9 and base < end:
                d = digits[digits_sent % len(digits)]
                queue.extend(digit_frames[d])
                st[7] = nd + args.digit_every
                if base >= measure_from:
                    digits_sent += 1
            if queue:
                payload = queue.pop(0)
            else:
                payload = STAMP.pack(time.monotonic_ns()) + silence[8:]
            sendto[st[1]](HDR.pack(0x80, 0, seq, ts, st[3]) + payload, st[2])
            if base >= measure_from:
                sent += 1
        if idx >= n_streams:
            idx = 0
            tick += 1
        # Receive everything pending.
        for k in (0, 1):
            r = recv[k]
            while True:
                try:
                    data = r(2048)
                except BlockingIOError:
                    break
                arrival = time.monotonic_ns()
                stamp = STAMP.unpack_from(data, 12)[0]
                if data[20:24] == b"\xff\xff\xff\xff" and t0 < stamp <= arrival:
                    if stamp >= measure_from and stamp < end:
                        received += 1
                        delay = arrival - stamp
                        delays.append(delay)
                        if delay > LATE_NS:
                            late += 1
                elif arrival >= measure_from and arrival < end:
                    received += 1
        nxt = t0 + tick * TICK_NS + (streams[idx][0] if idx < n_streams else TICK_NS)
        wait = (nxt - time.monotonic_ns()) / 1e9
        if wait > 0:
            select.select(socks, [], [], min(wait, 0.002))
    # Drain stragglers for 100 ms.
    stop = time.monotonic_ns() + 100_000_000
    while time.monotonic_ns() < stop:
        select.select(socks, [], [], 0.01)
        for r in recv:
            while True:
                try:
                    data = r(2048)
                except BlockingIOError:
                    break
                arrival = time.monotonic_ns()
                stamp = STAMP.unpack_from(data, 12)[0]
                if data[20:24] == b"\xff\xff\xff\xff" and measure_from <= stamp < end:
                    received += 1
                    delay = arrival - stamp
                    delays.append(delay)
                    if delay > LATE_NS:
                        late += 1
    cpu = time.process_time() - cpu0
    arr = np.array(delays or [0], dtype=np.float64) / 1e6
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
                "gen_cpu_s": cpu,
                "seconds": args.seconds,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
