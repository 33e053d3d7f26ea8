"""Accounts: trigger and registered numbers, location, security code, recorded name.

Security codes are kept as a salted scrypt hash (stdlib), checked in a worker thread so the
event loop never stalls; ``max_code_failures`` wrong codes in a row (default 3, ``[service]
security_code_failures``) lock the location menu for ``lockout_s`` (default 1800, ``[service]
security_lockout``) (SPEC section 4).

Every ``set_location`` also records the change in the account's location history (what it was,
what it became, when, and ``via`` what: ``"phone"`` for the Location menu, ``"cli"`` ...), in
the same transaction; ``location_history`` reads it back, newest first.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import bindparam, delete, insert, or_, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from softswitch.store.db import Database, seconds, us
from softswitch.store.models import (
    Account,
    AccountKind,
    AccountStatus,
    CallbackState,
    CodeCheck,
    Language,
    Location,
    LocationChange,
    RegisteredNumber,
)
from softswitch.store.repos.common import (
    SECURITY_CODE,
    UNSET,
    Conflict,
    InvalidInput,
    NotFound,
    _Unset,
    check_extension,
    e164_number,
    log,
    number_digits,
    to_seconds,
)
from softswitch.store.tables import (
    accounts,
    callbacks,
    credit_reservations,
    location_history,
    registered_numbers,
    trigger_numbers,
)

#: Defaults of the location menu's lock (SPEC section 4): wrong codes in a row, seconds locked.
MAX_CODE_FAILURES = 3
LOCKOUT_S = 1800.0
#: What ``via`` may say about a location change: a short lowercase word ("phone", "cli" ...).
VIA = re.compile(r"[a-z][a-z0-9_-]{0,15}")

# -- security codes -----------------------------------------------------------------------------

_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


def hash_security_code(code: str) -> str:
    """A salted scrypt hash of a 4-digit code: ``scrypt$n$r$p$salt$hash`` (hex)."""
    if not SECURITY_CODE.fullmatch(code):
        raise InvalidInput("security code: exactly 4 digits")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        code.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32
    )
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${salt.hex()}${digest.hex()}"


def check_security_code(code: str, stored: str) -> bool:
    """Whether ``code`` matches a hash from ``hash_security_code`` (constant-time compare)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(
            code.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=32
        )
    except ValueError:
        return False
    return hmac.compare_digest(got, bytes.fromhex(digest))


# -- accounts -----------------------------------------------------------------------------------


def _account(row: Row[Any], triggers: Sequence[str]) -> Account:
    m = row._mapping
    location = (
        Location(m["location_number"], m["location_extension"]) if m["location_number"] else None
    )
    return Account(
        id=m["id"],
        name=m["name"],
        kind=AccountKind(m["kind"]),
        language=Language(m["language"]),
        status=AccountStatus(m["status"]),
        location=location,
        triggers=tuple(sorted(triggers)),
        has_security_code=m["security_code_hash"] is not None,
        failed_code_count=m["failed_code_count"],
        locked_until=seconds(m["locked_until_us"]),
        recorded_name_path=m["recorded_name_path"],
        credit_limit=m["credit_limit"],
        credit_used=m["credit_used"],
        credit_reserved=m["credit_reserved"],
        hotline_destination=m["hotline_destination"],
        created_at=to_seconds(m["created_us"]),
        updated_at=to_seconds(m["updated_us"]),
    )


class AccountRepo:
    """Accounts, their trigger and registered numbers, location, security code and name."""

    def __init__(
        self,
        db: Database,
        *,
        max_code_failures: int = MAX_CODE_FAILURES,
        lockout_s: float = LOCKOUT_S,
    ) -> None:
        if max_code_failures < 1:
            raise ValueError("max_code_failures: at least 1")
        if lockout_s < 0:
            raise ValueError("lockout_s: must not be negative")
        self.db = db
        self.max_code_failures = max_code_failures
        self.lockout_s = lockout_s

    async def add(
        self,
        name: str,
        *,
        kind: AccountKind = AccountKind.STANDARD,
        language: Language = Language.JA,
        triggers: Iterable[str] = (),
        location: Location | None = None,
        security_code: str | None = None,
        credit_limit: int = 0,
        hotline_destination: str | None = None,
    ) -> Account:
        """Create an active account; trigger numbers must not belong to another account."""
        if not name.strip():
            raise InvalidInput("account name: must not be empty")
        numbers = sorted({number_digits(t, "trigger number") for t in triggers})
        hotline = (
            e164_number(hotline_destination, "hotline destination")
            if (hotline_destination)
            else None
        )
        if kind is AccountKind.HOTLINE and hotline is None:
            raise InvalidInput("a hotline account needs a hotline destination")
        if credit_limit < 0:
            raise InvalidInput("credit limit: must not be negative")
        code_hash = await _hash(security_code) if security_code is not None else None
        loc_number, loc_ext = _location_values(location)
        stamp = us(self.db.clock())
        try:
            async with self.db.write() as conn:
                result = await conn.execute(
                    insert(accounts)
                    .values(
                        name=name.strip(),
                        kind=kind.value,
                        language=language.value,
                        status=AccountStatus.ACTIVE.value,
                        location_number=loc_number,
                        location_extension=loc_ext,
                        security_code_hash=code_hash,
                        credit_limit=credit_limit,
                        hotline_destination=hotline,
                        created_us=stamp,
                        updated_us=stamp,
                    )
                    .returning(accounts.c.id)
                )
                account_id = int(result.scalar_one())
                for number in numbers:
                    await conn.execute(
                        insert(trigger_numbers).values(number=number, account_id=account_id)
                    )
        except IntegrityError:
            raise Conflict(f"trigger number already in use: {', '.join(numbers)}") from None
        log.info("account %d (%s) added, triggers %s", account_id, name, numbers)
        return await self.get(account_id)

    async def get(self, account_id: int) -> Account:
        """The account, or ``NotFound``."""
        async with self.db.read() as conn:
            found = await _load_account(conn, account_id)
        if found is None:
            raise NotFound(f"no account {account_id}")
        return found

    async def by_trigger(self, number: str) -> Account | None:
        """The account a trigger number belongs to (``None`` for an unknown number)."""
        try:
            digits = number_digits(number, "trigger number")
        except InvalidInput:
            return None
        async with self.db.read() as conn:
            owner = select(trigger_numbers.c.account_id).where(trigger_numbers.c.number == digits)
            found = await _load_accounts(conn, accounts.c.id.in_(owner))
        return found[0] if found else None

    async def list(self, *, status: AccountStatus | None = None) -> tuple[Account, ...]:
        """All accounts (or those with ``status``), by id."""
        where = accounts.c.status == status.value if status else None
        async with self.db.read() as conn:
            return tuple(await _load_accounts(conn, where))

    async def update(
        self,
        account_id: int,
        *,
        name: str | _Unset = UNSET,
        kind: AccountKind | _Unset = UNSET,
        language: Language | _Unset = UNSET,
        credit_limit: int | _Unset = UNSET,
        hotline_destination: str | _Unset | None = UNSET,
        security_code: str | _Unset | None = UNSET,
    ) -> Account:
        """Change the given fields (``UNSET`` ones stay); ``security_code=None`` removes it."""
        values: dict[str, Any] = {}
        if not isinstance(name, _Unset):
            if not name.strip():
                raise InvalidInput("account name: must not be empty")
            values["name"] = name.strip()
        if not isinstance(kind, _Unset):
            values["kind"] = kind.value
        if not isinstance(language, _Unset):
            values["language"] = language.value
        if not isinstance(credit_limit, _Unset):
            if credit_limit < 0:
                raise InvalidInput("credit limit: must not be negative")
            values["credit_limit"] = credit_limit
        if not isinstance(hotline_destination, _Unset):
            values["hotline_destination"] = (
                e164_number(hotline_destination, "hotline destination")
                if hotline_destination
                else None
            )
        if not isinstance(security_code, _Unset):
            values["security_code_hash"] = (
                await _hash(security_code) if security_code is not None else None
            )
            values["failed_code_count"] = 0
            values["locked_until_us"] = None
        async with self.db.write() as conn:
            row = (
                await conn.execute(
                    select(accounts.c.kind, accounts.c.hotline_destination)
                    .where(accounts.c.id == account_id)
                    .with_for_update()
                )
            ).first()
            if row is None:
                raise NotFound(f"no account {account_id}")
            final_kind = values.get("kind", row.kind)
            final_hotline = values.get("hotline_destination", row.hotline_destination)
            if final_kind == AccountKind.HOTLINE.value and not final_hotline:
                raise InvalidInput("a hotline account needs a hotline destination")
            await _touch(conn, self.db, account_id, **values)
        return await self.get(account_id)

    async def suspend(self, account_id: int) -> Account:
        """Stop serving the account: its triggers no longer cause callbacks."""
        return await self._set_status(account_id, AccountStatus.SUSPENDED)

    async def resume(self, account_id: int) -> Account:
        """Serve a suspended account again."""
        return await self._set_status(account_id, AccountStatus.ACTIVE)

    async def _set_status(self, account_id: int, status: AccountStatus) -> Account:
        async with self.db.write() as conn:
            await _touch(conn, self.db, account_id, status=status.value)
        log.info("account %d: status %s", account_id, status.value)
        return await self.get(account_id)

    async def set_location(
        self, account_id: int, location: Location | None, *, via: str = "cli"
    ) -> Account:
        """Make ``location`` the account's current callback location (SPEC section 4).

        The location it replaces is kept in the account's history with the time and ``via``
        (where the change came from: ``"phone"`` for the Location menu, ``"cli"`` ...), in the
        same transaction, so no change goes unrecorded.
        """
        number, extension = _location_values(location)
        if not VIA.fullmatch(via):
            raise InvalidInput(f"via {via!r}: a short lowercase word (phone, cli ...)")
        async with self.db.write() as conn:
            before = (
                await conn.execute(
                    select(accounts.c.location_number, accounts.c.location_extension)
                    .where(accounts.c.id == account_id)
                    .with_for_update()
                )
            ).first()
            if before is None:
                raise NotFound(f"no account {account_id}")
            await _touch(
                conn, self.db, account_id, location_number=number, location_extension=extension
            )
            await conn.execute(
                insert(location_history).values(
                    account_id=account_id,
                    changed_us=us(self.db.clock()),
                    via=via,
                    previous_number=before.location_number,
                    previous_extension=before.location_extension,
                    new_number=number,
                    new_extension=extension,
                )
            )
        log.info(
            "account %d: location %s -> %s (via %s)",
            account_id,
            _location_log(before.location_number, before.location_extension),
            _location_log(number, extension),
            via,
        )
        return await self.get(account_id)

    async def location_history(
        self, account_id: int, *, limit: int | None = None
    ) -> tuple[LocationChange, ...]:
        """The account's location changes, newest first (at most ``limit``); ``NotFound`` for
        an unknown account."""
        query = (
            select(location_history)
            .where(location_history.c.account_id == account_id)
            .order_by(location_history.c.changed_us.desc(), location_history.c.id.desc())
        )
        if limit is not None:
            query = query.limit(max(0, limit))
        async with self.db.read() as conn:
            found = (
                await conn.execute(select(accounts.c.id).where(accounts.c.id == account_id))
            ).first()
            if found is None:
                raise NotFound(f"no account {account_id}")
            rows = (await conn.execute(query)).all()
        return tuple(_change(r) for r in rows)

    async def delete(self, account_id: int) -> Account:
        """Remove the account and everything that is only its own (numbers, speed dials,
        location history, finished callbacks); its CDRs stay, without the account.

        Refused (``Conflict``) while it has a call in progress: credit held for a call, or a
        callback a node is placing. Returns the account as it was, so the caller can remove
        its files (the recorded name). ``NotFound`` for an unknown account.
        """
        before = await self.get(account_id)
        async with self.db.write() as conn:
            await lock_account(conn, account_id)
            held = (
                await conn.execute(
                    select(credit_reservations.c.call_uuid)
                    .where(credit_reservations.c.account_id == account_id)
                    .limit(1)
                )
            ).first()
            placing = (
                await conn.execute(
                    select(callbacks.c.id)
                    .where(
                        callbacks.c.account_id == account_id,
                        callbacks.c.state == CallbackState.CLAIMED.value,
                    )
                    .limit(1)
                )
            ).first()
            if held is not None or placing is not None:
                raise Conflict(
                    f"account {account_id} has a call in progress: suspend it, then delete it "
                    "when the call has ended"
                )
            await conn.execute(delete(accounts).where(accounts.c.id == account_id))
        log.info("account %d (%s) deleted", account_id, before.name)
        return before

    async def set_recorded_name(self, account_id: int, path: str | None) -> Account:
        """Remember the file holding the customer's recorded name (SPEC section 5)."""
        async with self.db.write() as conn:
            await _touch(conn, self.db, account_id, recorded_name_path=path)
        return await self.get(account_id)

    async def add_trigger(self, account_id: int, number: str) -> Account:
        """Give the account another trigger number (``Conflict`` if any account has it)."""
        digits = number_digits(number, "trigger number")
        try:
            async with self.db.write() as conn:
                await _touch(conn, self.db, account_id)
                await conn.execute(
                    insert(trigger_numbers).values(number=digits, account_id=account_id)
                )
        except IntegrityError:
            raise Conflict(f"trigger number {digits} is already in use") from None
        return await self.get(account_id)

    async def remove_trigger(self, account_id: int, number: str) -> Account:
        """Take a trigger number away from the account."""
        digits = number_digits(number, "trigger number")
        async with self.db.write() as conn:
            result = await conn.execute(
                delete(trigger_numbers).where(
                    trigger_numbers.c.number == digits, trigger_numbers.c.account_id == account_id
                )
            )
            if result.rowcount == 0:
                raise NotFound(f"account {account_id} has no trigger number {digits}")
            await _touch(conn, self.db, account_id)
        return await self.get(account_id)

    async def add_registered_number(
        self, account_id: int, number: str, extension: str | None = None, label: str = ""
    ) -> RegisteredNumber:
        """Keep a number on file that the customer may pick as a location."""
        digits = e164_number(number, "registered number")
        ext = check_extension(extension)
        try:
            async with self.db.write() as conn:
                await _touch(conn, self.db, account_id)
                result = await conn.execute(
                    insert(registered_numbers)
                    .values(account_id=account_id, number=digits, extension=ext, label=label)
                    .returning(registered_numbers.c.id)
                )
                reg_id = int(result.scalar_one())
        except IntegrityError:
            raise Conflict(f"account {account_id} already has {digits}") from None
        return RegisteredNumber(reg_id, account_id, digits, ext, label)

    async def registered_numbers(self, account_id: int) -> tuple[RegisteredNumber, ...]:
        """The account's registered numbers, oldest first."""
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(registered_numbers)
                .where(registered_numbers.c.account_id == account_id)
                .order_by(registered_numbers.c.id)
            )
            return tuple(
                RegisteredNumber(r.id, r.account_id, r.number, r.extension, r.label) for r in rows
            )

    async def remove_registered_number(self, account_id: int, registered_id: int) -> None:
        """Forget a registered number (``NotFound`` if the account has no such entry)."""
        async with self.db.write() as conn:
            result = await conn.execute(
                delete(registered_numbers).where(
                    registered_numbers.c.id == registered_id,
                    registered_numbers.c.account_id == account_id,
                )
            )
            if result.rowcount == 0:
                raise NotFound(f"account {account_id} has no registered number {registered_id}")

    async def verify_security_code(self, account_id: int, code: str, now: float) -> CodeCheck:
        """Check a code typed at the location menu (SPEC section 4).

        ``ACCEPTED`` resets the failure count. ``REJECTED`` counts a failure; the failure that
        reaches ``max_code_failures`` locks the menu for ``lockout_s`` and answers ``LOCKED``, as
        does every attempt (right or wrong) until the lock expires. ``NO_CODE``: none is set.
        """
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(accounts.c.security_code_hash, accounts.c.locked_until_us).where(
                        accounts.c.id == account_id
                    )
                )
            ).first()
        if row is None:
            raise NotFound(f"no account {account_id}")
        if row.security_code_hash is None:
            return CodeCheck.NO_CODE
        now_us = us(now)
        if row.locked_until_us is not None and now_us < row.locked_until_us:
            log.warning("account %d: security code tried while locked", account_id)
            return CodeCheck.LOCKED
        ok = await asyncio.to_thread(check_security_code, code, row.security_code_hash)
        unlocked = or_(accounts.c.locked_until_us.is_(None), accounts.c.locked_until_us <= now_us)
        async with self.db.write() as conn:
            if ok:
                result = await conn.execute(
                    update(accounts)
                    .where(accounts.c.id == account_id, unlocked)
                    .values(failed_code_count=0, locked_until_us=None)
                )
                return CodeCheck.ACCEPTED if result.rowcount else CodeCheck.LOCKED
            failures = (
                await conn.execute(
                    update(accounts)
                    .where(accounts.c.id == account_id, unlocked)
                    .values(failed_code_count=accounts.c.failed_code_count + 1)
                    .returning(accounts.c.failed_code_count)
                )
            ).scalar_one_or_none()
            if failures is None:
                return CodeCheck.LOCKED
            if failures < self.max_code_failures:
                log.info("account %d: wrong security code (%d in a row)", account_id, failures)
                return CodeCheck.REJECTED
            await conn.execute(
                update(accounts)
                .where(accounts.c.id == account_id)
                .values(failed_code_count=0, locked_until_us=now_us + us(self.lockout_s))
            )
        log.warning(
            "account %d: %d wrong security codes, location menu locked for %.0f s",
            account_id,
            failures,
            self.lockout_s,
        )
        return CodeCheck.LOCKED


async def _hash(code: str) -> str:
    return await asyncio.to_thread(hash_security_code, code)


def _location(number: str | None, extension: str | None) -> Location | None:
    return Location(number, extension) if number else None


def _location_log(number: str | None, extension: str | None) -> str:
    if not number:
        return "none"
    return f"{number} ext {extension}" if extension else number


def _change(row: Row[Any]) -> LocationChange:
    m = row._mapping
    return LocationChange(
        id=m["id"],
        account_id=m["account_id"],
        changed_at=to_seconds(m["changed_us"]),
        via=m["via"],
        previous=_location(m["previous_number"], m["previous_extension"]),
        location=_location(m["new_number"], m["new_extension"]),
    )


def _location_values(location: Location | None) -> tuple[str | None, str | None]:
    if location is None:
        return None, None
    return e164_number(location.number, "location"), check_extension(location.extension)


async def _touch(conn: AsyncConnection, db: Database, account_id: int, **values: Any) -> None:
    result = await conn.execute(
        update(accounts)
        .where(accounts.c.id == account_id)
        .values(updated_us=us(db.clock()), **values)
    )
    if result.rowcount == 0:
        raise NotFound(f"no account {account_id}")


# An account with its trigger numbers in one query: a row per trigger number (one, as a
# rule), or one row with none. It was two queries, accounts then their trigger numbers.
_WITH_TRIGGERS = (
    select(accounts, trigger_numbers.c.number.label("trigger_number"))
    .select_from(accounts.outerjoin(trigger_numbers))
    .order_by(accounts.c.id)
)
# The one the call path asks for (QuoteRate, ClaimCallbacks): built once, cached compiled.
_ONE_ACCOUNT = _WITH_TRIGGERS.where(accounts.c.id == bindparam("account_id"))


async def _load_accounts(conn: AsyncConnection, where: Any) -> list[Account]:
    query = _WITH_TRIGGERS if where is None else _WITH_TRIGGERS.where(where)
    return _accounts(await conn.execute(query))


async def _load_account(conn: AsyncConnection, account_id: int) -> Account | None:
    found = _accounts(await conn.execute(_ONE_ACCOUNT, {"account_id": account_id}))
    return found[0] if found else None


def _accounts(rows: Iterable[Row[Any]]) -> list[Account]:
    """Accounts from ``_WITH_TRIGGERS`` rows (ordered by account id)."""
    out: list[Account] = []
    current: Row[Any] | None = None
    numbers: list[str] = []
    for row in rows:
        if current is None or row.id != current.id:
            if current is not None:
                out.append(_account(current, numbers))
            current, numbers = row, []
        if row.trigger_number is not None:
            numbers.append(row.trigger_number)
    if current is not None:
        out.append(_account(current, numbers))
    return out


async def lock_account(conn: AsyncConnection, account_id: int) -> None:
    """Lock the account's row for the rest of ``conn``'s transaction (``NotFound`` if none).

    The row lock (PostgreSQL; SQLite's writer lock already excludes other writers) serialises
    per-account limits such as the 115 speed dials.
    """
    found = (
        await conn.execute(
            select(accounts.c.id).where(accounts.c.id == account_id).with_for_update()
        )
    ).first()
    if found is None:
        raise NotFound(f"no account {account_id}")
