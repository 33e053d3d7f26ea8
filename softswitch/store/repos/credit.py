"""Credit held for live calls, so concurrent calls can never spend the same credit twice.

``CreditRepo.reserve`` is a single conditional UPDATE of the account row
(``WHERE credit_limit - credit_used - credit_reserved >= amount``). Two calls racing for the
last credit serialise on that row and the second sees the first's reservation: one wins.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from softswitch.store.db import Database, us
from softswitch.store.models import AccountStatus, CreditReservation
from softswitch.store.repos.common import InvalidInput, NotFound, by_dialect, log, to_seconds
from softswitch.store.tables import accounts, credit_reservations

# Built once and executed with bound parameters, so the compiled forms come from the cache.
_HOLD = (
    update(accounts)
    .where(
        accounts.c.id == bindparam("account_id"),
        accounts.c.status == AccountStatus.ACTIVE.value,
        accounts.c.credit_limit - accounts.c.credit_used - accounts.c.credit_reserved
        >= bindparam("amount"),
    )
    .values(credit_reserved=accounts.c.credit_reserved + bindparam("amount"))
)
_ACCOUNT = select(accounts.c.id).where(accounts.c.id == bindparam("account_id"))
_OWNER = select(credit_reservations.c.account_id).where(
    credit_reservations.c.call_uuid == bindparam("call_uuid")
)
_DROP = (
    delete(credit_reservations)
    .where(credit_reservations.c.call_uuid == bindparam("call_uuid"))
    .returning(credit_reservations.c.account_id, credit_reservations.c.amount)
)
_SETTLE = (
    update(accounts)
    .where(accounts.c.id == bindparam("account_id"))
    .values(
        credit_reserved=accounts.c.credit_reserved - bindparam("amount"),
        credit_used=accounts.c.credit_used + bindparam("cost"),
    )
)


def _add_hold(dialect: Any) -> Any:
    """Create the call's reservation, or add to it if it is the same account's: one
    statement that returns a row unless the call's reservation is another account's."""
    stmt = dialect.insert(credit_reservations)
    held = credit_reservations.c
    return stmt.on_conflict_do_update(
        index_elements=[held.call_uuid],
        set_={"amount": held.amount + stmt.excluded.amount, "expires_us": stmt.excluded.expires_us},
        where=held.account_id == stmt.excluded.account_id,
    ).returning(held.account_id)


_ADD_HOLD = by_dialect(_add_hold)


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
            held = await conn.execute(_HOLD, {"account_id": account_id, "amount": amount})
            if held.rowcount == 0:
                if (await conn.execute(_ACCOUNT, {"account_id": account_id})).first() is None:
                    raise NotFound(f"no account {account_id}")
                return False
            added = await conn.execute(
                _ADD_HOLD[self.db.dialect],
                {
                    "call_uuid": call_uuid,
                    "account_id": account_id,
                    "amount": amount,
                    "created_us": us(now),
                    "expires_us": expires,
                },
            )
            if added.first() is None:
                # Raised inside the transaction: the account's hold above is rolled back.
                owner = (await conn.execute(_OWNER, {"call_uuid": call_uuid})).scalar_one()
                raise InvalidInput(f"call {call_uuid} holds credit of account {owner}")
        return True

    async def commit(self, call_uuid: str, actual_cost: int) -> None:
        """The call ended: charge ``actual_cost`` and drop its reservation."""
        if actual_cost < 0:
            raise InvalidInput("cost: must not be negative")
        async with self.db.write() as conn:
            account_id, amount = await self._drop(conn, call_uuid)
            await conn.execute(
                _SETTLE, {"account_id": account_id, "amount": amount, "cost": actual_cost}
            )

    async def release(self, call_uuid: str) -> None:
        """The call never cost anything: give the reserved credit back."""
        async with self.db.write() as conn:
            account_id, amount = await self._drop(conn, call_uuid)
            await conn.execute(_SETTLE, {"account_id": account_id, "amount": amount, "cost": 0})

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
                await conn.execute(_SETTLE, {"account_id": account_id, "amount": amount, "cost": 0})
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
                    r.call_uuid,
                    r.account_id,
                    r.amount,
                    to_seconds(r.created_us),
                    to_seconds(r.expires_us),
                )
                for r in rows
            )

    @staticmethod
    async def _drop(conn: AsyncConnection, call_uuid: str) -> tuple[int, int]:
        row = (await conn.execute(_DROP, {"call_uuid": call_uuid})).first()
        if row is None:
            raise NotFound(f"no credit reservation for call {call_uuid}")
        return int(row.account_id), int(row.amount)
