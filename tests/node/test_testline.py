"""The test line call's state machine: its table, and the paths the node tests do not take."""

from __future__ import annotations

import pytest

from softswitch import fsm
from softswitch.node.node import Node
from softswitch.node.testline import TABLE, LineCallError, LineCallInput, LineCallState
from softswitch.sip.message import Request, Response
from softswitch.sip.parser import parse_message
from tests.node.test_node import PEER, TESTLINE, invite_test_line, make_test_line_node, sip


def split(node: Node) -> tuple[list[Request], list[Response]]:
    requests: list[Request] = []
    responses: list[Response] = []
    for data, _ in node.datagrams_to_send():
        msg = parse_message(data)
        if isinstance(msg, Request):
            requests.append(msg)
        else:
            assert isinstance(msg, Response)
            responses.append(msg)
    return requests, responses


def test_every_missing_pair_is_a_line_call_error() -> None:
    node = make_test_line_node()
    invite_test_line(node)
    [call] = node.test_lines._calls.values()
    missing = 0
    for state in LineCallState:
        for inp in LineCallInput:
            if TABLE.accepts(state, inp):
                continue
            call.state = state
            with pytest.raises(LineCallError) as info:
                node.test_lines._fire(call, inp, 1.0)
            assert info.value.state is state and info.value.input is inp
            assert call.state is state and node.datagrams_to_send() == []
            missing += 1
    assert missing == len(LineCallState) * len(LineCallInput) - len(TABLE)


def test_table_reaches_every_state_and_the_diagram_names_them() -> None:
    assert TABLE.reachable() == TABLE.states() == frozenset(LineCallState)
    assert issubclass(LineCallError, fsm.TransitionError) and TABLE.error is LineCallError
    text = TABLE.mermaid()
    for state in LineCallState:
        assert state.name in text


def test_hang_up_before_the_ack_keeps_sending_the_200_until_the_ack() -> None:
    node = make_test_line_node(hangup_after=0.2)
    ok = invite_test_line(node)
    [call] = node.test_lines._calls.values()
    node.handle_timer(0.2)
    requests, _ = split(node)
    assert [r.method for r in requests] == ["BYE"] and call.state is LineCallState.HANGING_UP
    node.handle_timer(0.5)  # RFC 3261 13.3.1.4: the 200 still goes until its ACK
    assert [r.status for r in split(node)[1]] == [200]
    node.receive_datagram(sip("ACK", TESTLINE, to_tag=ok.to.tag or ""), PEER, 0.6)
    node.handle_timer(1.5)
    requests_now, responses_now = split(node)
    assert responses_now == [] and {r.method for r in requests_now} <= {"BYE"}  # Timer E
    assert call.state is LineCallState.HANGING_UP and node.test_lines.active() == 1
    bye = requests[0]
    answer = (
        f"SIP/2.0 200 OK\r\nVia: {bye.vias[0]}\r\nFrom: {bye.from_}\r\nTo: {bye.to}\r\n"
        f"Call-ID: {bye.call_id}\r\nCSeq: {bye.cseq}\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    node.receive_datagram(answer, PEER, 1.6)
    assert node.test_lines.active() == 0


def test_caller_bye_before_the_ack_ends_the_call() -> None:
    node = make_test_line_node(hangup_after=30.0)
    ok = invite_test_line(node)
    bye = sip("BYE", TESTLINE, seq=2, to_tag=ok.to.tag or "", branch="z9hG4bK-bye")
    node.receive_datagram(bye, PEER, 0.1)
    assert [r.status for r in split(node)[1]] == [200]
    assert node.test_lines.active() == 0
    node.handle_timer(31.0)
    assert split(node)[0] == []  # no BYE of ours for a call already over
