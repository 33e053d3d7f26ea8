"""Malformed requests in the style of RFC 4475 (SIP torture tests), sent over UDP by hand.

Each must get the status RFC 4475 names for it (or, where no response can be addressed, none),
and the node must keep serving: an OPTIONS afterwards still gets 200. All tests of the module
share one node, so it has to survive every case in turn.
"""

from __future__ import annotations

import pytest

from interop.peers import Node, UdpClient, status_of

pytestmark = pytest.mark.interop


def build(ua: UdpClient, node: Node, case: str) -> bytes:
    port = node.port
    if case == "badvers":  # RFC 4475 "badvers": unknown SIP version -> 505
        return ua.request("OPTIONS", port, version="SIP/7.0")
    if case == "unksm":  # "unksm": unknown Request-URI scheme -> 416 (RFC 3261 8.2.2.1)
        return ua.request("OPTIONS", port, ruri="nobodyKnowsThisScheme:totallyopaquecontent")
    if case == "mismatch01":  # "mismatch01": CSeq method differs from the request's -> 400
        return ua.request("OPTIONS", port, cseq="1 INVITE")
    if case == "cseq-not-number":  # CSeq is 1*DIGIT LWS Method: no valid 400 can echo it
        return ua.request("OPTIONS", port, cseq="nine OPTIONS")
    if case == "no-call-id":  # like "insuf": RFC 4475 says "ideally" 400; dropping is allowed
        return ua.request("OPTIONS", port, omit=["Call-ID"])
    if case == "clerr":  # "clerr", RFC 3261 18.3: Content-Length beyond the datagram -> 400
        return ua.request("OPTIONS", port, body=b"short", content_length="9999")
    if case == "ncl":  # "ncl": negative Content-Length -> 400
        return ua.request("OPTIONS", port, content_length="-999")
    raise AssertionError(case)


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("badvers", 505),
        ("unksm", 416),
        ("mismatch01", 400),
        ("clerr", 400),
        ("ncl", 400),
    ],
)
def test_malformed_request_gets_status_and_node_survives(
    shared_node: Node, case: str, code: int
) -> None:
    node = shared_node
    with UdpClient() as ua:
        ua.send(node.port, build(ua, node, case))
        reply = ua.recv(2.0)
        assert reply is not None, f"no answer to {case}"
        assert status_of(reply) == code, reply.decode(errors="replace")
        assert_still_serving(ua, node)


@pytest.mark.parametrize(
    "datagram",
    [
        b"",
        b"\r\n\r\n",  # RFC 5626 keep-alive
        b"\x00\xff\xfe garbage \x80\x81" * 20,
        b"INVITE\r\n\r\n",
        b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 0\r\n\r\n",  # no Via: nowhere to answer
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKstray\r\n\r\n",
        "OPTIONS sip:\u00e9@127.0.0.1 SIP/2.0\r\n\r\n".encode("latin-1"),
        b"A" * 60000,
    ],
    ids=["empty", "crlf", "binary", "bare-method", "no-via", "stray-response", "latin1", "huge"],
)
def test_garbage_is_dropped_and_node_survives(shared_node: Node, datagram: bytes) -> None:
    node = shared_node
    with UdpClient() as ua:
        ua.send(node.port, datagram)
        reply = ua.recv(0.3)
        assert reply is None or status_of(reply) == 400, reply
        assert_still_serving(ua, node)


@pytest.mark.parametrize("case", ["cseq-not-number", "no-call-id"])
def test_unanswerable_request_gets_400_or_nothing(shared_node: Node, case: str) -> None:
    node = shared_node
    with UdpClient() as ua:
        ua.send(node.port, build(ua, node, case))
        reply = ua.recv(0.3)
        assert reply is None or status_of(reply) == 400, reply
        assert_still_serving(ua, node)


def assert_still_serving(ua: UdpClient, node: Node) -> None:
    ua.send(node.port, ua.request("OPTIONS", node.port, branch="z9hG4bK-after", call_id="after"))
    codes = []
    while (reply := ua.recv(2.0)) is not None:
        codes.append(status_of(reply))
        if codes[-1] == 200:
            break
    assert 200 in codes, f"OPTIONS after the bad message got {codes}"
    assert node.alive()
