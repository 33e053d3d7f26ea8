"""SpeedDialRepo and RateRepo: codes, the 115 limit, CSV imports naming the bad line, lookup."""

from __future__ import annotations

from pathlib import Path

import pytest

from softswitch.store import Conflict, CsvError, InvalidInput, NotFound, Rate, SpeedDial, Store


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


async def test_at_most_115_speed_dials(store: Store, tmp_path: Path) -> None:
    acct = await store.accounts.add("Alice")
    codes = [f"0{n}" for n in range(10, 125)]  # 115 codes
    path = tmp_path / "dials.csv"
    path.write_text("".join(f"{c},8131000{c}\n" for c in codes))
    assert await store.speed_dials.import_csv(acct.id, path) == 115
    with pytest.raises(Conflict):
        await store.speed_dials.set(acct.id, "0999", "8131234")
    await store.speed_dials.set(acct.id, "010", "8139999")  # replacing an existing code is fine
    more = tmp_path / "more.csv"
    more.write_text("code,number\n011,8131\n0998,8132\n")
    with pytest.raises(CsvError, match=r"more\.csv:3: more than 115"):
        await store.speed_dials.import_csv(acct.id, more)
    assert len(await store.speed_dials.list(acct.id)) == 115
    assert (await store.speed_dials.get(acct.id, "011")) == SpeedDial(acct.id, "011", "8131000011")


async def test_speed_dial_csv_errors_name_the_line(store: Store, tmp_path: Path) -> None:
    acct = await store.accounts.add("Alice")
    path = tmp_path / "d.csv"
    cases = {
        "code,number,label\n03,8131,home\n\n# comment\n00,8132\n": r"d\.csv:5: speed-dial code",
        "03,8131\n04,81-3x\n": r"d\.csv:2: number",
        "03,8131\n03,8132\n": r"d\.csv:2: code 03 already given on line 1",
        "03\n": r"d\.csv:1: expected code,number",
        '03,"8131\n': r"d\.csv:1: ",
    }
    for text, pattern in cases.items():
        path.write_text(text)
        with pytest.raises(CsvError, match=pattern):
            await store.speed_dials.import_csv(acct.id, path)
    assert await store.speed_dials.list(acct.id) == ()  # all or nothing
    with pytest.raises(CsvError, match="cannot read"):
        await store.speed_dials.import_csv(acct.id, tmp_path / "missing.csv")
    path.write_bytes(b"03,\xff\xfe\n")
    with pytest.raises(CsvError, match="UTF-8"):
        await store.speed_dials.import_csv(acct.id, path)


async def test_rates_import_and_longest_prefix_lookup(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "rates.csv"
    path.write_text(
        "prefix,description,price_per_minute,increment_s,minimum_s,blocked\n"
        "1,USA/Canada,20\n"
        "44,United Kingdom,30,6,30,no\n"
        "447,UK mobile,60,6\n"
        "+8190,Japan premium,0,6,30,yes\n"
        "81,Japan,15,30,60\n"
    )
    assert await store.rates.import_csv(path) == 5
    assert await store.rates.lookup("+44 7911 123456") == Rate("447", "UK mobile", 60, 6, 30)
    assert (await store.rates.lookup("442071234567")) == Rate("44", "United Kingdom", 30, 6, 30)
    assert await store.rates.lookup("12125550100") == Rate("1", "USA/Canada", 20, 6, 30)
    premium = await store.rates.lookup("819012345678")
    assert premium is not None and premium.blocked
    assert (await store.rates.lookup("81312345678")) == Rate("81", "Japan", 15, 30, 60)
    assert await store.rates.lookup("33123456789") is None
    assert await store.rates.lookup("garbage") is None
    assert [r.prefix for r in await store.rates.list()] == ["1", "44", "447", "81", "8190"]

    path.write_text("447,UK mobile,50,6\n")
    assert await store.rates.import_csv(path) == 1  # upsert keeps the others
    assert (await store.rates.lookup("447911123456")) == Rate("447", "UK mobile", 50, 6, 30)
    assert len(await store.rates.list()) == 5
    assert await store.rates.import_csv(path, replace_all=True) == 1
    assert [r.prefix for r in await store.rates.list()] == ["447"]
    await store.rates.set(Rate("33", "France", 25))
    assert await store.rates.delete("33") and not await store.rates.delete("33")
    with pytest.raises(InvalidInput):
        await store.rates.set(Rate("3x", "bad", 1))


async def test_rate_csv_errors_name_the_line(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    cases = {
        "prefix,description,price\n1,USA,20\n44,UK,thirty\n": r"r\.csv:3: price_per_minute",
        "1,USA,20\n1,USA again,20\n": r"r\.csv:2: prefix 1 already given on line 1",
        "1,USA\n": r"r\.csv:1: expected prefix,description",
        "1x,USA,20\n": r"r\.csv:1: prefix",
        "1,USA,20,0\n": r"r\.csv:1: increment_s: must be at least 1",
        "1,USA,20,6,-1\n": r"r\.csv:1: minimum_s",
        "1,USA,20,6,30,maybe\n": r"r\.csv:1: blocked",
    }
    for text, pattern in cases.items():
        path.write_text(text)
        with pytest.raises(CsvError, match=pattern):
            await store.rates.import_csv(path)
    assert await store.rates.list() == ()
