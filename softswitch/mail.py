"""The e-mail trigger (SPEC 3, guide sections 3 and 10): an SMTP listener (aiosmtpd).

A customer mails the trigger address (``[mail] address``) with only their trigger number in
the Subject; the switch calls them back, exactly as a phone trigger does. Normally the site's
MTA (Postfix, Exim) receives the mail and forwards that one address here; the listener also
takes mail directly. It is never a relay: any other recipient is refused at ``RCPT TO``.

What is refused, politely, with a security event each (:mod:`softswitch.logs`):

* another recipient (``550 5.7.1``), a message over ``[mail] max_size`` (``552``, by aiosmtpd);
* a Subject that is not just a number (``550 5.6.0``: the customer learns what to fix);
* a rate-limited sender or client (``450 4.7.1``: try later), the limits shared with the web:
  every mail counts for its client's address and for its sender, each under ``[limits]
  per_source`` (one address rotating senders is limited all the same).

The client is the connection's peer; behind the site's MTA (listed in ``[mail]
trusted_relays``) it is the address that MTA wrote in the topmost ``Received:`` header
(:func:`client_address`), as the web page reads ``X-Forwarded-For`` from a trusted proxy.

A sender not in the trigger number's ``[mail.senders]`` list, an unknown number, a suspended
account, a callback already under way: all get the same ``250`` as a scheduled callback, so a
mail reveals nothing about which numbers exist.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import ipaddress
import logging
import re
import time
from collections.abc import Sequence
from email.message import Message
from email.utils import parseaddr
from typing import TYPE_CHECKING

from aiosmtpd.smtp import SMTP, Envelope, Session

from softswitch.config import MailConfig
from softswitch.logs import security_event
from softswitch.service.trigger import normalize_number

if TYPE_CHECKING:
    from softswitch.aio.ops import Operations

__all__ = ["ACCEPTED", "MailTrigger", "client_address"]

log = logging.getLogger("softswitch.mail")

ACCEPTED = "250 2.0.0 Thank you: if this number is registered, we will call you back"
_SUBJECT = re.compile(r"^\+?[0-9][0-9 \-.()]{4,30}$")
#: An address literal in a Received header's "from" clause ([203.0.113.9], [IPv6:2001:db8::1]),
#: unless it is the HELO the client chose (Exim writes "helo=[...]").
_RECEIVED_ADDRESS = re.compile(r"(?<!helo=)\[(?:IPv6:)?([0-9A-Fa-f:.]+)\]", re.I)
_RECEIVED_BY = re.compile(r"\sby\s", re.I)


def _networks(nets: Sequence[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(n, strict=False) for n in nets]


def _in(address: str, nets: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in nets)


def _received_from(header: str) -> str | None:
    """The client address a ``Received:`` header names: the last address literal of its
    "from" clause (Postfix, Sendmail, OpenSMTPD: ``from HELO (rDNS [IP])``; Exim: ``from rDNS
    ([IP] helo=HELO)`` or ``from [IP] (helo=HELO)``), or None."""
    text = " ".join(header.split())
    if not text.lower().startswith("from "):
        return None
    clause = _RECEIVED_BY.split(text, maxsplit=1)[0]
    for literal in reversed(_RECEIVED_ADDRESS.findall(clause)):
        try:
            return str(ipaddress.ip_address(literal))
        except ValueError:
            continue
    return None


def client_address(peer: str, message: Message, trusted: Sequence[str]) -> str:
    """Who sent the mail: ``peer``, or, when ``peer`` is a trusted relay (the site's MTA), the
    client named by the ``Received:`` headers the trusted relays wrote, topmost first (a
    header below the last trusted hop is the sender's own and proves nothing). A relay's
    header naming no client (a local submission) leaves the relay as the client."""
    nets = _networks(trusted)
    if not nets or not _in(peer, nets):
        return peer
    client = peer
    for header in message.get_all("Received") or ():
        named = _received_from(str(header))
        if named is None:
            return client
        client = named
        if not _in(named, nets):
            return named
    return client


class MailTrigger:
    """aiosmtpd handler: one trigger address, a Subject with a number, nothing else."""

    def __init__(self, config: MailConfig, ops: Operations, *, answer_time: float = 0.0) -> None:
        self.config = config
        self.ops = ops
        self.answer_time = answer_time
        self._parser = email.parser.BytesHeaderParser(policy=email.policy.default)

    def protocol(self) -> SMTP:
        """A protocol instance for one connection (``loop.create_server(mail.protocol)``)."""
        return SMTP(
            self,
            data_size_limit=self.config.max_size,
            hostname=self.config.hostname,
            ident="softswitch",
            timeout=60,
            command_call_limit=20,
        )

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        source = _peer(session)
        # Behind a trusted relay the client is known only from the message (handle_DATA).
        relayed = _in(source, _networks(self.config.trusted_relays))
        keys = [f"mail:{address.lower()}"] if relayed else [source, f"mail:{address.lower()}"]
        if any(self.ops.banned(key) for key in keys):
            security_event("banned", source, channel="mail", sender=address[:120])
            return "450 4.7.1 Too many requests, try again later"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address.lower() != self.config.address:
            security_event(
                "mail_rejected",
                _peer(session),
                reason="relay",
                sender=(envelope.mail_from or "")[:120],
                recipient=address[:120],
            )
            return "550 5.7.1 Relaying denied: this server only takes callback requests"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        started = time.monotonic()
        sender = (envelope.mail_from or "").lower()
        raw = envelope.original_content or envelope.content or b""
        message = self._parser.parsebytes(raw if isinstance(raw, bytes) else raw.encode())
        source = client_address(_peer(session), message, self.config.trusted_relays)
        subject = str(message.get("Subject", "") or "").strip()
        if not _SUBJECT.match(subject) or not 6 <= len(normalize_number(subject)) <= 15:
            security_event(
                "mail_rejected", source, reason="subject", sender=sender[:120], subject=subject[:80]
            )
            return (
                "550 5.6.0 The Subject must hold only your trigger number "
                "(digits, country code first), nothing else"
            )
        number = normalize_number(subject)
        allowed = self.config.senders.get(number)
        header_from = parseaddr(str(message.get("From", "")))[1].lower()
        if allowed is not None and (sender not in allowed or header_from not in allowed):
            security_event(
                "mail_rejected", source, reason="sender", sender=sender[:120], trigger=number
            )
            await self._pad(started)
            return ACCEPTED
        outcome = self.ops.request_callback(
            "mail", source, number, None, keys=(source, f"mail:{sender}")
        )
        if outcome == "limited":
            return "450 4.7.1 Too many requests, try again later"
        await self._pad(started)
        return ACCEPTED

    async def _pad(self, started: float) -> None:
        left = self.answer_time - (time.monotonic() - started)
        if left > 0:
            await asyncio.sleep(left)


def _peer(session: Session) -> str:
    peer = session.peer
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return str(peer or "-")
