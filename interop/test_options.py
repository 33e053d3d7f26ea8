"""Out-of-dialog requests against the node: OPTIONS from SIPp, other methods by hand.

RFC 3261 section 11 (OPTIONS answered like an INVITE would be, with Allow), 8.2.1 (405 with
Allow for a known method we do not support, 501 for an unknown one) and 8.2.2.1 (404 for a
Request-URI we do not serve).
"""

from __future__ import annotations

import pytest

from interop.conftest import SippFactory
from interop.peers import Node, UdpClient, header_of, status_of

pytestmark = pytest.mark.interop


@pytest.mark.parametrize("transport", ["u1", "t1"], ids=["udp", "tcp"])
def test_options_ping_gets_200_with_allow(node: Node, sipp: SippFactory, transport: str) -> None:
    result = sipp("options.xml", remote=node.address, transport=transport, calls=3, rate=50).run()
    assert result.returncode == 0, result.describe()
    assert result.stat("SuccessfulCall") == 3
    assert node.alive()


@pytest.mark.parametrize(
    ("method", "code"),
    [("FOO", 501), ("SUBSCRIBE", 405), ("MESSAGE", 405)],
)
def test_unsupported_methods_are_refused_with_allow(node: Node, method: str, code: int) -> None:
    with UdpClient() as ua:
        ua.send(node.port, ua.request(method, node.port, extra=["Event: presence"]))
        reply = ua.recv(2.0)
    assert reply is not None, f"no answer to {method}"
    assert status_of(reply) == code, reply.decode(errors="replace")
    allow = header_of(reply, "Allow")
    assert allow is not None and "INVITE" in allow and method not in allow


def test_invite_to_unknown_number_gets_404(node: Node) -> None:
    unknown = f"sip:19998887777@127.0.0.1:{node.port}"
    with UdpClient() as ua:
        ua.send(node.port, ua.request("INVITE", node.port, ruri=unknown))
        replies = ua.recv_all(1.0)
        finals = [r for r in replies if (status_of(r) or 0) >= 200]
        assert finals, [r[:40] for r in replies]
        assert status_of(finals[0]) == 404
        # ACK the 404 so the node's Timer G retransmissions stop (RFC 3261 17.1.1.3).
        to = header_of(finals[0], "To")
        ua.send(node.port, ua.request("ACK", node.port, ruri=unknown, cseq="1 ACK", to=to))
    assert node.alive()
