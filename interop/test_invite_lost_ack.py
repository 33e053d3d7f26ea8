"""2xx retransmission when the caller's ACK is lost (RFC 3261 section 13.3.1.4, RFC 6026).

The node answers INVITEs to its test lines (``[[test_number]]``): 200 with an inactive SDP
answer. SIPp withholds the first ACK; the node's UAS core must send the same 200 again after
T1 and stop once the ACK arrives; then SIPp hangs up with BYE and gets 200.
"""

from __future__ import annotations

import pytest

from interop.conftest import NodeFactory, SippFactory

pytestmark = pytest.mark.interop

TEST_LINE = "815099990000"


def test_200_retransmitted_until_ack(start_node: NodeFactory, sipp: SippFactory) -> None:
    node = start_node(test_numbers=[(TEST_LINE, 0)])
    result = sipp(
        "invite_lost_ack.xml", remote=node.address, service=TEST_LINE, no_retrans=True
    ).run()
    assert result.returncode == 0, result.describe()
    oks = [m for m in result.received(status=200) if m.cseq_method == "INVITE"]
    assert len(oks) == 2, f"expected one retransmission of the 200, got {len(oks)} 200s"
    first, again = oks
    assert again.text == first.text
    interval = again.time - first.time
    assert 0.4 <= interval <= 0.8, f"2xx retransmitted after {interval:.3f} s, expected T1"
    assert "a=inactive" in first.text
    assert node.wait_for_log("ended by the caller", timeout=5), node.log()[-2000:]
