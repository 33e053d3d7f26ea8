"""The node registers to the carrier: SIPp plays the registrar and checks the digest.

RFC 3261 sections 10.2 and 22.4 (REGISTER, 401, retry with Authorization), RFC 7616 / RFC 8760
(SHA-256 digest for SIP; the UAC picks the topmost challenge it supports), RFC 3261 section
17.1.2.2 (Timer E: a REGISTER without answer is retransmitted after T1 = 0.5 s).
"""

from __future__ import annotations

import pytest

from interop.conftest import NodeFactory, SippFactory
from interop.peers import SippResult, TracedMessage, check_authorization, free_port

pytestmark = pytest.mark.interop

USER, PASSWORD = "alice", "secret"


def run_registrar(
    start_node: NodeFactory, sipp: SippFactory, scenario: str, *, no_retrans: bool = False
) -> SippResult:
    """Start SIPp as registrar, then a node whose trunk points at it; wait for SIPp's verdict."""
    port = free_port()
    registrar = sipp(scenario, local_port=port, no_retrans=no_retrans, timeout_s=12).start()
    start_node(registrar_port=port)
    result = registrar.wait(15)
    assert result.returncode == 0, result.describe()
    return result


def challenge_and_answer(result: SippResult) -> tuple[TracedMessage, TracedMessage]:
    """The 401 SIPp sent and the REGISTER with Authorization that followed it."""
    challenge = next(m for m in result.messages if m.direction == "sent" and m.status == 401)
    authorized = [m for m in result.received(method="REGISTER") if m.header("Authorization")]
    assert authorized, "the node never sent REGISTER with Authorization"
    return challenge, authorized[0]


def assert_digest_ok(challenge_header: str, register: TracedMessage) -> None:
    authz = register.header("Authorization")
    assert authz is not None
    problems = check_authorization(
        authz, challenge_header, method="REGISTER", username=USER, password=PASSWORD
    )
    assert problems == [], f"{problems}\n{register.text}"


def test_register_md5_qop_auth_verified_by_sipp(start_node: NodeFactory, sipp: SippFactory) -> None:
    # registrar.xml fails (exit 1) unless SIPp's verifyauth accepts alice/secret.
    result = run_registrar(start_node, sipp, "registrar.xml")
    challenge, register = challenge_and_answer(result)
    chal = challenge.header("WWW-Authenticate")
    assert chal is not None
    assert_digest_ok(chal, register)
    first = result.received(method="REGISTER")[0]
    # RFC 3261 section 8.1.3.5: the retry is a new transaction of the same registration.
    assert register.header("Call-ID") == first.header("Call-ID")
    assert int((register.header("CSeq") or "0").split()[0]) > int(
        (first.header("CSeq") or "0").split()[0]
    )


def test_register_sha256_digest(start_node: NodeFactory, sipp: SippFactory) -> None:
    # SIPp 3.6.1 cannot verify SHA-256: the digest is recomputed here from SIPp's message log.
    result = run_registrar(start_node, sipp, "registrar_sha256.xml")
    challenge, register = challenge_and_answer(result)
    chal = challenge.header("WWW-Authenticate")
    assert chal is not None and "SHA-256" in chal
    assert_digest_ok(chal, register)


def test_register_prefers_topmost_sha256_over_md5(
    start_node: NodeFactory, sipp: SippFactory
) -> None:
    result = run_registrar(start_node, sipp, "registrar_sha256_md5.xml")
    challenge, register = challenge_and_answer(result)
    sha256 = next(c for c in challenge.headers("WWW-Authenticate") if "SHA-256" in c)
    assert_digest_ok(sha256, register)


def test_register_retransmitted_after_t1_when_lost(
    start_node: NodeFactory, sipp: SippFactory
) -> None:
    # The registrar ignores the first REGISTER; -nr makes SIPp hand the copy to the scenario.
    result = run_registrar(start_node, sipp, "registrar_lost.xml", no_retrans=True)
    first, copy = result.received(method="REGISTER")[:2]
    assert copy.text == first.text, "a retransmission must be the same request (17.1.2.2)"
    interval = copy.time - first.time
    assert 0.4 <= interval <= 0.8, f"Timer E fired after {interval:.3f} s, expected T1 = 0.5 s"
    challenge, register = challenge_and_answer(result)
    chal = challenge.header("WWW-Authenticate")
    assert chal is not None
    assert_digest_ok(chal, register)


def test_node_removes_its_binding_when_stopped(start_node: NodeFactory, sipp: SippFactory) -> None:
    port = free_port()
    registrar = sipp("registrar_unregister.xml", local_port=port, timeout_s=15).start()
    node = start_node(registrar_port=port)
    assert node.wait_for_log("registered", 5.0), node.log()[-2000:]
    assert node.stop() == 0
    result = registrar.wait(10)
    assert result.returncode == 0, result.describe()
    last = result.received(method="REGISTER")[-1]
    contact = last.header("Contact") or ""
    # RFC 3261 section 10.2.2: Expires: 0, or expires=0 on the Contact (or "*" with Expires 0).
    assert last.header("Expires") == "0" or "expires=0" in contact.replace(" ", ""), last.text
