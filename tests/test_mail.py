"""Who sent a trigger mail (softswitch.mail.client_address): the peer, or behind the site's MTA
the client its Received header names, never one the sender wrote itself."""

from __future__ import annotations

import email.parser
import email.policy

import pytest

from softswitch.mail import client_address

MTA = ("127.0.0.1", "10.1.0.0/16")


def headers(*received: str) -> email.message.Message:
    text = "".join(f"Received: {r}\r\n" for r in received) + "Subject: 815012345678\r\n\r\n"
    parser = email.parser.BytesHeaderParser(policy=email.policy.default)
    return parser.parsebytes(text.encode())


@pytest.mark.parametrize(
    ("received", "client"),
    [
        # Postfix: from HELO (rDNS [IP]); the HELO may be an address literal the client chose.
        (
            "from client.example.org (client.example.org [203.0.113.9])\r\n\tby mx.example.net"
            " (Postfix) with ESMTP id 4F2; Fri, 4 Dec 2026 20:04:13 +0000 (UTC)",
            "203.0.113.9",
        ),
        ("from [198.51.100.66] (unknown [203.0.113.9]) by mx (Postfix)", "203.0.113.9"),
        ("from x (unknown [IPv6:2001:db8::9]) by mx (Postfix)", "2001:db8::9"),
        # Exim: from rDNS ([IP] helo=HELO), or from [IP] (helo=HELO) with no reverse DNS.
        (
            "from host.example.org ([203.0.113.9] helo=x) by mx with esmtp (Exim 4.96)",
            "203.0.113.9",
        ),
        ("from [203.0.113.9] (helo=[198.51.100.66]) by mx with esmtp (Exim 4.96)", "203.0.113.9"),
        # A local submission on the MTA names no client: the relay stays the client.
        ("by mx.example.net (Postfix, from userid 0) id 4F2", "127.0.0.1"),
    ],
)
def test_a_trusted_relay_names_the_client(received: str, client: str) -> None:
    assert client_address("127.0.0.1", headers(received), MTA) == client


def test_an_untrusted_peer_is_the_client_whatever_it_writes() -> None:
    forged = headers("from x (x [192.0.2.1]) by mx")
    assert client_address("203.0.113.9", forged, MTA) == "203.0.113.9"
    assert client_address("127.0.0.1", forged, ()) == "127.0.0.1"  # no relays configured


def test_only_the_trusted_hops_headers_count() -> None:
    message = headers(
        "from gw.internal (gw.internal [10.1.2.3]) by mx (Postfix)",  # our relay's hop
        "from c (c [203.0.113.9]) by gw.internal (Postfix)",  # the gateway's: the client
        "from forged (forged [192.0.2.1]) by c",  # the sender's own: proves nothing
    )
    assert client_address("127.0.0.1", message, MTA) == "203.0.113.9"
    assert client_address("127.0.0.1", headers(), MTA) == "127.0.0.1"
