"""Admin CLI round trips on a SQLite file: --json output, tables, one-line errors, exit codes."""

from __future__ import annotations

import csv
import io
import json
import socket
from pathlib import Path
from typing import Any, Protocol

import pytest
import typer
from typer.testing import CliRunner

from softswitch.cli.admin import account_app, cdr_app, db_app, rates_app, speed_dial_app

app = typer.Typer()
app.add_typer(account_app, name="account")
app.add_typer(speed_dial_app, name="speed-dial")
app.add_typer(rates_app, name="rates")
app.add_typer(cdr_app, name="cdr")
app.add_typer(db_app, name="db")


class Cli(Protocol):
    """Run the admin CLI, check the exit code; the parsed JSON with --json (exit 0), else the
    typer ``Result``."""

    def __call__(self, *args: str, code: int = ...) -> Any: ...


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.setenv("SOFTSWITCH_DB", f"sqlite:///{tmp_path}/new/dir/admin.sqlite3")
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> Any:
        result = runner.invoke(app, list(args))
        assert result.exit_code == code, (result.stdout, result.stderr)
        if "--json" in args and code == 0:
            return json.loads(result.stdout)
        return result

    return run


def test_account_round_trip(cli: Cli, tmp_path: Path) -> None:
    added = cli(
        "account", "add", "Alice Example", "--kind", "traveler", "--language", "en",
        "-t", "+81 50 1234 5678", "-t", "815099990000", "--location", "12125550100",
        "--extension", "812", "--security-code", "1234", "--credit-limit", "5000", "--json",
    )  # fmt: skip
    assert (tmp_path / "new" / "dir" / "admin.sqlite3").exists()  # created and migrated
    assert added["kind"] == "traveler" and added["language"] == "en"
    assert added["triggers"] == ["815012345678", "815099990000"]
    assert (added["location"], added["extension"]) == ("12125550100", "812")
    assert added["has_security_code"] and added["credit_available"] == 5000
    aid = str(added["id"])
    shown = cli("account", "show", aid, "--json")
    assert shown.pop("location_history") == [] and shown == added
    assert added["recorded_name"] is None and added["has_recorded_name"] is False

    edited = cli(
        "account", "edit", aid, "--name", "Alice B", "--credit-limit", "7000",
        "--clear-location", "--add-trigger", "815011112222", "--remove-trigger", "815099990000",
        "--recorded-name", "/var/names/1.wav", "--json",
    )  # fmt: skip
    assert edited["name"] == "Alice B" and edited["credit_limit"] == 7000
    assert edited["location"] is None and edited["recorded_name"] == "/var/names/1.wav"
    assert edited["triggers"] == ["815011112222", "815012345678"]
    assert cli("account", "suspend", aid, "--json")["status"] == "suspended"
    assert cli("account", "list", "--status", "suspended", "--json")[0]["id"] == int(aid)
    assert cli("account", "resume", aid, "--json")["status"] == "active"

    cli("account", "add", "Bob", "--kind", "hotline", "--hotline-destination", "81355550000")
    table = cli("account", "list").stdout.splitlines()
    assert table[0].split() == [
        "id", "name", "kind", "lang", "status", "triggers", "location", "limit", "used"
    ]  # fmt: skip
    assert "Alice B" in table[1] and "hotline" in table[2]
    assert "credit_available" in cli("account", "show", aid).stdout


def test_bad_input_is_one_line_and_exit_2(cli: Cli) -> None:
    cli("db", "upgrade")  # the store exists: read-only commands do not create it
    for args in (
        ("account", "show", "42"),
        ("account", "add", "X", "--security-code", "12"),
        ("account", "add", "X", "--kind", "hotline"),
        ("account", "add", "X", "--extension", "12"),
        ("speed-dial", "set", "1", "03", "81312345678"),
        ("cdr", "list", "--since", "yesterday"),
        ("rates", "lookup", "81312345678"),
    ):
        result = cli(*args, code=2)
        assert result.stderr.startswith("softswitch: ") and result.stderr.count("\n") == 1
    first = cli("account", "add", "A", "-t", "8150", "--json")
    result = cli("account", "add", "B", "-t", "8150", code=2)
    assert "already in use" in result.stderr
    assert cli("account", "list", "--json") == [first]
    bad_url = cli("account", "list", "--db", "mysql://x@127.0.0.1/db", code=2)
    assert "unsupported database" in bad_url.stderr


def test_speed_dials_and_rates(cli: Cli, tmp_path: Path) -> None:
    aid = str(cli("account", "add", "Alice", "--json")["id"])
    assert cli("speed-dial", "set", aid, "03", "+1 212 555 0100", "--label", "NY", "--json") == [
        {"account_id": int(aid), "code": "03", "number": "12125550100", "label": "NY"}
    ]
    dials = tmp_path / "dials.csv"
    dials.write_text("code,number,label\n087,81312345678,office\n04,4420712345678\n")
    assert cli("speed-dial", "import", aid, str(dials), "--json") == {"imported": 2}
    listed = cli("speed-dial", "list", aid, "--json")
    assert [d["code"] for d in listed] == ["03", "04", "087"]
    assert "office" in cli("speed-dial", "list", aid).stdout
    cli("speed-dial", "delete", aid, "04")
    cli("speed-dial", "delete", aid, "04", code=2)
    dials.write_text("05,81312345678\n06,not-a-number\n")
    bad = cli("speed-dial", "import", aid, str(dials), code=2)
    assert f"{dials}:2: number" in bad.stderr

    rates = tmp_path / "rates.csv"
    rates.write_text("prefix,description,price_per_minute\n1,USA,20\n1212,New York,15,6\n")
    assert cli("rates", "import", str(rates), "--json") == {"imported": 2}
    assert cli("rates", "lookup", "12125550100", "--json")[0]["prefix"] == "1212"
    assert [r["prefix"] for r in cli("rates", "list", "--json")] == ["1", "1212"]
    rates.write_text("44,UK,30\n33,France,lots\n")
    bad = cli("rates", "import", str(rates), code=2)
    assert f"{rates}:2: price_per_minute" in bad.stderr
    assert "2 rates imported" not in cli("rates", "list").stdout


def test_cdr_list_and_export(cli: Cli, tmp_path: Path) -> None:
    import asyncio

    from softswitch.store import Cdr, LegKind, Store

    url = f"sqlite:///{tmp_path}/cdr.sqlite3"

    async def seed() -> None:
        async with await Store.open(url) as store:
            for i, leg in enumerate((LegKind.CALLBACK, LegKind.DESTINATION)):
                await store.cdrs.write(
                    Cdr("c1", leg, None, "8150", "1212", 1_700_000_000 + i, cause_code=200)
                )
            await store.cdrs.write(
                Cdr("c2", LegKind.TRIGGER, None, "8150", "8150", 1_800_000_000, node_id="vm:7:ab")
            )

    asyncio.run(seed())
    listed = cli("cdr", "list", "--db", url, "--call", "c1", "--json")
    assert [c["leg"] for c in listed] == ["callback", "destination"]
    assert listed[0]["setup_at"] == "2023-11-14T22:13:20.000000Z"
    assert len(cli("cdr", "list", "--db", url, "--since", "2025-01-01", "--json")) == 1
    table = cli("cdr", "list", "--db", url).stdout
    assert "destination" in table
    # The node that wrote each CDR (issue 12: in a cluster, which node served the call).
    assert table.splitlines()[0].split()[-1] == "node"
    assert table.splitlines()[-1].split()[-1] == "vm:7:ab"
    exported = cli("cdr", "export", "--db", url).stdout
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert [r["call_uuid"] for r in rows] == ["c1", "c1", "c2"]
    assert rows[2]["node_id"] == "vm:7:ab"
    out = tmp_path / "out.csv"
    cli("cdr", "export", "--db", url, "--until", "2024-01-01T00:00", "-o", str(out))
    assert len(list(csv.DictReader(io.StringIO(out.read_text())))) == 2
    assert len(cli("cdr", "export", "--db", url, "--json")) == 3
    assert cli("db", "upgrade", "--db", url, "--json") == {"revision": "0005"}


READ_ONLY = (
    ("account", "list"),
    ("account", "show", "1"),
    ("account", "name", "1"),
    ("speed-dial", "list", "1"),
    ("rates", "list"),
    ("rates", "lookup", "12125550100"),
    ("cdr", "list"),
    ("cdr", "export"),
)


@pytest.mark.parametrize("args", READ_ONLY, ids=lambda a: " ".join(a))
def test_read_only_commands_never_create_a_store(
    cli: Cli, tmp_path: Path, args: tuple[str, ...]
) -> None:
    missing_dir = tmp_path / "nonexistent" / "dir" / "x.db"
    missing_file = tmp_path / "x.db"
    for path in (missing_dir, missing_file):
        result = cli(*args, "--db", f"sqlite:///{path}", code=1)
        assert result.stderr.startswith("softswitch: ") and result.stderr.count("\n") == 1
        assert str(path) in result.stderr and "does not exist" in result.stderr
    assert not (tmp_path / "nonexistent").exists() and not missing_file.exists()
    assert list(tmp_path.iterdir()) == []


def test_cdr_export_to_a_file_from_a_missing_store_writes_nothing(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    cli("cdr", "export", "--db", f"sqlite:///{tmp_path}/none.db", "-o", str(out), code=1)
    assert list(tmp_path.iterdir()) == []


def test_read_only_commands_on_a_store_without_schema(cli: Cli, tmp_path: Path) -> None:
    blank = tmp_path / "blank.db"
    blank.touch()
    result = cli("account", "list", "--db", f"sqlite:///{blank}", code=1)
    assert "softswitch db upgrade" in result.stderr and result.stderr.count("\n") == 1
    assert cli("account", "list", "--db", f"sqlite:///{blank}", "--json", code=1)
    cli("db", "upgrade", "--db", f"sqlite:///{blank}")
    assert cli("account", "list", "--db", f"sqlite:///{blank}", "--json") == []


def test_write_commands_create_the_store(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "new.db"
    cli("account", "add", "Alice", "--db", f"sqlite:///{path}")
    assert path.exists()
    listed = cli("account", "list", "--db", f"sqlite:///{path}", "--json")
    assert [a["name"] for a in listed] == ["Alice"]


def _refused_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again: nothing listens there


@pytest.mark.parametrize(
    "args", [("account", "list"), ("account", "add", "Alice"), ("db", "upgrade")]
)
def test_postgresql_connection_failure_is_one_clear_line(cli: Cli, args: tuple[str, ...]) -> None:
    port = _refused_port()
    url = f"postgresql://bob:hunter2@127.0.0.1:{port}/switch"
    result = cli(*args, "--db", url, code=1)
    err = result.stderr
    assert err.startswith("softswitch: ") and err.count("\n") == 1, err
    assert f"127.0.0.1:{port}" in err and "PostgreSQL" in err and "refused" in err
    assert "hunter2" not in err and "Traceback" not in err and "Error" not in err


def test_national_numbers_are_refused_with_the_format_expected(cli: Cli, tmp_path: Path) -> None:
    result = cli("account", "add", "Alice", "--location", "0312345678", code=2)
    assert "location '0312345678': starts with 0" in result.stderr
    assert "country code first" in result.stderr and result.stderr.count("\n") == 1
    aid = str(cli("account", "add", "Alice", "--location", "81312345678", "--json")["id"])
    cli("account", "edit", aid, "--location", "0312345678", code=2)
    cli("account", "edit", aid, "--hotline-destination", "0355550000", code=2)
    cli("speed-dial", "set", aid, "03", "0312345678", code=2)
    dials = tmp_path / "dials.csv"
    dials.write_text("05,81312345678\n06,0312345678\n")
    bad = cli("speed-dial", "import", aid, str(dials), code=2)
    assert f"{dials}:2: number '0312345678': starts with 0" in bad.stderr
    assert cli("account", "show", aid, "--json")["location"] == "81312345678"


def test_fractional_prices_in_rates_set_and_import(cli: Cli, tmp_path: Path) -> None:
    assert cli("rates", "set", "44", "2.35", "--description", "UK", "--json") == [
        {
            "prefix": "44",
            "description": "UK",
            "price_per_minute": 2.35,
            "increment_s": 6,
            "minimum_s": 30,
            "blocked": False,
        }
    ]
    cli("rates", "set", "+1", "20", "--increment", "60", "--minimum", "60", "--blocked")
    rates = tmp_path / "rates.csv"
    rates.write_text("prefix,description,price_per_minute\n81,Japan,0.125\n33,France,7.50\n")
    assert cli("rates", "import", str(rates), "--json") == {"imported": 2}
    listed = {r["prefix"]: r for r in cli("rates", "list", "--json")}
    assert {p: r["price_per_minute"] for p, r in listed.items()} == {
        "1": 20,
        "33": 7.5,
        "44": 2.35,
        "81": 0.125,
    }
    assert listed["1"]["blocked"] and listed["1"]["increment_s"] == 60
    assert isinstance(listed["1"]["price_per_minute"], int)
    table = cli("rates", "list").stdout
    assert "0.125" in table and "2.35" in table and "7.5" in table
    for args in (("44", "2.1234567"), ("44", "lots"), ("--", "44", "-1")):
        bad = cli("rates", "set", *args, code=2)
        assert "price" in bad.stderr and bad.stderr.count("\n") == 1
    rates.write_text("81,Japan,0.1\n33,France,7.0000001\n")
    bad = cli("rates", "import", str(rates), code=2)
    assert f"{rates}:2: price_per_minute" in bad.stderr and "6 decimal places" in bad.stderr
    assert cli("rates", "lookup", "81312345678", "--json")[0]["price_per_minute"] == 0.125
    cli("rates", "delete", "33")
    cli("rates", "delete", "33", code=2)
    assert [r["prefix"] for r in cli("rates", "list", "--json")] == ["1", "44", "81"]
