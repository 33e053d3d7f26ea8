"""Memory a trigger call holds while its server transactions linger (a measuring aid).

Drives N trigger calls through the sans-IO node exactly as scripts/bench_node.py does (the
bytes of interop/scenarios/invite_cancel.xml: INVITE, CANCEL, ACK; 100, 180, 200, 487
answered), all inside one second of the fake clock, so that afterwards every call still has
its CANCEL's transaction waiting out Timer J (32 s) and its INVITE's waiting out Timer I (5 s).
Then it reports, per call, what tracemalloc counts as allocated and how many objects the
garbage collector tracks (what young collections walk until they are promoted, and what full
collections walk), at three points of the fake clock:

- both lingering (right after the calls),
- CANCEL only (after Timer I, before Timer J),
- none (after Timer J): what is left is not the calls' (caches of the parser and endpoint),

each as the difference to the same figure at the end (after Timer J), so caches that keep
what they keep do not count against the transactions. ``--service`` runs the call controller
too (a static trigger), as ``softswitch serve`` does.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_node import PEER, make_node, messages, to_tag

from softswitch.node.node import Node


def settle(node: Node, until: float) -> None:
    while (t := node.get_timer()) is not None and t <= until:
        node.handle_timer(t)
        node.datagrams_to_send()
        while node.next_event() is not None:
            pass


def snapshot() -> tuple[int, int]:
    gc.collect()
    return tracemalloc.get_traced_memory()[0], len(gc.get_objects())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=5000)
    parser.add_argument("--service", action="store_true", help="run the call controller")
    args = parser.parse_args()
    n = args.n
    node = make_node(service=args.service)
    calls = [messages(i) for i in range(n)]
    step = 1.0 / n
    tracemalloc.start()
    now = 0.0
    for invite, cancel, ack in calls:
        now += step
        node.receive_datagram(invite, PEER, now)
        node.datagrams_to_send()
        node.receive_datagram(cancel, PEER, now)
        answers = node.datagrams_to_send()
        node.receive_datagram(ack.replace(b"{tag}", to_tag(answers)), PEER, now)
        settle(node, now)
        node.datagrams_to_send()
    held = node.endpoint.server_transaction_count
    both = snapshot()
    settle(node, now + 10.0)  # Timer I (5 s) fired, Timer J (32 s) not yet
    held_cancel = node.endpoint.server_transaction_count
    cancel_only = snapshot()
    settle(node, now + 100.0)
    none = snapshot()
    left = node.endpoint.server_transaction_count
    del calls
    print(f"{n} trigger calls; server transactions held: {held}, after Timer I: "
          f"{held_cancel}, after Timer J: {left}")  # fmt: skip
    for name, (size, objects) in (("both lingering", both), ("CANCEL only", cancel_only)):
        print(
            f"{name:>15}: {(size - none[0]) / n:7.0f} bytes/call (tracemalloc), "
            f"{(objects - none[1]) / n:5.1f} gc-tracked objects/call"
        )


if __name__ == "__main__":
    main()
