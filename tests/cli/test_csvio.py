"""CSV imports and the CDR export: all or nothing, and every error names the file and line."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from softswitch.cli import csvio
from softswitch.store import Cdr, CdrFilter, Conflict, CsvError, LegKind, Rate, SpeedDial, Store
from softswitch.store.repos import CDR_CSV_COLUMNS

T0 = 1_700_000_000.0


async def test_at_most_115_speed_dials(store: Store, tmp_path: Path) -> None:
    acct = await store.accounts.add("Alice")
    codes = [f"0{n}" for n in range(10, 125)]  # 115 codes
    path = tmp_path / "dials.csv"
    path.write_text("".join(f"{c},8131000{c}\n" for c in codes))
    assert await csvio.import_speed_dials(store.speed_dials, acct.id, path) == 115
    with pytest.raises(Conflict):
        await store.speed_dials.set(acct.id, "0999", "8131234")
    await store.speed_dials.set(acct.id, "010", "8139999")  # replacing an existing code is fine
    more = tmp_path / "more.csv"
    more.write_text("code,number\n011,81312345678\n0998,81398765432\n")
    with pytest.raises(CsvError, match=r"more\.csv:3: more than 115"):
        await csvio.import_speed_dials(store.speed_dials, acct.id, more)
    assert len(await store.speed_dials.list(acct.id)) == 115
    assert (await store.speed_dials.get(acct.id, "011")) == SpeedDial(acct.id, "011", "8131000011")


async def test_speed_dial_csv_errors_name_the_line(store: Store, tmp_path: Path) -> None:
    acct = await store.accounts.add("Alice")
    path = tmp_path / "d.csv"
    cases = {
        "code,number,label\n03,81312345678,home\n\n# comment\n00,81398765432\n": r"d\.csv:5: speed-dial code",
        "03,81312345678\n04,81-3x\n": r"d\.csv:2: number",
        "03,81312345678\n03,81398765432\n": r"d\.csv:2: code 03 already given on line 1",
        "03\n": r"d\.csv:1: expected code,number",
        '03,"81312345678\n': r"d\.csv:1: ",
    }
    for text, pattern in cases.items():
        path.write_text(text)
        with pytest.raises(CsvError, match=pattern):
            await csvio.import_speed_dials(store.speed_dials, acct.id, path)
    assert await store.speed_dials.list(acct.id) == ()  # all or nothing
    with pytest.raises(CsvError, match="cannot read"):
        await csvio.import_speed_dials(store.speed_dials, acct.id, tmp_path / "missing.csv")
    path.write_bytes(b"03,\xff\xfe\n")
    with pytest.raises(CsvError, match="UTF-8"):
        await csvio.import_speed_dials(store.speed_dials, acct.id, path)


async def test_speed_dial_csv_labels_bom_and_empty_files(store: Store, tmp_path: Path) -> None:
    acct = await store.accounts.add("Alice")
    path = tmp_path / "d.csv"
    path.write_text("\ufeffcode,number,label\n 03 , +81 3 1234 5678 , home \n")
    assert csvio.read_speed_dials(path, acct.id) == [
        (2, SpeedDial(acct.id, "03", "81312345678", "home"))
    ]
    path.write_text("# nothing yet\n\n")
    assert await csvio.import_speed_dials(store.speed_dials, 999, path) == 0


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
    assert await csvio.import_rates(store.rates, path) == 5
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
    assert await csvio.import_rates(store.rates, path) == 1  # upsert keeps the others
    assert (await store.rates.lookup("447911123456")) == Rate("447", "UK mobile", 50, 6, 30)
    assert len(await store.rates.list()) == 5
    assert await csvio.import_rates(store.rates, path, replace_all=True) == 1
    assert [r.prefix for r in await store.rates.list()] == ["447"]


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
            await csvio.import_rates(store.rates, path)
    assert await store.rates.list() == ()


async def test_cdr_export(store: Store) -> None:
    acct = await store.accounts.add("Alice")
    stamp = T0 + 0.123456
    await store.cdrs.write(
        Cdr(
            "c1",
            LegKind.DESTINATION,
            acct.id,
            "815012345678",
            "12125550100",
            stamp,
            ring_at=stamp + 1,
            answer_at=stamp + 5.000001,
            end_at=stamp + 65,
            cause_code=200,
            cause_text="normal clearing",
            billed_seconds=60,
            cost=30,
            node_id="node-a",
        )
    )
    await store.cdrs.write(
        Cdr("c1", LegKind.CALLBACK, acct.id, "815012345678", "12125550100", T0 - 5, cause_code=200)
    )
    await store.cdrs.write(Cdr("c2", LegKind.TRIGGER, None, "8150", "8150", T0 + 100))

    out = io.StringIO()
    assert await csvio.write_cdrs(out, store.cdrs.stream(CdrFilter(call_uuid="c1"))) == 2
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert rows[1]["leg"] == "destination"
    assert rows[1]["answer_at"] == "2023-11-14T22:13:25.123457Z"
    assert rows[1]["cost"] == "30" and rows[0]["ring_at"] == ""
    assert list(rows[0]) == list(CDR_CSV_COLUMNS)
    assert rows[0]["cause_code"] == "200" and rows[0]["account_id"] == str(acct.id)

    everything = io.StringIO()
    assert await csvio.write_cdrs(everything, store.cdrs.stream()) == 3
    last = list(csv.DictReader(io.StringIO(everything.getvalue())))[-1]
    assert (last["account_id"], last["cause_code"], last["end_at"]) == ("", "", "")
