"""Repositories: the store's API to the service layer and the admin CLI (SPEC section 7).

Each method is one short transaction and returns frozen records from ``models``. Methods that
read then write use ``Database.write()``, which is ``BEGIN IMMEDIATE`` on SQLite (one writer at a
time) and READ COMMITTED with row locks on PostgreSQL, so the same code is safe on both:

* Credit: ``CreditRepo.reserve`` is a single conditional UPDATE of the account row
  (``WHERE credit_limit - credit_used - credit_reserved >= amount``). Two calls racing for the
  last credit serialise on that row and the second sees the first's reservation: one wins.
* Callbacks: ``CallbackQueue.claim_due`` selects due rows ``FOR UPDATE SKIP LOCKED`` (ignored by
  SQLite, where the writer lock already excludes other claimers) and marks them claimed with a
  lease. A node that dies stops renewing nothing; its lease simply runs out and the next
  ``claim_due`` on any node takes the callback over. A partial unique index allows one open
  (pending or claimed) callback per account, so a second trigger is absorbed even across nodes.
* Security codes: a salted scrypt hash (stdlib), checked in a worker thread so the event loop
  never stalls; ``max_code_failures`` wrong codes in a row lock the menu for ``lockout_s``.

The callback life cycle is a small state machine owned here (``CALLBACK_TRANSITIONS``); a
transition the table does not allow raises ``IllegalTransition``.
"""

from __future__ import annotations

import asyncio
import builtins
import csv
import enum
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import and_, delete, func, insert, or_, select, true, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from softswitch.store.db import Database, seconds, us
from softswitch.store.models import (
    Account,
    AccountKind,
    AccountStatus,
    CallbackState,
    Cdr,
    CodeCheck,
    CreditReservation,
    Language,
    LegKind,
    Location,
    PendingCallback,
    Rate,
    RegisteredNumber,
    SpeedDial,
)
from softswitch.store.tables import (
    MAX_SPEED_DIALS,
    accounts,
    callbacks,
    cdrs,
    credit_reservations,
    rates,
    registered_numbers,
    speed_dials,
    trigger_numbers,
)

log = logging.getLogger("softswitch.store")

MAX_NUMBER_DIGITS = 15  # E.164
SPEED_DIAL_CODE = re.compile(r"0[1-9][0-9]{0,2}")  # "00" is customer service (SPEC section 2)
SECURITY_CODE = re.compile(r"[0-9]{4}")
EXTENSION = re.compile(r"[0-9*#]{1,16}")


class StoreError(Exception):
    """Base of the errors the store reports to its callers."""


class NotFound(StoreError):
    """The account, callback or reservation does not exist."""


class Conflict(StoreError):
    """The change contradicts stored data (a trigger number in use, 115 speed dials ...)."""


class InvalidInput(StoreError):
    """A value is malformed (not a number, a bad speed-dial code ...)."""


class CsvError(InvalidInput):
    """A CSV file is wrong; the message names the file and the line."""

    def __init__(self, path: str | Path, line: int | None, message: str) -> None:
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.line = line


class IllegalTransition(StoreError):
    """A pending callback was asked to make a move its state does not allow."""


class _Unset(enum.Enum):
    UNSET = 0


UNSET = _Unset.UNSET
"""Default of ``AccountRepo.update`` arguments: leave the field as it is."""


def number_digits(text: str, what: str = "number") -> str:
    """E.164 digits of ``text`` (spaces, dashes, dots, brackets and a leading ``+`` allowed)."""
    cleaned = re.sub(r"[\s\-.()]", "", text.strip())
    cleaned = cleaned.removeprefix("+")
    if not cleaned.isascii() or not cleaned.isdigit():
        raise InvalidInput(f"{what} {text!r}: digits only (country code first)")
    if not 2 <= len(cleaned) <= MAX_NUMBER_DIGITS:
        raise InvalidInput(f"{what} {text!r}: must have 2 to {MAX_NUMBER_DIGITS} digits")
    return cleaned


def _extension(text: str | None) -> str | None:
    if text is None or text == "":
        return None
    if not EXTENSION.fullmatch(text):
        raise InvalidInput(f"extension {text!r}: up to 16 of 0-9 * #")
    return text


def _s(micro: int) -> float:
    return micro / 1_000_000


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
        created_at=_s(m["created_us"]),
        updated_at=_s(m["updated_us"]),
    )


class AccountRepo:
    """Accounts, their trigger and registered numbers, location, security code and name."""

    def __init__(
        self, db: Database, *, max_code_failures: int = 5, lockout_s: float = 1800.0
    ) -> None:
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
            number_digits(hotline_destination, "hotline destination")
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
            found = await _load_accounts(conn, accounts.c.id == account_id)
        if not found:
            raise NotFound(f"no account {account_id}")
        return found[0]

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
                number_digits(hotline_destination, "hotline destination")
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

    async def set_location(self, account_id: int, location: Location | None) -> Account:
        """Make ``location`` the account's current callback location (SPEC section 4)."""
        number, extension = _location_values(location)
        async with self.db.write() as conn:
            await _touch(
                conn, self.db, account_id, location_number=number, location_extension=extension
            )
        return await self.get(account_id)

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
        digits = number_digits(number)
        ext = _extension(extension)
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


def _location_values(location: Location | None) -> tuple[str | None, str | None]:
    if location is None:
        return None, None
    return number_digits(location.number, "location"), _extension(location.extension)


async def _touch(conn: AsyncConnection, db: Database, account_id: int, **values: Any) -> None:
    result = await conn.execute(
        update(accounts)
        .where(accounts.c.id == account_id)
        .values(updated_us=us(db.clock()), **values)
    )
    if result.rowcount == 0:
        raise NotFound(f"no account {account_id}")


async def _load_accounts(conn: AsyncConnection, where: Any) -> list[Account]:
    query = select(accounts).order_by(accounts.c.id)
    if where is not None:
        query = query.where(where)
    rows = (await conn.execute(query)).all()
    if not rows:
        return []
    ids = [r.id for r in rows]
    numbers: dict[int, list[str]] = {i: [] for i in ids}
    for t in await conn.execute(
        select(trigger_numbers.c.account_id, trigger_numbers.c.number).where(
            trigger_numbers.c.account_id.in_(ids)
        )
    ):
        numbers[t.account_id].append(t.number)
    return [_account(r, numbers[r.id]) for r in rows]


async def _lock_account(conn: AsyncConnection, account_id: int) -> None:
    # The row lock (PostgreSQL) serialises per-account limits such as the 115 speed dials.
    found = (
        await conn.execute(
            select(accounts.c.id).where(accounts.c.id == account_id).with_for_update()
        )
    ).first()
    if found is None:
        raise NotFound(f"no account {account_id}")


# -- CSV ----------------------------------------------------------------------------------------


def _csv_rows(path: str | Path, header: str) -> list[tuple[int, list[str]]]:
    """(line, cells) of each data row; blank lines, ``#`` comments and a header are skipped."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle, strict=True)
            out: list[tuple[int, list[str]]] = []
            first = True
            line = 0
            for cells in reader:
                line = reader.line_num
                cells = [c.strip() for c in cells]
                if not any(cells) or cells[0].startswith("#"):
                    continue
                if first and cells[0].lower() == header:
                    first = False
                    continue
                first = False
                out.append((line, cells))
            return out
    except OSError as exc:
        raise CsvError(path, None, f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise CsvError(path, None, "not UTF-8 text") from None
    except csv.Error as exc:
        raise CsvError(path, line + 1, f"malformed CSV: {exc}") from None


def _int_cell(path: str | Path, line: int, what: str, text: str, *, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise CsvError(path, line, f"{what}: expected a whole number, got {text!r}") from None
    if value < minimum:
        raise CsvError(path, line, f"{what}: must be at least {minimum}, got {value}")
    return value


# -- speed dials --------------------------------------------------------------------------------


def speed_dial_code(code: str) -> str:
    """A valid speed-dial code: ``0`` then 1-3 digits, not ``00`` (customer service)."""
    if not SPEED_DIAL_CODE.fullmatch(code):
        raise InvalidInput(
            f"speed-dial code {code!r}: 2 to 4 digits starting with 0, not 00 (e.g. 03, 087)"
        )
    return code


class SpeedDialRepo:
    """Up to 115 speed dials per account (SPEC section 2): ``0`` + code dials a number."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def set(self, account_id: int, code: str, number: str, label: str = "") -> SpeedDial:
        """Store or replace a speed dial (``Conflict`` beyond 115 codes)."""
        dial = SpeedDial(account_id, speed_dial_code(code), number_digits(number), label)
        async with self.db.write() as conn:
            await _lock_account(conn, account_id)
            await self._upsert(conn, [dial], lambda _dial: None)
        return dial

    async def _upsert(
        self,
        conn: AsyncConnection,
        dials: Sequence[SpeedDial],
        too_many: Callable[[SpeedDial], None],
    ) -> None:
        account_id = dials[0].account_id
        existing = set(
            (
                await conn.execute(
                    select(speed_dials.c.code).where(speed_dials.c.account_id == account_id)
                )
            ).scalars()
        )
        for dial in dials:
            if dial.code in existing:
                await conn.execute(
                    update(speed_dials)
                    .where(speed_dials.c.account_id == account_id, speed_dials.c.code == dial.code)
                    .values(number=dial.number, label=dial.label)
                )
                continue
            if len(existing) >= MAX_SPEED_DIALS:
                too_many(dial)
                raise Conflict(f"account {account_id} already has {MAX_SPEED_DIALS} speed dials")
            await conn.execute(
                insert(speed_dials).values(
                    account_id=account_id, code=dial.code, number=dial.number, label=dial.label
                )
            )
            existing.add(dial.code)

    async def delete(self, account_id: int, code: str) -> bool:
        """Remove a speed dial; ``False`` if there was none."""
        async with self.db.write() as conn:
            result = await conn.execute(
                delete(speed_dials).where(
                    speed_dials.c.account_id == account_id, speed_dials.c.code == code
                )
            )
            return bool(result.rowcount)

    async def get(self, account_id: int, code: str) -> SpeedDial | None:
        """The speed dial for ``code`` (what ``0`` + code dials), or ``None``."""
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(speed_dials).where(
                        speed_dials.c.account_id == account_id, speed_dials.c.code == code
                    )
                )
            ).first()
        return SpeedDial(row.account_id, row.code, row.number, row.label) if row else None

    async def list(self, account_id: int) -> tuple[SpeedDial, ...]:
        """The account's speed dials by code."""
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(speed_dials)
                .where(speed_dials.c.account_id == account_id)
                .order_by(speed_dials.c.code)
            )
            return tuple(SpeedDial(r.account_id, r.code, r.number, r.label) for r in rows)

    async def import_csv(self, account_id: int, path: str | Path) -> int:
        """Load ``code,number[,label]`` rows (all or nothing); returns the rows stored.

        Codes already present are replaced. Any error names the file and line.
        """
        dials: list[SpeedDial] = []
        lines: dict[str, int] = {}
        for line, cells in _csv_rows(path, "code"):
            if len(cells) < 2 or len(cells) > 3:
                raise CsvError(path, line, "expected code,number[,label]")
            try:
                code = speed_dial_code(cells[0])
                number = number_digits(cells[1])
            except InvalidInput as exc:
                raise CsvError(path, line, str(exc)) from None
            if code in lines:
                raise CsvError(path, line, f"code {code} already given on line {lines[code]}")
            lines[code] = line
            dials.append(SpeedDial(account_id, code, number, cells[2] if len(cells) > 2 else ""))
        if not dials:
            return 0

        def too_many(dial: SpeedDial) -> None:
            raise CsvError(
                path,
                lines[dial.code],
                f"more than {MAX_SPEED_DIALS} speed dials for account {account_id}",
            )

        async with self.db.write() as conn:
            await _lock_account(conn, account_id)
            await self._upsert(conn, dials, too_many)
        log.info("account %d: %d speed dials imported from %s", account_id, len(dials), path)
        return len(dials)


# -- rates --------------------------------------------------------------------------------------

MAX_PREFIX_DIGITS = 16
_TRUE = {"1", "yes", "true", "y", "blocked", "x"}
_FALSE = {"", "0", "no", "false", "n"}


def _rate(row: Row[Any]) -> Rate:
    return Rate(
        row.prefix,
        row.description,
        row.price_per_minute,
        row.increment_s,
        row.minimum_s,
        bool(row.blocked),
    )


class RateRepo:
    """Prices per destination prefix; a number is rated by its longest matching prefix."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def set(self, rate: Rate) -> Rate:
        """Store or replace the rate for ``rate.prefix``."""
        checked = self._check(rate)
        async with self.db.write() as conn:
            await self._upsert(conn, [checked])
        return checked

    @staticmethod
    def _check(rate: Rate) -> Rate:
        if not rate.prefix.isascii() or not rate.prefix.isdigit():
            raise InvalidInput(f"prefix {rate.prefix!r}: digits only")
        if len(rate.prefix) > MAX_PREFIX_DIGITS:
            raise InvalidInput(f"prefix {rate.prefix!r}: at most {MAX_PREFIX_DIGITS} digits")
        if rate.price_per_minute < 0 or rate.minimum_s < 0 or rate.increment_s < 1:
            raise InvalidInput(f"prefix {rate.prefix}: price and times must be positive")
        return rate

    @staticmethod
    async def _upsert(conn: AsyncConnection, items: Sequence[Rate]) -> None:
        existing = set((await conn.execute(select(rates.c.prefix))).scalars())
        for rate in items:
            values = {
                "description": rate.description,
                "price_per_minute": rate.price_per_minute,
                "increment_s": rate.increment_s,
                "minimum_s": rate.minimum_s,
                "blocked": rate.blocked,
            }
            if rate.prefix in existing:
                await conn.execute(
                    update(rates).where(rates.c.prefix == rate.prefix).values(**values)
                )
            else:
                await conn.execute(insert(rates).values(prefix=rate.prefix, **values))

    async def delete(self, prefix: str) -> bool:
        """Remove the rate for ``prefix``; ``False`` if there was none."""
        async with self.db.write() as conn:
            result = await conn.execute(delete(rates).where(rates.c.prefix == prefix))
            return bool(result.rowcount)

    async def list(self) -> tuple[Rate, ...]:
        """Every rate, by prefix."""
        async with self.db.read() as conn:
            rows = await conn.execute(select(rates).order_by(rates.c.prefix))
            return tuple(_rate(r) for r in rows)

    async def lookup(self, number: str) -> Rate | None:
        """The rate for an E.164 number: the longest prefix that matches, or ``None``.

        One indexed query on both databases: ``prefix IN (every prefix of the number)``.
        """
        try:
            digits = number_digits(number)
        except InvalidInput:
            return None
        candidates = [digits[:i] for i in range(1, min(len(digits), MAX_PREFIX_DIGITS) + 1)]
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(rates)
                    .where(rates.c.prefix.in_(candidates))
                    .order_by(func.length(rates.c.prefix).desc())
                    .limit(1)
                )
            ).first()
        return _rate(row) if row else None

    async def import_csv(self, path: str | Path, *, replace_all: bool = False) -> int:
        """Load rates (all or nothing); returns the rows stored. Errors name file and line.

        Columns: ``prefix,description,price_per_minute[,increment_s[,minimum_s[,blocked]]]``
        (defaults 6, 30, not blocked; ``blocked`` is yes/no/1/0/true/false). A header line
        starting with ``prefix`` is skipped. ``replace_all`` deletes rates not in the file.
        """
        items: list[Rate] = []
        lines: dict[str, int] = {}
        for line, cells in _csv_rows(path, "prefix"):
            if not 3 <= len(cells) <= 6:
                raise CsvError(
                    path,
                    line,
                    "expected prefix,description,price_per_minute"
                    "[,increment_s[,minimum_s[,blocked]]]",
                )
            prefix = cells[0].removeprefix("+")
            if not prefix.isascii() or not prefix.isdigit() or len(prefix) > MAX_PREFIX_DIGITS:
                raise CsvError(path, line, f"prefix {cells[0]!r}: 1 to 16 digits")
            if prefix in lines:
                raise CsvError(path, line, f"prefix {prefix} already given on line {lines[prefix]}")
            lines[prefix] = line
            price = _int_cell(path, line, "price_per_minute", cells[2], minimum=0)
            increment = (
                _int_cell(path, line, "increment_s", cells[3], minimum=1)
                if len(cells) > 3 and cells[3]
                else 6
            )
            minimum = (
                _int_cell(path, line, "minimum_s", cells[4], minimum=0)
                if len(cells) > 4 and cells[4]
                else 30
            )
            flag = cells[5].lower() if len(cells) > 5 else ""
            if flag not in _TRUE | _FALSE:
                raise CsvError(path, line, f"blocked: expected yes or no, got {cells[5]!r}")
            items.append(Rate(prefix, cells[1], price, increment, minimum, flag in _TRUE))
        async with self.db.write() as conn:
            if replace_all:
                await conn.execute(delete(rates).where(rates.c.prefix.not_in(list(lines))))
            await self._upsert(conn, items)
        log.info("%d rates imported from %s", len(items), path)
        return len(items)


# -- credit -------------------------------------------------------------------------------------


class CreditRepo:
    """Credit held for live calls, so concurrent calls can never spend the same credit twice."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def reserve(
        self, account_id: int, amount: int, call_uuid: str, *, now: float, ttl_s: float = 3600.0
    ) -> bool:
        """Hold ``amount`` for ``call_uuid`` if the account can afford it; ``False`` if not.

        Reserving again for the same call adds to its reservation (a call extends its hold
        minute by minute). Suspended accounts cannot reserve.
        """
        if amount < 0:
            raise InvalidInput("amount: must not be negative")
        expires = us(now + ttl_s)
        async with self.db.write() as conn:
            held = await conn.execute(
                update(accounts)
                .where(
                    accounts.c.id == account_id,
                    accounts.c.status == AccountStatus.ACTIVE.value,
                    accounts.c.credit_limit - accounts.c.credit_used - accounts.c.credit_reserved
                    >= amount,
                )
                .values(credit_reserved=accounts.c.credit_reserved + amount)
            )
            if held.rowcount == 0:
                exists = (
                    await conn.execute(select(accounts.c.id).where(accounts.c.id == account_id))
                ).first()
                if exists is None:
                    raise NotFound(f"no account {account_id}")
                return False
            owner = (
                await conn.execute(
                    select(credit_reservations.c.account_id).where(
                        credit_reservations.c.call_uuid == call_uuid
                    )
                )
            ).scalar_one_or_none()
            if owner is None:
                await conn.execute(
                    insert(credit_reservations).values(
                        call_uuid=call_uuid,
                        account_id=account_id,
                        amount=amount,
                        created_us=us(now),
                        expires_us=expires,
                    )
                )
            elif owner == account_id:
                await conn.execute(
                    update(credit_reservations)
                    .where(credit_reservations.c.call_uuid == call_uuid)
                    .values(amount=credit_reservations.c.amount + amount, expires_us=expires)
                )
            else:
                raise InvalidInput(f"call {call_uuid} holds credit of account {owner}")
        return True

    async def commit(self, call_uuid: str, actual_cost: int) -> None:
        """The call ended: charge ``actual_cost`` and drop its reservation."""
        if actual_cost < 0:
            raise InvalidInput("cost: must not be negative")
        async with self.db.write() as conn:
            account_id, amount = await self._drop(conn, call_uuid)
            await conn.execute(
                update(accounts)
                .where(accounts.c.id == account_id)
                .values(
                    credit_reserved=accounts.c.credit_reserved - amount,
                    credit_used=accounts.c.credit_used + actual_cost,
                )
            )

    async def release(self, call_uuid: str) -> None:
        """The call never cost anything: give the reserved credit back."""
        async with self.db.write() as conn:
            account_id, amount = await self._drop(conn, call_uuid)
            await conn.execute(
                update(accounts)
                .where(accounts.c.id == account_id)
                .values(credit_reserved=accounts.c.credit_reserved - amount)
            )

    async def release_expired(self, now: float) -> int:
        """Give back reservations whose call (on a node that died) outlived ``expires``."""
        async with self.db.write() as conn:
            rows = (
                await conn.execute(
                    select(credit_reservations.c.call_uuid)
                    .where(credit_reservations.c.expires_us <= us(now))
                    .with_for_update(skip_locked=True)
                )
            ).all()
            for row in rows:
                account_id, amount = await self._drop(conn, row.call_uuid)
                await conn.execute(
                    update(accounts)
                    .where(accounts.c.id == account_id)
                    .values(credit_reserved=accounts.c.credit_reserved - amount)
                )
                log.warning("credit reservation of call %s expired, released", row.call_uuid)
        return len(rows)

    async def reservations(self, account_id: int) -> tuple[CreditReservation, ...]:
        """The account's open reservations, oldest first."""
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(credit_reservations)
                .where(credit_reservations.c.account_id == account_id)
                .order_by(credit_reservations.c.created_us)
            )
            return tuple(
                CreditReservation(
                    r.call_uuid, r.account_id, r.amount, _s(r.created_us), _s(r.expires_us)
                )
                for r in rows
            )

    @staticmethod
    async def _drop(conn: AsyncConnection, call_uuid: str) -> tuple[int, int]:
        row = (
            await conn.execute(
                delete(credit_reservations)
                .where(credit_reservations.c.call_uuid == call_uuid)
                .returning(credit_reservations.c.account_id, credit_reservations.c.amount)
            )
        ).first()
        if row is None:
            raise NotFound(f"no credit reservation for call {call_uuid}")
        return int(row.account_id), int(row.amount)


# -- CDRs ---------------------------------------------------------------------------------------

CDR_CSV_COLUMNS = (
    "id",
    "call_uuid",
    "leg",
    "account_id",
    "from_number",
    "to_number",
    "setup_at",
    "ring_at",
    "answer_at",
    "end_at",
    "cause_code",
    "cause_text",
    "billed_seconds",
    "cost",
    "node_id",
)


def iso_utc(when: float | None) -> str:
    """``2024-05-01T12:00:00.123456Z`` for epoch seconds; '' for ``None``."""
    if when is None:
        return ""
    return datetime.fromtimestamp(when, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _cdr(row: Row[Any]) -> Cdr:
    return Cdr(
        call_uuid=row.call_uuid,
        leg=LegKind(row.leg),
        account_id=row.account_id,
        from_number=row.from_number,
        to_number=row.to_number,
        setup_at=_s(row.setup_us),
        ring_at=seconds(row.ring_us),
        answer_at=seconds(row.answer_us),
        end_at=seconds(row.end_us),
        cause_code=row.cause_code,
        cause_text=row.cause_text,
        billed_seconds=row.billed_seconds,
        cost=row.cost,
        node_id=row.node_id,
        id=row.id,
    )


@dataclass(frozen=True, slots=True)
class CdrFilter:
    """Which CDRs to list or export (all given conditions must hold; times are setup times)."""

    account_id: int | None = None
    call_uuid: str | None = None
    since: float | None = None
    until: float | None = None

    def where(self) -> Any:
        conditions = []
        if self.account_id is not None:
            conditions.append(cdrs.c.account_id == self.account_id)
        if self.call_uuid is not None:
            conditions.append(cdrs.c.call_uuid == self.call_uuid)
        if self.since is not None:
            conditions.append(cdrs.c.setup_us >= us(self.since))
        if self.until is not None:
            conditions.append(cdrs.c.setup_us < us(self.until))
        return and_(true(), *conditions)


class CdrRepo:
    """Call detail records, one per leg; a write is on disk when it returns (SPEC section 7)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def write(self, cdr: Cdr) -> Cdr:
        """Store ``cdr`` durably; returns it with its ``id``."""
        return (await self.write_many([cdr]))[0]

    async def write_many(self, records: Sequence[Cdr]) -> list[Cdr]:
        """Write several CDRs in one transaction (group commit); durable when it returns."""
        if not records:
            return []
        cdrs_table = cdrs
        async with self.db.write() as conn:
            written = []
            for cdr in records:
                result = await conn.execute(
                    insert(cdrs_table)
                    .values(
                        call_uuid=cdr.call_uuid,
                        leg=cdr.leg.value,
                        account_id=cdr.account_id,
                        from_number=cdr.from_number,
                        to_number=cdr.to_number,
                        setup_us=us(cdr.setup_at),
                        ring_us=None if cdr.ring_at is None else us(cdr.ring_at),
                        answer_us=None if cdr.answer_at is None else us(cdr.answer_at),
                        end_us=None if cdr.end_at is None else us(cdr.end_at),
                        cause_code=cdr.cause_code,
                        cause_text=cdr.cause_text,
                        billed_seconds=cdr.billed_seconds,
                        cost=cdr.cost,
                        node_id=cdr.node_id,
                    )
                    .returning(cdrs_table.c.id)
                )
                written.append(replace(cdr, id=int(result.scalar_one())))
        return written

    async def list(self, where: CdrFilter | None = None, *, limit: int = 1000) -> tuple[Cdr, ...]:
        """CDRs matching ``where`` in setup order (oldest first), at most ``limit``."""
        where = where or CdrFilter()
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(cdrs).where(where.where()).order_by(cdrs.c.setup_us, cdrs.c.id).limit(limit)
            )
            return tuple(_cdr(r) for r in rows)

    async def export_csv(self, out: TextIO, where: CdrFilter | None = None) -> int:
        """Write matching CDRs as CSV with a header (times ISO 8601 UTC); returns the rows."""
        where = where or CdrFilter()
        writer = csv.writer(out)
        writer.writerow(CDR_CSV_COLUMNS)
        count = 0
        async with self.db.read() as conn:
            result = await conn.stream(
                select(cdrs).where(where.where()).order_by(cdrs.c.setup_us, cdrs.c.id)
            )
            async for row in result:
                c = _cdr(row)
                writer.writerow(
                    [
                        c.id,
                        c.call_uuid,
                        c.leg.value,
                        "" if c.account_id is None else c.account_id,
                        c.from_number,
                        c.to_number,
                        iso_utc(c.setup_at),
                        iso_utc(c.ring_at),
                        iso_utc(c.answer_at),
                        iso_utc(c.end_at),
                        "" if c.cause_code is None else c.cause_code,
                        c.cause_text,
                        c.billed_seconds,
                        c.cost,
                        c.node_id,
                    ]
                )
                count += 1
        return count


# -- the callback queue -------------------------------------------------------------------------

OPEN_STATES = (CallbackState.PENDING.value, CallbackState.CLAIMED.value)

# event -> (states it may start from, state it leads to); claiming is ``claim_due``'s own query.
CALLBACK_TRANSITIONS: dict[str, tuple[frozenset[CallbackState], CallbackState]] = {
    "claim": (frozenset({CallbackState.PENDING, CallbackState.CLAIMED}), CallbackState.CLAIMED),
    "reschedule": (frozenset({CallbackState.CLAIMED}), CallbackState.PENDING),
    "complete": (frozenset({CallbackState.CLAIMED}), CallbackState.DONE),
    "fail": (frozenset({CallbackState.CLAIMED}), CallbackState.FAILED),
}


def _callback(row: Row[Any]) -> PendingCallback:
    return PendingCallback(
        id=row.id,
        account_id=row.account_id,
        trigger=row.trigger_number,
        requested_at=_s(row.requested_us),
        due_at=_s(row.due_us),
        attempts=row.attempts,
        state=CallbackState(row.state),
        claimed_by=row.claimed_by,
        claimed_until=seconds(row.claimed_until_us),
        last_error=row.last_error,
    )


class CallbackQueue:
    """Callbacks owed to customers, shared by every node through the database.

    A node ``claim_due``s callbacks with a lease, places them, then ``complete``s, ``fail``s or
    ``reschedule``s each (retries, SPEC section 1.4). Claiming counts an attempt. If the node
    dies, the lease runs out and another node's ``claim_due`` takes the callback over.
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    async def enqueue(
        self,
        account_id: int,
        trigger: str,
        due_at: float,
        *,
        now: float,
        claim_for: tuple[str, float] | None = None,
    ) -> tuple[PendingCallback, bool]:
        """Queue a callback; while one is open for the account, return that one instead.

        Returns ``(callback, created)``: ``created`` is ``False`` when the trigger was absorbed.
        ``claim_for=(node_id, lease_s)`` queues it already claimed by that node (one write
        instead of two on the path from trigger to callback; the lease still lets another
        node take it over if this one dies).
        """
        values: dict[str, Any] = {
            "account_id": account_id,
            "trigger_number": trigger,
            "requested_us": us(now),
            "due_us": us(due_at),
            "state": CallbackState.PENDING.value,
        }
        if claim_for is not None:
            node_id, lease_s = claim_for
            values.update(
                state=CallbackState.CLAIMED.value,
                claimed_by=node_id,
                claimed_until_us=us(now + lease_s),
                attempts=1,
            )
        try:
            async with self.db.write() as conn:
                existing = await self._open_for(conn, account_id)
                if existing is not None:
                    return existing, False
                row = (
                    await conn.execute(insert(callbacks).values(**values).returning(*callbacks.c))
                ).one()
                return _callback(row), True
        except IntegrityError:
            # Another node queued one between our check and insert (PostgreSQL): absorb.
            async with self.db.read() as conn:
                existing = await self._open_for(conn, account_id)
            if existing is None:
                raise
            return existing, False

    async def enqueue_many(
        self,
        items: Sequence[tuple[int, str]],
        *,
        now: float,
        claim_for: tuple[str, float] | None = None,
    ) -> list[tuple[PendingCallback, bool]]:
        """:meth:`enqueue` for many ``(account_id, trigger)`` at once, in one transaction.

        A busy node gets many triggers per millisecond; one commit for all of them keeps the
        store from being the bottleneck (each commit costs milliseconds). Due at ``now``.
        """
        values: dict[str, Any] = {"requested_us": us(now), "due_us": us(now)}
        if claim_for is not None:
            node_id, lease_s = claim_for
            values.update(
                state=CallbackState.CLAIMED.value,
                claimed_by=node_id,
                claimed_until_us=us(now + lease_s),
                attempts=1,
            )
        else:
            values["state"] = CallbackState.PENDING.value
        try:
            async with self.db.write() as conn:
                out: list[tuple[PendingCallback, bool]] = []
                for account_id, trigger in items:
                    existing = await self._open_for(conn, account_id)
                    if existing is not None:
                        out.append((existing, False))
                        continue
                    row = (
                        await conn.execute(
                            insert(callbacks)
                            .values(account_id=account_id, trigger_number=trigger, **values)
                            .returning(*callbacks.c)
                        )
                    ).one()
                    out.append((_callback(row), True))
                return out
        except IntegrityError:
            # Another node raced us on one of them (PostgreSQL): take them one by one.
            return [await self.enqueue(a, t, now, now=now, claim_for=claim_for) for a, t in items]

    @staticmethod
    async def _open_for(conn: AsyncConnection, account_id: int) -> PendingCallback | None:
        row = (
            await conn.execute(
                select(callbacks).where(
                    callbacks.c.account_id == account_id, callbacks.c.state.in_(OPEN_STATES)
                )
            )
        ).first()
        return _callback(row) if row else None

    async def open_for(self, account_id: int) -> PendingCallback | None:
        """The account's pending or claimed callback, if any."""
        async with self.db.read() as conn:
            return await self._open_for(conn, account_id)

    async def get(self, callback_id: int) -> PendingCallback:
        """One callback by id (``NotFound`` if none)."""
        async with self.db.read() as conn:
            row = (
                await conn.execute(select(callbacks).where(callbacks.c.id == callback_id))
            ).first()
        if row is None:
            raise NotFound(f"no callback {callback_id}")
        return _callback(row)

    async def list(self, *, state: CallbackState | None = None) -> tuple[PendingCallback, ...]:
        """Callbacks (in one state, or all) by id."""
        query = select(callbacks).order_by(callbacks.c.id)
        if state is not None:
            query = query.where(callbacks.c.state == state.value)
        async with self.db.read() as conn:
            return tuple(_callback(r) for r in await conn.execute(query))

    async def claim_due(
        self, node_id: str, now: float, lease_s: float, limit: int = 10
    ) -> tuple[PendingCallback, ...]:
        """Claim up to ``limit`` callbacks due by ``now`` for ``lease_s`` seconds.

        Also takes over callbacks whose lease expired (their node died). No callback is ever
        held by two nodes: rows are locked ``SKIP LOCKED`` on PostgreSQL and the writer lock
        is held on SQLite between choosing and marking them.
        """
        now_us = us(now)
        due = or_(
            and_(callbacks.c.state == CallbackState.PENDING.value, callbacks.c.due_us <= now_us),
            and_(
                callbacks.c.state == CallbackState.CLAIMED.value,
                callbacks.c.claimed_until_us < now_us,
            ),
        )
        async with self.db.write() as conn:
            chosen = (
                await conn.execute(
                    select(callbacks.c.id, callbacks.c.state, callbacks.c.claimed_by)
                    .where(due)
                    .order_by(callbacks.c.due_us, callbacks.c.id)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            if not chosen:
                return ()
            rows = (
                await conn.execute(
                    update(callbacks)
                    .where(callbacks.c.id.in_([c.id for c in chosen]))
                    .values(
                        state=CallbackState.CLAIMED.value,
                        claimed_by=node_id,
                        claimed_until_us=now_us + us(lease_s),
                        attempts=callbacks.c.attempts + 1,
                    )
                    .returning(*callbacks.c)
                )
            ).all()
        for c in chosen:
            if c.state == CallbackState.CLAIMED.value:
                log.warning(
                    "callback %d: lease of %s expired, claimed -> claimed by %s",
                    c.id,
                    c.claimed_by,
                    node_id,
                )
            else:
                log.info("callback %d: pending -> claimed by %s", c.id, node_id)
        return tuple(sorted((_callback(r) for r in rows), key=lambda p: (p.due_at, p.id)))

    async def reschedule(
        self, callback_id: int, due_at: float, error: str, *, node_id: str | None = None
    ) -> bool:
        """Put a claimed callback back in the queue for another attempt at ``due_at``."""
        return await self._move(
            callback_id, "reschedule", node_id, due_us=us(due_at), last_error=error
        )

    async def complete(self, callback_id: int, *, node_id: str | None = None) -> bool:
        """The callback was placed (answered): it leaves the queue."""
        return await self._move(callback_id, "complete", node_id)

    async def fail(self, callback_id: int, error: str, *, node_id: str | None = None) -> bool:
        """Give up on the callback (attempts exhausted, account suspended ...)."""
        return await self._move(callback_id, "fail", node_id, last_error=error)

    async def settle_many(
        self, items: Sequence[tuple[int, str, str | None]], *, node_id: str
    ) -> builtins.list[bool]:
        """``complete`` / ``fail`` several callbacks of ``node_id`` in one transaction.

        ``items`` are ``(callback_id, "complete" | "fail", error)``. Each result is False when
        the move did not apply (the claim was lost, or the state allows no such move); those
        are logged, not raised, so one stale callback cannot fail the others' commit.
        """
        out: list[bool] = []
        async with self.db.write() as conn:
            for callback_id, event, error in items:
                sources, target = CALLBACK_TRANSITIONS[event]
                values: dict[str, Any] = {} if error is None else {"last_error": error}
                result = await conn.execute(
                    update(callbacks)
                    .where(
                        callbacks.c.id == callback_id,
                        callbacks.c.state.in_([st.value for st in sources]),
                        callbacks.c.claimed_by == node_id,
                    )
                    .values(state=target.value, claimed_by=None, claimed_until_us=None, **values)
                )
                moved = bool(result.rowcount)
                if moved:
                    log.info("callback %d: claimed -> %s (%s)", callback_id, target.value, event)
                else:
                    log.warning(
                        "callback %d: %s by %s did not apply (claim lost?)",
                        callback_id,
                        event,
                        node_id,
                    )
                out.append(moved)
        return out

    async def _move(self, callback_id: int, event: str, node_id: str | None, **values: Any) -> bool:
        """Apply ``event``; ``False`` if ``node_id`` lost its claim (lease taken over)."""
        sources, target = CALLBACK_TRANSITIONS[event]
        conditions = [
            callbacks.c.id == callback_id,
            callbacks.c.state.in_([s.value for s in sources]),
        ]
        if node_id is not None:
            conditions.append(callbacks.c.claimed_by == node_id)
        async with self.db.write() as conn:
            result = await conn.execute(
                update(callbacks)
                .where(*conditions)
                .values(state=target.value, claimed_by=None, claimed_until_us=None, **values)
            )
            if result.rowcount:
                old = ", ".join(sorted(s.value for s in sources))
                log.info("callback %d: %s -> %s (%s)", callback_id, old, target.value, event)
                return True
            row = (
                await conn.execute(
                    select(callbacks.c.state, callbacks.c.claimed_by).where(
                        callbacks.c.id == callback_id
                    )
                )
            ).first()
        if row is None:
            raise NotFound(f"no callback {callback_id}")
        if node_id is not None and row.claimed_by != node_id:
            log.warning("callback %d: %s by %s refused, claim lost", callback_id, event, node_id)
            return False
        raise IllegalTransition(f"callback {callback_id}: cannot {event} from {row.state}")


# -- the whole store ----------------------------------------------------------------------------


class Store:
    """The database and every repository on it: what a node or the admin CLI opens."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.accounts = AccountRepo(db)
        self.speed_dials = SpeedDialRepo(db)
        self.rates = RateRepo(db)
        self.credit = CreditRepo(db)
        self.cdrs = CdrRepo(db)
        self.callbacks = CallbackQueue(db)

    @classmethod
    async def open(
        cls, url: str, *, clock: Callable[[], float] = time.time, migrate: bool = True
    ) -> Store:
        """Connect to ``url`` and (by default) bring the schema up to date."""
        db = Database(url, clock=clock)
        if migrate:
            try:
                await db.migrate()
            except BaseException:
                await db.close()
                raise
        return cls(db)

    async def close(self) -> None:
        await self.db.close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
