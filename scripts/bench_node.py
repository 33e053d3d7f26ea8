"""CPU cost of one trigger call inside the node, without sockets (a profile aid).

Feeds a node the bytes SIPp sends for N trigger calls (interop/scenarios/invite_cancel.xml:
INVITE, CANCEL, ACK; each call with its own caller number, tag, branch and Call-ID), drains what
it answers (100, 180, 200, 487) and steps its timers to the end (Timer J, I ...), then prints
microseconds of CPU per call. Baseline in the same run: parsing and serializing the same messages
alone. The garbage collector runs as in ``softswitch serve``: the youngest generation every
0.1 s of the fake clock (at 2,500 calls/s), survivors frozen (softswitch.aio.collector).

``--service`` runs the call controller too, as ``softswitch serve`` does (a static trigger: no
account, so no store or media work), and ``--log`` adds the node's INFO log lines, formatted as
``softswitch serve`` formats them, written to /dev/null. ``--profile`` prints the top functions
(cProfile: call counts are exact, times are inflated); ``py-spy record -- python
scripts/bench_node.py`` gives undistorted shares.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import sys
import time

from softswitch.aio.collector import YOUNG_INTERVAL, Collector
from softswitch.config import Config
from softswitch.node.node import Node
from softswitch.sip.message import Address
from softswitch.sip.parser import parse_message
from softswitch.sip.serializer import serialize

TRIGGER = "815012345678"
NODE = "127.0.0.1:5060"
PEER = Address("127.0.0.1", 5999)
SDP = (
    "v=0\r\no=carrier 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n"
)


def messages(i: int) -> tuple[bytes, bytes, bytes]:
    """Call ``i``'s INVITE, CANCEL and ACK, as SIPp's invite_cancel.xml writes them."""
    via = f"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-4242-{i}-inv;rport\r\n"
    caller = f"8150000{i}"
    from_ = f"From: <sip:{caller}@127.0.0.1:5999>;tag=4242SIPpTag00{i}\r\n"
    to = f"To: <sip:{TRIGGER}@{NODE}>"
    call_id = f"Call-ID: {i}-4242@127.0.0.1\r\n"
    start = f"sip:{TRIGGER}@{NODE} SIP/2.0\r\n"
    invite = (
        f"INVITE {start}{via}{from_}{to}\r\n{call_id}CSeq: 1 INVITE\r\n"
        f"Contact: <sip:{caller}@127.0.0.1:5999;transport=UDP>\r\nMax-Forwards: 70\r\n"
        "User-Agent: SIPp interop trigger\r\nContent-Type: application/sdp\r\n"
        f"Content-Length: {len(SDP)}\r\n\r\n{SDP}"
    ).encode()
    cancel = (
        f"CANCEL {start}{via}{from_}{to}\r\n{call_id}CSeq: 1 CANCEL\r\nMax-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    ack = (
        f"ACK {start}{via}{from_}{to};tag={{tag}}\r\n{call_id}CSeq: 1 ACK\r\n"
        "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    return invite, cancel, ack


def make_node(service: bool) -> Node:
    node = Node(Config(trigger_numbers=(TRIGGER,)), service=service)
    node.start(0.0)
    while node.next_event() is not None:
        pass  # the controller's start-up store requests: nothing answers them here
    return node


def to_tag(answers: list[tuple[bytes, Address]]) -> bytes:
    """The To tag of the node's answers (the ACK for the 487 carries it)."""
    for data, _ in answers:
        at = data.find(b";tag=", data.find(b"\r\nTo:"))
        if at >= 0:
            return data[at + 5 : data.find(b"\r\n", at)]
    raise ValueError("no To tag in the answers")


#: The fake clock's step per call: 2,500 calls/s, the signalling target.
STEP = 0.0004
COLLECTOR = Collector()


def run_node(n: int, *, service: bool = False) -> float:
    """CPU seconds per trigger call."""
    node = make_node(service)
    calls = [messages(i) for i in range(n)]
    now = 0.0
    young_every = round(YOUNG_INTERVAL / STEP)
    start = time.process_time()
    for i, (invite, cancel, ack) in enumerate(calls):
        now += STEP
        if i % young_every == 0:
            COLLECTOR.collect_young()
        node.receive_datagram(invite, PEER, now)
        node.datagrams_to_send()
        node.receive_datagram(cancel, PEER, now)
        answers = node.datagrams_to_send()
        node.receive_datagram(ack.replace(b"{tag}", to_tag(answers)), PEER, now)
        while (t := node.get_timer()) is not None and t <= now:
            node.handle_timer(now)
        while node.next_event() is not None:
            pass
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
    parser.add_argument("--service", action="store_true", help="run the call controller")
    parser.add_argument("--log", action="store_true", help="INFO log lines to /dev/null")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    if args.log:
        from softswitch.cli.app import setup_logging

        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (for the rest of the run)
        setup_logging("INFO")
    gc.disable()
    gc.collect()
    gc.freeze()
    if args.profile:
        cProfile.runctx(
            "run_node(n, service=service)",
            globals(),
            {"n": args.n, "service": args.service},
            "/tmp/bench_node.prof",
        )
        pstats.Stats("/tmp/bench_node.prof").sort_stats("tottime").print_stats(25)
        return
    node = min(run_node(args.n, service=args.service) for _ in range(3))
    floor = run_parse_only(args.n)
    what = (
        "node"
        + (" + call controller" if args.service else "")
        + (" + INFO log" if args.log else "")
    )
    print(f"{what}, one trigger call (INVITE 100 180 CANCEL 200 487 ACK): {node * 1e6:7.1f} us CPU")
    print(f"baseline: parse 3 + serialize 4 messages only: {floor * 1e6:7.1f} us CPU")
    print(f"=> at most {1 / node:,.0f} trigger calls/s per core inside the node (no socket I/O)")


if __name__ == "__main__":
    main()
