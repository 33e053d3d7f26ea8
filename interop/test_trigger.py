"""Trigger calls from SIPp: ring, hang up, and the node's server transactions under loss.

A trigger call is never answered: 100/180, then the caller's CANCEL gets 200 and the INVITE 487
(RFC 3261 section 9.2), and the node logs "callback scheduled" once per call. Lost responses are
simulated by resending identical requests (SIPp -nr), lost ACKs by not sending them.
"""

from __future__ import annotations

import pytest

from interop.conftest import SippFactory
from interop.peers import TRIGGER_NUMBER, Node

pytestmark = pytest.mark.interop

SCHEDULED = "callback scheduled"
ABSORBED = "absorbed"  # softswitch.service.trigger: "a callback is already pending, absorbed"


def test_trigger_call_rings_and_is_cancelled(node: Node, sipp: SippFactory) -> None:
    result = sipp("invite_cancel.xml", remote=node.address, service=TRIGGER_NUMBER).run()
    assert result.returncode == 0, result.describe()
    assert [m.status for m in result.received(status=200)] == [200]
    assert result.received(status=200)[0].cseq_method == "CANCEL"
    (final,) = result.received(status=487)
    assert final.cseq_method == "INVITE"
    # Never a 2xx for the INVITE of a trigger: the number is only rung.
    assert not [
        m for m in result.received() if m.cseq_method == "INVITE" and 200 <= (m.status or 0) < 300
    ]
    assert node.wait_for_log(SCHEDULED, 3.0), node.log()[-2000:]
    assert node.count(SCHEDULED) == 1


def test_burst_of_trigger_calls_schedules_one_callback(node: Node, sipp: SippFactory) -> None:
    # 40 customers' worth of triggers on one number while its callback is pending: every call
    # is handled (SIPp: all successful) and all but the first are absorbed, not duplicated.
    calls = 40
    result = sipp(
        "invite_cancel.xml", remote=node.address, service=TRIGGER_NUMBER, calls=calls, rate=100
    ).run()
    assert result.returncode == 0, result.describe()
    assert result.stat("SuccessfulCall") == calls
    assert result.stat("Retransmissions") == 0, "the node lost or delayed messages at 100 calls/s"
    assert node.wait_for_log(ABSORBED, 5.0, count=calls - 1), node.log()[-2000:]
    assert node.count(SCHEDULED) == 1


def test_retransmitted_invite_and_cancel_are_absorbed(node: Node, sipp: SippFactory) -> None:
    result = sipp(
        "retransmission.xml", remote=node.address, service=TRIGGER_NUMBER, no_retrans=True
    ).run()
    assert result.returncode == 0, result.describe()
    ringing = result.received(status=180)
    assert len(ringing) == 2
    # 17.2.1: the copy gets the most recent provisional response again, To tag included.
    assert ringing[1].header("To") == ringing[0].header("To")
    oks = result.received(status=200)
    assert len(oks) == 2 and oks[0].text == oks[1].text, "17.2.2: the same 200 for the CANCEL copy"
    assert len(result.received(status=487)) == 1, "the ACKed 487 was retransmitted"
    assert node.wait_for_log(SCHEDULED, 3.0)
    # One INVITE transaction, so one callback, however many copies arrived.
    assert node.count(SCHEDULED) == 1


def test_487_retransmitted_until_acked(node: Node, sipp: SippFactory) -> None:
    result = sipp(
        "invite_487_lost_ack.xml", remote=node.address, service=TRIGGER_NUMBER, no_retrans=True
    ).run()
    assert result.returncode == 0, result.describe()
    first, again = result.received(status=487)
    assert again.text == first.text
    interval = again.time - first.time
    assert 0.4 <= interval <= 0.8, f"Timer G fired after {interval:.3f} s, expected T1 = 0.5 s"
    assert node.count(SCHEDULED) == 1
