"""The e-mail trigger (SPEC 3, guide sections 3 and 10): an SMTP listener (aiosmtpd).

A customer mails the trigger address (``[mail] address``) with only their trigger number in
the Subject; the switch calls them back, exactly as a phone trigger does. Normally the site's
MTA (Postfix, Exim) receives the mail and forwards that one address here; the listener also
takes mail directly. It is never a relay: any other recipient is refused at ``RCPT TO``.

What is refused, politely, with a security event each (:mod:`softswitch.logs`):

* another recipient (``550 5.7.1``), a message over ``[mail] max_size`` (``552``, by aiosmtpd);
* a Subject that is not just a number (``550 5.6.0``: the customer learns what to fix);
* a rate-limited sender or client (``450 4.7.1``: try later), the limits shared with the web.

A sender not in the trigger number's ``[mail.senders]`` list, an unknown number, a suspended
account, a callback already under way: all get the same ``250`` as a scheduled callback, so a
mail reveals nothing about which numbers exist.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import logging
import re
import time
from email.utils import parseaddr
from typing import TYPE_CHECKING

from aiosmtpd.smtp import SMTP, Envelope, Session

from softswitch.config import MailConfig
from softswitch.logs import security_event
from softswitch.service.trigger import normalize_number

if TYPE_CHECKING:
    from softswitch.aio.ops import Operations

__all__ = ["ACCEPTED", "MailTrigger"]

log = logging.getLogger("softswitch.mail")

ACCEPTED = "250 2.0.0 Thank you: if this number is registered, we will call you back"
_SUBJECT = re.compile(r"^\+?[0-9][0-9 \-.()]{4,30}$")


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
        if self.ops.banned(source) or self.ops.banned(f"mail:{address.lower()}"):
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
        source = _peer(session)
        sender = (envelope.mail_from or "").lower()
        raw = envelope.original_content or envelope.content or b""
        message = self._parser.parsebytes(raw if isinstance(raw, bytes) else raw.encode())
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
        outcome = self.ops.request_callback("mail", source, number, None, key=f"mail:{sender}")
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
