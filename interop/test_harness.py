"""Self-tests of the interop harness: the digest checker and the SIPp scenarios' syntax.

The SIPp-against-SIPp run is not a test of the node; it proves that invite_cancel.xml and
uas_trigger.xml (the benchmark's pair) are valid scenarios, so a failure against the node is
the node's.
"""

from __future__ import annotations

import pytest

from interop.conftest import SippFactory
from interop.peers import check_authorization, digest_response, free_port, percentile

# RFC 7616 section 3.9.1: the same credentials with MD5 and SHA-256.
RFC7616 = {
    "username": "Mufasa",
    "realm": "http-auth@example.org",
    "password": "Circle of Life",
    "method": "GET",
    "uri": "/dir/index.html",
    "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    "qop": "auth",
    "nc": "00000001",
    "cnonce": "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
}


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_digest_response_matches_rfc7616_examples(algorithm: str, expected: str) -> None:
    assert digest_response(algorithm=algorithm, **RFC7616) == expected


def test_check_authorization_accepts_right_and_rejects_wrong() -> None:
    challenge = 'Digest realm="carrier.test", nonce="n1", opaque="o", algorithm=SHA-256, qop="auth"'
    good = digest_response(
        algorithm="SHA-256",
        username="alice",
        realm="carrier.test",
        password="secret",
        method="REGISTER",
        uri="sip:127.0.0.1:5080",
        nonce="n1",
        qop="auth",
        nc="00000001",
        cnonce="abc",
    )
    authz = (
        'Digest username="alice", realm="carrier.test", nonce="n1", uri="sip:127.0.0.1:5080", '
        f'response="{good}", algorithm=SHA-256, cnonce="abc", nc=00000001, qop=auth, opaque="o"'
    )
    kw = {"method": "REGISTER", "username": "alice", "password": "secret"}
    assert check_authorization(authz, challenge, **kw) == []
    assert check_authorization(authz, challenge, method="REGISTER", username="alice", password="x")
    assert check_authorization(authz.replace('"n1"', '"n2"'), challenge, **kw)
    assert check_authorization(authz.replace("SHA-256", "MD5"), challenge, **kw)


@pytest.mark.interop
def test_trigger_scenarios_run_sipp_against_sipp(sipp: SippFactory) -> None:
    uas_port = free_port()
    uas = sipp("uas_trigger.xml", local_port=uas_port, calls=5).start()
    uac = sipp(
        "invite_cancel.xml",
        remote=f"127.0.0.1:{uas_port}",
        service="815012345678",
        calls=5,
        rate=100,
    ).run()
    served = uas.wait(10)
    assert uac.returncode == 0, uac.describe()
    assert served.returncode == 0, served.describe()
    assert uac.stat("SuccessfulCall") == 5
    assert len(uac.received(status=487)) == 5
    assert sorted(uac.rtt) == ["cancel", "ring"] and len(uac.rtt["ring"]) == 5


@pytest.mark.interop
def test_options_scenario_runs_sipp_against_sipp(sipp: SippFactory) -> None:
    uas_port = free_port()
    uas = sipp("uas_options.xml", local_port=uas_port).start()
    uac = sipp("options.xml", remote=f"127.0.0.1:{uas_port}").run()
    assert uac.returncode == 0, uac.describe()
    assert uas.wait(10).returncode == 0
    (ok,) = uac.received(status=200)
    assert ok.header("Allow") == "INVITE, ACK, CANCEL, BYE, OPTIONS"


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.0
    assert percentile([7.0], 99) == 7.0
