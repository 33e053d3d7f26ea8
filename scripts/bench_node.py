"""CPU cost of one trigger call inside the node, without sockets (a profile aid).

Feeds a node the bytes SIPp would send for N trigger calls (INVITE, CANCEL, ACK), drains what
it answers (100, 180, 200, 487) and steps its timers to the end, then prints microseconds of CPU
per call. Baseline in the same run: parsing and serializing the same messages alone, which is
the floor any design on this parser pays. `--profile` prints the top functions.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

from softswitch.config import Config
from softswitch.node.node import Node
from softswitch.sip.message import Address
from softswitch.sip.parser import parse_message
from softswitch.sip.serializer import serialize

TRIGGER = "815012345678"
PEER = Address("127.0.0.1", 5999)


def messages(i: int) -> tuple[bytes, bytes, bytes]:
    head = (
        f"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-{i}-inv;rport\r\n"
        f"From: <sip:815000000001@127.0.0.1:5999>;tag={i}SIPpTag001\r\n"
        f"To: <sip:{TRIGGER}@127.0.0.1:5060>{{tag}}\r\n"
        f"Call-ID: {i}-1234@127.0.0.1\r\n"
    )
    sdp = (
        "v=0\r\no=carrier 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        "m=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n"
    )
    invite = (
        f"INVITE sip:{TRIGGER}@127.0.0.1:5060 SIP/2.0\r\n"
        + head.format(tag="")
        + "CSeq: 1 INVITE\r\nContact: <sip:815000000001@127.0.0.1:5999>\r\nMax-Forwards: 70\r\n"
        "User-Agent: SIPp\r\nContent-Type: application/sdp\r\n"
        f"Content-Length: {len(sdp)}\r\n\r\n{sdp}"
    ).encode()
    cancel = (
        f"CANCEL sip:{TRIGGER}@127.0.0.1:5060 SIP/2.0\r\n"
        + head.format(tag="")
        + "CSeq: 1 CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    ack = (
        f"ACK sip:{TRIGGER}@127.0.0.1:5060 SIP/2.0\r\n"
        + head.format(tag=";tag=x")
        + "CSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    return invite, cancel, ack


def run_node(n: int) -> float:
    node = Node(Config(trigger_numbers=(TRIGGER,)))
    calls = [messages(i) for i in range(n)]
    now = 0.0
    start = time.process_time()
    for invite, cancel, ack in calls:
        now += 0.0004
        node.receive_datagram(invite, PEER, now)
        node.datagrams_to_send()
        node.receive_datagram(cancel, PEER, now)
        node.datagrams_to_send()
        node.receive_datagram(ack, PEER, now)
        while (t := node.get_timer()) is not None and t <= now:
            node.handle_timer(now)
        node.datagrams_to_send()
    end = now + 100
    while (t := node.get_timer()) is not None and t <= end:
        node.handle_timer(t)
        node.datagrams_to_send()
    used = time.process_time() - start
    return used / n


def run_parse_only(n: int) -> float:
    calls = [messages(i) for i in range(n)]
    start = time.process_time()
    for invite, cancel, ack in calls:
        inv = parse_message(invite)
        can = parse_message(cancel)
        parse_message(ack)
        for _ in range(2):
            serialize(inv)  # type: ignore[arg-type]
            serialize(can)  # type: ignore[arg-type]
    return (time.process_time() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=20000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    if args.profile:
        cProfile.runctx("run_node(n)", globals(), {"n": args.n}, "/tmp/bench_node.prof")
        pstats.Stats("/tmp/bench_node.prof").sort_stats("tottime").print_stats(25)
        return
    node = run_node(args.n)
    floor = run_parse_only(args.n)
    print(f"node, one trigger call (INVITE 100 180 CANCEL 200 487 ACK): {node * 1e6:7.1f} us CPU")
    print(f"baseline: parse 3 + serialize 4 messages only:             {floor * 1e6:7.1f} us CPU")
    print(f"=> at most {1 / node:,.0f} trigger calls/s per core inside the node (no socket I/O)")


if __name__ == "__main__":
    main()
