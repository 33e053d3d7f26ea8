"""The endpoint's hooks for the node's caps (counts, retransmission look-up, stateless 503),
and what the hostile-SIP fuzzing found in it."""

from __future__ import annotations

from softswitch.sip.endpoint import Endpoint, EndpointConfig
from softswitch.sip.message import Address, Request, Response
from softswitch.sip.parser import parse_message

PEER = Address("127.0.0.1", 5999)


def invite(branch: str = "z9hG4bK-1", method: str = "INVITE") -> Request:
    msg = parse_message(
        (
            f"{method} sip:100@127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 10.0.0.9:5070;branch={branch};rport\r\n"
            "From: <sip:200@127.0.0.1>;tag=f\r\nTo: <sip:100@127.0.0.1>\r\n"
            f"Call-ID: c1\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(msg, Request)
    return msg


def test_counts_and_finds_live_server_transactions() -> None:
    ep = Endpoint(EndpointConfig())
    assert ep.server_transaction_count == 0
    ep.receive_message(invite(), PEER, 0.0)
    assert ep.server_transaction_count == 1
    assert ep.find_server(invite()) is not None
    assert ep.find_server(invite("z9hG4bK-2")) is None
    assert ep.allowed("127.0.0.1") and not ep.allowed("192.0.2.1")


def test_reject_is_stateless_and_goes_where_the_via_says() -> None:
    ep = Endpoint(EndpointConfig())
    ep.reject(invite(), 503, PEER, headers=(("Retry-After", "30"),))
    ep.reject(invite(method="ACK"), 503, PEER)  # an ACK is never answered
    assert ep.server_transaction_count == 0
    ((data, dest),) = ep.datagrams_to_send()
    answer = parse_message(data)
    assert isinstance(answer, Response) and answer.status == 503
    assert answer.header("Retry-After") == "30" and answer.to.tag
    assert answer.vias[0].received == "127.0.0.1" and answer.vias[0].rport == "5999"
    assert dest == Address("127.0.0.1", 5999)


def test_an_unreadable_content_type_is_400_and_holds_nothing_for_good() -> None:
    # Found by the fuzzing suite: it raised ValueError out of the endpoint, and the INVITE's
    # server transaction stayed in Proceeding for ever (no timer ends that state).
    ep = Endpoint(EndpointConfig())
    data = invite().__bytes__().replace(b"Content-Length: 0\r\n", b"")
    msg = parse_message(data.rstrip(b"\r\n") + b"\r\nContent-Type: application\r\n\r\nv=0\r\n")
    assert isinstance(msg, Request) and msg.body
    ep.receive_message(msg, PEER, 0.0)
    ((answer, _),) = ep.datagrams_to_send()
    response = parse_message(answer)
    assert isinstance(response, Response) and response.status == 400
    assert response.reason == "Bad Content-Type"
    ep.handle_timer(64.0)
    assert ep.server_transaction_count == 0


def test_a_received_parameter_the_sender_wrote_is_replaced_by_its_source() -> None:
    # Found by the fuzzing suite: with its sent-by equal to the source, a Via's own
    # ";received=192.0.2.1" was kept, and the answer went to 192.0.2.1 (a reflection).
    ep = Endpoint(EndpointConfig())
    data = bytes(invite()).replace(b";rport", b";rport;received=192.0.2.1")
    data = data.replace(b"10.0.0.9:5070", b"127.0.0.1:5070")
    msg = parse_message(data.replace(b"INVITE", b"OPTIONS"))
    assert isinstance(msg, Request) and msg.vias[0].received == "192.0.2.1"
    ep.receive_message(msg, PEER, 0.0)
    ((answer, dest),) = ep.datagrams_to_send()
    assert dest == Address("127.0.0.1", 5999)
    response = parse_message(answer)
    assert isinstance(response, Response)
    assert response.vias[0].received == "127.0.0.1" and b"192.0.2.1" not in answer


def test_a_require_that_is_not_tokens_is_400_and_holds_nothing_for_good() -> None:
    # Found by the fuzzing suite (headers/require-bad-token): "Require: tim:er" raised
    # ValueError out of the endpoint (parse_token_list), nothing was answered, and the
    # request's server transaction stayed in Trying or Proceeding for good.
    for method in ("OPTIONS", "INVITE", "BYE"):
        ep = Endpoint(EndpointConfig())
        data = bytes(invite(method=method)).replace(b"\r\n\r\n", b"\r\nRequire: tim:er\r\n\r\n")
        msg = parse_message(data)
        assert isinstance(msg, Request) and msg.header("Require") == "tim:er"
        ep.receive_message(msg, PEER, 0.0)
        ((answer, _),) = ep.datagrams_to_send()
        response = parse_message(answer)
        assert isinstance(response, Response) and response.status == 400, method
        assert response.reason == "Bad Require"
        ep.handle_timer(64.0)
        assert ep.server_transaction_count == 0


def test_a_bare_cr_inside_a_header_is_answered_400_not_raised() -> None:
    # Found by the fuzzing suite (random/seed11-114): 'From: "Hos\rtile Peer" ...' was read as
    # a 400 (bare CR), but the From kept for the answer still had the CR, the serializer
    # refused it, and ValueError went out of the endpoint instead of the 400.
    ep = Endpoint(EndpointConfig())
    data = bytes(invite(method="OPTIONS")).replace(b"From: <sip:", b'From: "a\rb" <sip:')
    ep.receive_datagram(data, PEER, 0.0)
    ((answer, _),) = ep.datagrams_to_send()
    response = parse_message(answer)
    assert isinstance(response, Response) and response.status == 400
    assert b"\r" not in answer.replace(b"\r\n", b"")


def test_an_answer_never_goes_to_a_port_out_of_range() -> None:
    # Found by a long random fuzz run: a malformed request's Via "127.0.0.1:99999" (no rport)
    # was recovered to answer its 400, the 400 went to port 99999, asyncio's sendto raised
    # inside the transport and closed the node's UDP socket: the node was deaf for good.
    # And "rport=99999" written by the sender was kept and answered to.
    src = Address("127.0.0.1", 45999)
    for via in ("127.0.0.1:99999", "127.0.0.1:45999;rport=99999", "127.0.0.1:45999;rport=5"):
        ep = Endpoint(EndpointConfig())
        data = bytes(invite(method="OPTIONS")).replace(b"10.0.0.9:5070;rport", via.encode())
        ep.receive_datagram(data, src, 0.0)
        ((answer, dest),) = ep.datagrams_to_send()
        assert dest == src, via
        response = parse_message(answer)
        assert isinstance(response, Response) and response.status in (200, 400)
        assert b"99999" not in answer or response.status == 400
