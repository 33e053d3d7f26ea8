"""Hostile input at the parser and the endpoint (issue 11): what the fuzzing suite found, and
Hypothesis properties over the mutation groups of ``interop/hostile.py``."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interop.hostile import BASES, TRIGGER, Peer, base, cases
from softswitch.config import Config
from softswitch.node.node import Node
from softswitch.sip.endpoint import Endpoint, EndpointConfig
from softswitch.sip.message import Address, BadMessage, Request, Response
from softswitch.sip.parser import StreamFramer, parse_message
from softswitch.sip.serializer import serialize

FOLDED = (
    b"OPTIONS sip:node@127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bK-f\r\n"
    b"From: <sip:a@127.0.0.1>;tag=f\r\nTo: <sip:node@127.0.0.1>\r\n"
    b"Call-ID: folded\r\nCSeq: 1 OPTIONS\r\nContent-Length:\r\n   4\r\n\r\nbody"
)


def test_the_framer_reads_a_folded_content_length() -> None:
    # Found by the fuzzing suite: on TCP a folded Content-Length (RFC 3261 7.3.1) was a
    # framing error (400 and the connection closed); the datagram parser unfolds it.
    framer = StreamFramer()
    first, second = framer.feed(FOLDED + FOLDED.replace(b"folded", b"again"))
    assert isinstance(first, Request) and first.body == b"body" and not framer.failed
    assert isinstance(second, Request) and second.call_id == "again"
    assert framer.buffered == 0


# --- Hypothesis over the mutation groups ------------------------------------------------------

PEER = Peer("127.0.0.1", 5999, "127.0.0.1", 5060)
SOURCE = Address("127.0.0.1", 5999)
#: Every case of every group, as a datagram and as a stream message.
DATAGRAMS = [c.data for c in cases(PEER)]
STREAMS = [c.data for c in cases(replace(PEER, transport="TCP"))]
#: What the parser may ask to answer (the rest is policy: the endpoint's 405, 415, 420 ...).
PARSER_STATUSES = {None, 400, 413, 416, 505}

Edits = list[tuple[int, bytes, int]]
edits = st.lists(
    st.tuples(st.integers(0, 4000), st.binary(max_size=6), st.integers(0, 6)), max_size=4
)


def edited(data: bytes, changes: Edits) -> bytes:
    buf = bytearray(data)
    for pos, insert, delete in changes:
        at = pos % (len(buf) + 1)
        buf[at : at + delete] = insert
    return bytes(buf)


def parses_cleanly(data: bytes, *, stream: bool = False) -> Request | Response | BadMessage:
    """parse_message's catch-all (a parser bug costs the message) must never be what answers."""
    result = parse_message(data, stream=stream)
    assert not (isinstance(result, BadMessage) and result.reason == "Unparsable message"), data
    return result


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(DATAGRAMS + STREAMS), edits, st.booleans())
def test_the_parser_reads_every_hostile_message_without_a_bug(
    data: bytes, changes: Edits, stream: bool
) -> None:
    result = parses_cleanly(edited(data, changes), stream=stream)
    if isinstance(result, BadMessage):
        assert result.status in PARSER_STATUSES
    elif isinstance(result, Request):
        # Whatever was accepted can be written out and read back the same.
        assert parses_cleanly(serialize(result)) == result


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(DATAGRAMS), edits)
def test_the_endpoint_answers_hostile_datagrams_with_well_formed_small_responses(
    data: bytes, changes: Edits
) -> None:
    """No exception; at most one datagram per datagram (the 100 of an INVITE waits for its
    timer); a response that reads back (unless it echoes, as RFC 3261 8.2.6.2 wants, a field
    of a request that did not read); and no amplification: an answer is never much longer than
    what it answers (a reflection attack gains little)."""
    endpoint = Endpoint(EndpointConfig())
    sent = edited(data, changes)
    endpoint.receive_datagram(sent, SOURCE, 0.0)
    out = endpoint.datagrams_to_send()
    assert len(out) <= 1
    for answer, _ in out:
        assert answer.startswith(b"SIP/2.0 ") and answer[8:11].isdigit()
        read = parses_cleanly(answer)
        assert isinstance(read, Response) or isinstance(parse_message(sent), BadMessage)
        assert len(answer) <= len(sent) + 512


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(DATAGRAMS), edits), min_size=1, max_size=25))
def test_after_any_hostile_datagrams_the_node_holds_nothing_once_its_timers_ran(
    sent: list[tuple[bytes, Edits]],
) -> None:
    """Memory stays flat, sans-IO: whatever a peer sends (never an ACK or a CANCEL of its
    own), every transaction, ringing trigger and dialog it started ends by a timer."""
    config = Config(trigger_numbers=(TRIGGER,))
    node = Node(config)
    for n, (data, changes) in enumerate(sent):
        node.receive_datagram(edited(data, changes), SOURCE, n * 0.01)
        node.datagrams_to_send()
    now = 1.0
    while (deadline := node.get_timer()) is not None and deadline < 1000:
        now = max(now, deadline)
        node.handle_timer(now)
        node.datagrams_to_send()
    assert node.held(now) == {
        "server_transactions": 0,
        "dialogs": 0,
        "ringing_triggers": 0,
        "banned_sources": 0,
    }


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.sampled_from(STREAMS), min_size=1, max_size=4),
    st.lists(st.integers(1, 400), max_size=12),
)
def test_tcp_segmentation_never_changes_what_the_framer_reads(
    messages: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(messages)
    whole = StreamFramer()
    expected = whole.feed(stream)
    pieces = StreamFramer()
    got: list[Request | Response | BadMessage] = []
    at = 0
    for size in cuts:
        got += pieces.feed(stream[at : at + size])
        at += size
    got += pieces.feed(stream[at:])
    assert got == expected
    assert (pieces.failed, pieces.buffered, pieces.pings) == (
        whole.failed,
        whole.buffered,
        whole.pings,
    )


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(DATAGRAMS), min_size=1, max_size=10))
def test_hostile_messages_never_poison_the_parse_caches(hostile: list[bytes]) -> None:
    """The parser caches Via, From/To, CSeq and request lines: nothing cached from a hostile
    message may change how a valid one reads afterwards."""
    valid = [base(kind, PEER, "k1x").render() for kind in BASES]
    before = [parse_message(v) for v in valid]
    for data in hostile:
        parse_message(data)
    assert [parse_message(v) for v in valid] == before
