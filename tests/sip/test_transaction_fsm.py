"""Every (state, input) pair of the four transaction machines, driven through the real layer.

Hypothesis feeds random input sequences to each machine (over UDP and TCP) and checks after
every step: the state is the one the table names (or the input had no entry, was rejected and
changed nothing); exactly the timers the state runs are armed; nothing is sent or armed after
Terminated and TransactionTerminated is reported exactly once. A breadth-first walk of each
table then drives a real transaction into every state.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from softswitch.sip.message import URI, Address, CSeq, NameAddr, Request, Response, Via
from softswitch.sip.timers import TimerConfig
from softswitch.sip.transaction import (
    ALL_MACHINES,
    ClientTransaction,
    Input,
    InviteClientState,
    InviteClientTransaction,
    InviteServerState,
    InviteServerTransaction,
    NonInviteClientState,
    NonInviteClientTransaction,
    NonInviteServerState,
    NonInviteServerTransaction,
    ProtocolError,
    RequestReceived,
    ServerTransaction,
    Transaction,
    TransactionLayer,
    TransactionTerminated,
    make_ack_for_non2xx,
    make_response,
    mermaid,
)

PEER = Address("127.0.0.1", 5070)
PEER_TCP = Address("127.0.0.1", 5070, "TCP")
STATUS = {
    Input.RECV_1XX: 180,
    Input.RECV_2XX: 200,
    Input.RECV_3XX_6XX: 486,
    Input.SEND_1XX: 180,
    Input.SEND_2XX: 200,
    Input.SEND_3XX_6XX: 486,
}


def make_request(method: str, transport: str) -> Request:
    return Request(
        method=method,
        uri=URI(user="bob", host="127.0.0.1"),
        vias=(Via(transport, "127.0.0.1", 5060, (("branch", "z9hG4bK-fsm"),)),),
        from_=NameAddr(URI(user="alice", host="127.0.0.1"), params=(("tag", "f"),)),
        to=NameAddr(URI(user="bob", host="127.0.0.1")),
        call_id="fsm@127.0.0.1",
        cseq=CSeq(1, method),
        headers=(("Max-Forwards", "70"),),
    )


@dataclass
class Harness:
    machine: type[Transaction]
    reliable: bool
    trying_delay: float | None = None
    layer: TransactionLayer = field(init=False)
    tx: Transaction = field(init=False)
    now: float = 0.0
    terminated_events: int = 0

    def __post_init__(self) -> None:
        self.layer = TransactionLayer(TimerConfig(trying_delay=self.trying_delay))
        addr = PEER_TCP if self.reliable else PEER
        method = (
            "INVITE"
            if self.machine in (InviteClientTransaction, InviteServerTransaction)
            else "BYE"
        )
        req = make_request(method, addr.transport)
        if issubclass(self.machine, ClientTransaction):
            self.tx = self.layer.send_request(req, addr, 0.0)
        else:
            self.layer.receive_request(req, addr, 0.0)
            ev = self.layer.next_event()
            assert isinstance(ev, RequestReceived)
            self.tx = ev.tx
        assert type(self.tx) is self.machine
        self.drain()

    @property
    def addr(self) -> Address:
        return PEER_TCP if self.reliable else PEER

    def drain(self) -> list[tuple[Any, Address]]:
        while (ev := self.layer.next_event()) is not None:
            if isinstance(ev, TransactionTerminated) and ev.tx is self.tx:
                self.terminated_events += 1
        return self.layer.messages_to_send()

    def apply(self, inp: Input) -> bool:
        """Feed ``inp``; False when it was rejected as having no entry."""
        tx, layer = self.tx, self.layer
        self.now += 0.001
        errors = layer.stats["protocol_errors"]
        if inp.is_timer:
            deadline = tx.deadline(inp)
            if deadline is None:
                if not tx.accepts(inp):
                    with pytest.raises(ProtocolError):
                        tx._input(inp, self.now)
                # else: allowed in this state but not running (Timer A on TCP): nothing to do.
                return False
            self.now = deadline
            layer.handle_timer(deadline)
            return True
        if inp is Input.TRANSPORT_ERROR:
            return layer.transport_error(tx, self.now)
        if isinstance(tx, ClientTransaction) and inp in (
            Input.RECV_1XX,
            Input.RECV_2XX,
            Input.RECV_3XX_6XX,
        ):
            if tx.terminated:
                return self._direct(inp)
            response = make_response(tx.request, STATUS[inp], to_tag="t")
            layer.receive_response(response, self.addr, self.now)
            return layer.stats["protocol_errors"] == errors
        if isinstance(tx, ServerTransaction) and inp.name.startswith("SEND_"):
            response = make_response(tx.request, STATUS[inp], to_tag="t")
            try:
                layer.send_response(tx, response, self.now)
            except ProtocolError:
                return False
            return True
        if isinstance(tx, ServerTransaction) and not tx.terminated:
            if inp is Input.RECV_REQUEST:
                layer.receive_request(tx.request, self.addr, self.now)
                return layer.stats["protocol_errors"] == errors
            if inp is Input.RECV_ACK and isinstance(tx, InviteServerTransaction):
                final = tx.last_response or make_response(tx.request, 486, to_tag="t")
                layer.receive_request(make_ack_for_non2xx(tx.request, final), self.addr, self.now)
                return layer.stats["protocol_errors"] == errors
        return self._direct(inp)

    def _direct(self, inp: Input) -> bool:
        try:
            self.tx._input(inp, self.now)
        except ProtocolError:
            return False
        return True


def required_timers(tx: Transaction) -> set[Input] | None:
    """Exactly the timers ``tx`` must be running now (None: not fully determined)."""
    udp = not tx.reliable
    s = tx.state
    need: dict[Enum, set[Input]] = {
        InviteClientState.CALLING: {Input.TIMER_B} | ({Input.TIMER_A} if udp else set()),
        InviteClientState.PROCEEDING: set(),
        InviteClientState.ACCEPTED: {Input.TIMER_M},
        InviteClientState.COMPLETED: {Input.TIMER_D},
        NonInviteClientState.TRYING: {Input.TIMER_F} | ({Input.TIMER_E} if udp else set()),
        NonInviteClientState.PROCEEDING: {Input.TIMER_F} | ({Input.TIMER_E} if udp else set()),
        NonInviteClientState.COMPLETED: {Input.TIMER_K},
        InviteServerState.ACCEPTED: {Input.TIMER_L},
        InviteServerState.COMPLETED: {Input.TIMER_H} | ({Input.TIMER_G} if udp else set()),
        InviteServerState.CONFIRMED: {Input.TIMER_I},
        NonInviteServerState.TRYING: set(),
        NonInviteServerState.PROCEEDING: set(),
        NonInviteServerState.COMPLETED: {Input.TIMER_J},
    }
    if s is tx.TERMINATED:
        return set()
    return need.get(s)  # INVITE server Proceeding: the 100 timer may or may not run


def check_invariants(h: Harness, before: Enum, inp: Input, accepted: bool, out: list[Any]) -> None:
    tx = h.tx
    entry = type(tx).TABLE.entries.get((before, inp))
    if entry is None:
        assert not accepted, f"{inp} has no entry in {before} but was taken"
    if not accepted:
        assert tx.state is before, f"refused {inp} changed {before} -> {tx.state}"
        assert out == [], f"refused {inp} in {before} sent {out}"
    else:
        assert entry is not None
        expected = entry.target
        # A zero-length linger timer (TCP) may carry the transaction straight on to Terminated.
        assert tx.state is expected or (tx.reliable and tx.state is tx.TERMINATED), (
            f"{before} + {inp}: expected {expected}, got {tx.state}"
        )
    assert tx.armed_timers <= type(tx).TIMERS_IN[tx.state]
    required = required_timers(tx)
    if required is not None:
        assert set(tx.armed_timers) == required, f"{tx.state}: armed {tx.armed_timers}"
    for msg, dest in out:
        assert dest == h.addr
        if isinstance(tx, ClientTransaction):
            assert isinstance(msg, Request) and msg.method in (tx.request.method, "ACK")
        else:
            assert isinstance(msg, Response) and msg.cseq == tx.request.cseq
    if tx.terminated:
        assert h.terminated_events == 1
        assert tx not in h.layer.client_transactions.values()
        assert tx not in h.layer.server_transactions.values()
        assert not tx.armed_timers
    else:
        assert h.terminated_events == 0


def relevant(machine: type[Transaction]) -> list[Input]:
    return sorted({inp for (_, inp), _entry in machine.TABLE}, key=lambda i: i.name)


@pytest.mark.parametrize("machine", ALL_MACHINES, ids=lambda m: m.__name__)
@settings(max_examples=120, deadline=None)
@given(data=st.data(), reliable=st.booleans(), trying_delay=st.sampled_from([None, 0.0, 0.2]))
def test_random_inputs_stay_in_the_table(
    machine: type[Transaction], data: st.DataObject, reliable: bool, trying_delay: float | None
) -> None:
    # Mostly inputs the machine knows (so deep states are reached), sometimes any input at all.
    known = st.sampled_from(relevant(machine))
    inputs = data.draw(st.lists(st.one_of(known, known, known, st.sampled_from(list(Input))),
                                max_size=25))  # fmt: skip
    h = Harness(machine, reliable, trying_delay)
    for inp in inputs:
        before = h.tx.state
        was_terminated = h.tx.terminated
        accepted = h.apply(inp)
        out = h.drain()
        check_invariants(h, before, inp, accepted, out)
        if was_terminated:
            assert not accepted and out == []
    # Whatever happened, running the clock out ends every transaction and leaves nothing.
    h.layer.handle_timer(h.now + 1000.0)
    h.drain()
    if not h.tx.terminated:
        # Only states that wait for the TU or the peer have no timer; a transport error ends them.
        assert h.tx.state in (
            InviteClientState.PROCEEDING,
            InviteServerState.PROCEEDING,
            NonInviteServerState.TRYING,
            NonInviteServerState.PROCEEDING,
        )
        assert h.layer.transport_error(h.tx, h.now)
        h.drain()
    assert h.tx.terminated and h.terminated_events == 1
    assert h.layer.get_timer() is None
    assert not h.layer.client_transactions and not h.layer.server_transactions


def shortest_paths(machine: type[Transaction]) -> dict[Enum, list[Input]]:
    """For each state reachable in the table, the shortest input sequence from INITIAL."""
    paths: dict[Enum, list[Input]] = {machine.INITIAL: []}
    todo = deque([machine.INITIAL])
    while todo:
        state = todo.popleft()
        for (s, inp), entry in machine.TABLE:
            nxt = entry.target
            if s is state and nxt not in paths:
                paths[nxt] = [*paths[state], inp]
                todo.append(nxt)
    return paths


@pytest.mark.parametrize("machine", ALL_MACHINES, ids=lambda m: m.__name__)
def test_every_state_is_reachable_and_reached(machine: type[Transaction]) -> None:
    paths = shortest_paths(machine)
    assert set(paths) == set(type(machine.INITIAL)), "a state no transition leads to"
    for state, path in paths.items():
        h = Harness(machine, reliable=False, trying_delay=None)
        for inp in path:
            assert h.apply(inp), f"{machine.__name__}: {inp} refused on the way to {state}"
            h.drain()
        assert h.tx.state is state


@pytest.mark.parametrize("reliable", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize("machine", ALL_MACHINES, ids=lambda m: m.__name__)
def test_every_state_input_pair(machine: type[Transaction], reliable: bool) -> None:
    """Exhaustively: reach each state, feed each input, check the step against the table."""
    checked = 0
    for state, path in shortest_paths(machine).items():
        for inp in Input:
            h = Harness(machine, reliable, trying_delay=0.2)
            if not all(h.apply(step) and h.drain() is not None for step in path):
                continue  # not reachable this way on this transport (Timer A on TCP, ...)
            if h.tx.state is not state:
                continue  # a zero-length linger timer went on to Terminated
            accepted = h.apply(inp)
            check_invariants(h, state, inp, accepted, h.drain())
            checked += 1
    assert checked >= len(type(machine.INITIAL)) * len(Input) // (2 if reliable else 1)


@pytest.mark.parametrize("machine", ALL_MACHINES, ids=lambda m: m.__name__)
def test_terminated_has_no_transitions_and_every_state_has_a_way_out(
    machine: type[Transaction],
) -> None:
    sources = {s for (s, _), _entry in machine.TABLE}
    assert machine.TERMINATED not in sources
    # From every state Terminated is reachable (no machine can get stuck forever).
    for state in type(machine.INITIAL):
        seen, todo = {state}, [state]
        while todo:
            s = todo.pop()
            for (src, _inp), entry in machine.TABLE:
                nxt = entry.target
                if src is s and nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        assert machine.TERMINATED in seen, f"{machine.__name__}: stuck in {state}"


@pytest.mark.parametrize("machine", ALL_MACHINES, ids=lambda m: m.__name__)
def test_missing_pairs_raise_and_change_nothing(machine: type[Transaction]) -> None:
    """Every (state, input) pair the table lacks is a ProtocolError, from any state."""
    table = machine.TABLE
    assert table.initial == {machine.INITIAL} and table.final == {machine.TERMINATED}
    assert table.error is ProtocolError
    missing = 0
    for state in type(machine.INITIAL):
        for inp in Input:
            if table.accepts(state, inp):
                continue
            h = Harness(machine, reliable=False)
            h.tx.state = state
            with pytest.raises(ProtocolError) as info:
                h.tx._input(inp, 1.0)
            assert info.value.state is state and info.value.input is inp
            assert h.tx.state is state and h.drain() == []
            missing += 1
    assert missing == len(type(machine.INITIAL)) * len(Input) - len(table)


@pytest.mark.parametrize("machine", ALL_MACHINES, ids=lambda m: m.__name__)
def test_table_reaches_every_state_and_has_one_target_per_entry(
    machine: type[Transaction],
) -> None:
    table = machine.TABLE
    assert table.reachable() == table.states() == frozenset(type(machine.INITIAL))
    assert all(len(entry.targets) == 1 for _, entry in table)


def test_diagram_lists_every_transition() -> None:
    for machine in ALL_MACHINES:
        text = mermaid(machine)
        assert text == machine.TABLE.mermaid()
        edges = {(s, entry.target) for (s, _), entry in machine.TABLE}
        assert text.count("-->") == len(edges) + 2
        for state in type(machine.INITIAL):
            assert state.name in text
    assert "COMPLETED --> CONFIRMED: ACK" in mermaid(InviteServerTransaction)
    assert "CALLING --> CALLING: Timer A" in mermaid(InviteClientTransaction)
    assert NonInviteClientTransaction.TIMERS_IN[NonInviteClientState.PROCEEDING] == {
        Input.TIMER_E,
        Input.TIMER_F,
    }
    assert NonInviteServerTransaction.TIMERS_IN[NonInviteServerState.TRYING] == frozenset()
