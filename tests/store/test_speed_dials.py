"""SpeedDialRepo: codes, replacing, the 115 limit (one at a time and in batches)."""

from __future__ import annotations

import pytest

from softswitch.store import (
    Conflict,
    InvalidInput,
    NotFound,
    SpeedDial,
    Store,
    TooManySpeedDials,
)


async def test_speed_dial_set_get_list_delete(store: Store) -> None:
    acct = await store.accounts.add("Alice")
    await store.speed_dials.set(acct.id, "087", "+81 3 1234 5678", "office")
    await store.speed_dials.set(acct.id, "03", "12125550100")
    assert await store.speed_dials.get(acct.id, "03") == SpeedDial(acct.id, "03", "12125550100")
    await store.speed_dials.set(acct.id, "03", "4420712345678", "london")  # replaces
    assert [(d.code, d.number, d.label) for d in await store.speed_dials.list(acct.id)] == [
        ("03", "4420712345678", "london"),
        ("087", "81312345678", "office"),
    ]
    assert await store.speed_dials.delete(acct.id, "03")
    assert not await store.speed_dials.delete(acct.id, "03")
    assert await store.speed_dials.get(acct.id, "03") is None
    for bad in ("3", "00", "001", "0", "01234", "0a"):
        with pytest.raises(InvalidInput):
            await store.speed_dials.set(acct.id, bad, "8131234")
    with pytest.raises(NotFound):
        await store.speed_dials.set(999, "03", "8131234")


async def test_at_most_115_speed_dials(store: Store) -> None:
    acct = await store.accounts.add("Alice")
    codes = [f"0{n}" for n in range(10, 125)]  # 115 codes
    dials = [SpeedDial(acct.id, c, f"8131000{c}") for c in codes]
    assert await store.speed_dials.set_many(acct.id, dials) == 115
    with pytest.raises(Conflict):
        await store.speed_dials.set(acct.id, "0999", "8131234")
    await store.speed_dials.set(acct.id, "010", "8139999")  # replacing an existing code is fine
    more = [SpeedDial(acct.id, "011", "81312345678"), SpeedDial(acct.id, "0998", "81398765432")]
    with pytest.raises(TooManySpeedDials) as info:
        await store.speed_dials.set_many(acct.id, more)
    assert info.value.index == 1 and "115" in str(info.value)  # the first dial that did not fit
    assert len(await store.speed_dials.list(acct.id)) == 115  # all or nothing
    assert (await store.speed_dials.get(acct.id, "011")) == SpeedDial(acct.id, "011", "8131000011")


async def test_set_many_checks_every_dial(store: Store) -> None:
    acct = await store.accounts.add("Alice")
    assert await store.speed_dials.set_many(acct.id, []) == 0
    for bad in (
        [SpeedDial(acct.id, "03", "81312345678"), SpeedDial(acct.id, "00", "81398765432")],
        [SpeedDial(acct.id, "03", "81312345678"), SpeedDial(acct.id, "04", "81-3x")],
        [SpeedDial(acct.id, "03", "81312345678"), SpeedDial(acct.id, "03", "81398765432")],
    ):
        with pytest.raises(InvalidInput):
            await store.speed_dials.set_many(acct.id, bad)
    assert await store.speed_dials.list(acct.id) == ()
    with pytest.raises(NotFound):
        await store.speed_dials.set_many(999, [SpeedDial(999, "03", "81312345678")])
    stored = await store.speed_dials.set_many(acct.id, [SpeedDial(0, "03", "+81 3 1234 5678", "x")])
    assert stored == 1
    assert await store.speed_dials.list(acct.id) == (SpeedDial(acct.id, "03", "81312345678", "x"),)
