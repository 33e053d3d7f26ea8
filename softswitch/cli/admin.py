"""Admin commands on the store: ``softswitch account|speed-dial|rates|cdr|db ...`` (typer).

Each command opens the database given by ``--db`` (or ``SOFTSWITCH_DB``, else the default of
``softswitch serve``), brings the schema up to date, does one thing and closes it. Commands
that only read (list, show, lookup, export) never create a store: a missing SQLite file or
directory, or a database without the schema, is an error; commands that write create it on
first use.

Output is an aligned plain-text table for people, or JSON with ``--json`` for scripts: times
as ISO 8601 UTC, money as integers in minor units, except a rate's price per minute, which may
have up to 6 decimal places (a JSON number with its decimals). Errors are one line on stderr,
never with the database password: exit status 2 for bad input (malformed values, unknown ids,
CSV errors naming the line), 1 when the database fails or cannot be reached.

Recorded names are files in the node's recordings directory (``--recordings DIR``, by default
the node's: beside the SQLite database); ``account name`` imports and exports them and
``account delete`` removes them with the account (``softswitch.cli.names``).

``softswitch.cli`` mounts the sub-apps: ``account_app``, ``speed_dial_app``, ``rates_app``,
``cdr_app`` and ``db_app``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, NoReturn, TextIO, TypeVar

import typer

from softswitch.cli import csvio, names
from softswitch.config import DEFAULT_DB
from softswitch.store import (
    UNSET,
    Account,
    AccountKind,
    AccountStatus,
    Cdr,
    CdrFilter,
    Conflict,
    DatabaseUnavailable,
    DatabaseUrlError,
    InvalidInput,
    Language,
    Location,
    LocationChange,
    NotFound,
    Rate,
    SpeedDial,
    Store,
    StoreError,
)
from softswitch.store.db import redact
from softswitch.store.repos import iso_utc, parse_price

T = TypeVar("T")

account_app = typer.Typer(no_args_is_help=True, help="Customer accounts.")
speed_dial_app = typer.Typer(no_args_is_help=True, help="Speed dials of an account (0 + code).")
rates_app = typer.Typer(no_args_is_help=True, help="Rates per destination prefix.")
cdr_app = typer.Typer(no_args_is_help=True, help="Call detail records.")
db_app = typer.Typer(no_args_is_help=True, help="The database schema.")

DbUrl = Annotated[
    str,
    typer.Option(
        "--db",
        envvar="SOFTSWITCH_DB",
        help="Database URL (sqlite:///FILE or postgresql://...).",
        show_default=True,
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
AccountId = Annotated[int, typer.Argument(help="Account id.")]
Recordings = Annotated[
    Path | None,
    typer.Option(
        "--recordings",
        help="The node's recordings directory ([service] recordings_dir); default: the "
        "node's default for --db ('recordings' beside the SQLite file).",
        file_okay=False,
    ),
]
#: Location changes ``account show`` prints.
HISTORY_SHOWN = 5


class _Failed(Exception):
    """A command's own failure inside ``_run``: one line on stderr and this exit status."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"softswitch: {message}", err=True)
    raise typer.Exit(code)


def _run(db: str, work: Callable[[Store], Awaitable[T]], *, writes: bool) -> T:
    """Open the store at ``db``, run ``work``, close; store errors become one-line exits.

    ``writes=False`` (commands that only read) opens only an existing store: a missing SQLite
    file or directory, or a database without the schema, is an error and nothing is created.
    Commands that write create the store (and migrate it) on first use.
    """

    async def main() -> T:
        store = await Store.open(db, create=writes)
        try:
            return await work(store)
        finally:
            await store.close()

    try:
        return asyncio.run(main())
    except _Failed as exc:
        _fail(str(exc), exc.code)
    except names.NameFileError as exc:
        _fail(str(exc), exc.code)
    except (InvalidInput, NotFound, Conflict, DatabaseUrlError) as exc:
        _fail(str(exc), 2)
    except (StoreError, DatabaseUnavailable) as exc:
        _fail(str(exc), 1)
    except Exception as exc:  # driver errors vary (OSError, asyncpg, SQLAlchemy): one line each
        _fail(f"database {redact(db)}: {type(exc).__name__}: {exc}".splitlines()[0], 1)


def _print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        typer.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _print_json(data: object) -> None:
    typer.echo(json.dumps(data, ensure_ascii=False, indent=2))


def _parse_time(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        _fail(f"not a date/time: {text!r} (use ISO 8601, e.g. 2024-05-01T09:00)", 2)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


# -- accounts -----------------------------------------------------------------------------------


def account_json(a: Account) -> dict[str, Any]:
    """The JSON form of an account (what ``--json`` prints)."""
    return {
        "id": a.id,
        "name": a.name,
        "kind": a.kind.value,
        "language": a.language.value,
        "status": a.status.value,
        "triggers": list(a.triggers),
        "location": a.location.number if a.location else None,
        "extension": a.location.extension if a.location else None,
        "has_security_code": a.has_security_code,
        "locked_until": iso_utc(a.locked_until) or None,
        "recorded_name": a.recorded_name_path,
        "has_recorded_name": _has_name(a),
        "credit_limit": a.credit_limit,
        "credit_used": a.credit_used,
        "credit_reserved": a.credit_reserved,
        "credit_available": a.available_credit,
        "hotline_destination": a.hotline_destination,
        "created_at": iso_utc(a.created_at),
        "updated_at": iso_utc(a.updated_at),
    }


def _has_name(a: Account) -> bool:
    """Whether the account has a recorded name: one is on record and its file exists."""
    return a.recorded_name_path is not None and Path(a.recorded_name_path).is_file()


def change_json(c: LocationChange) -> dict[str, Any]:
    """The JSON form of a location change (``account show --json``'s ``location_history``)."""
    return {
        "changed_at": iso_utc(c.changed_at),
        "via": c.via,
        "previous": c.previous.number if c.previous else None,
        "previous_extension": c.previous.extension if c.previous else None,
        "location": c.location.number if c.location else None,
        "extension": c.location.extension if c.location else None,
    }


def _where_text(location: Location | None) -> str:
    if location is None:
        return "-"
    ext = f" ext {location.extension}" if location.extension else ""
    return location.number + ext


def _location_text(a: Account) -> str:
    return _where_text(a.location)


def _show_account(
    a: Account, as_json: bool, history: Sequence[LocationChange] | None = None
) -> None:
    if as_json:
        data = account_json(a)
        if history is not None:
            data["location_history"] = [change_json(c) for c in history]
        _print_json(data)
        return
    data = account_json(a)
    data["triggers"] = ", ".join(a.triggers) or "-"
    data["location"] = _location_text(a)
    del data["extension"]
    _print_table(["field", "value"], [(k, "-" if v is None else v) for k, v in data.items()])
    if history is None:
        return
    typer.echo("")
    if not history:
        typer.echo("location history: none")
        return
    typer.echo("location history (newest first):")
    _print_table(
        ["changed_at", "via", "from", "to"],
        [
            (iso_utc(c.changed_at), c.via, _where_text(c.previous), _where_text(c.location))
            for c in history
        ],
    )


@account_app.command("add")
def account_add(
    name: Annotated[str, typer.Argument(help="The customer's name.")],
    kind: Annotated[AccountKind, typer.Option(help="Account kind.")] = AccountKind.STANDARD,
    language: Annotated[Language, typer.Option(help="Prompt language.")] = Language.JA,
    trigger: Annotated[
        list[str] | None, typer.Option("--trigger", "-t", help="A trigger number (repeatable).")
    ] = None,
    location: Annotated[str | None, typer.Option(help="Callback number, E.164.")] = None,
    extension: Annotated[str | None, typer.Option(help="Extension / room number.")] = None,
    security_code: Annotated[str | None, typer.Option(help="4-digit security code.")] = None,
    credit_limit: Annotated[int, typer.Option(help="Credit limit, minor units.")] = 0,
    hotline_destination: Annotated[
        str | None, typer.Option(help="The number a hotline account dials.")
    ] = None,
    db: DbUrl = DEFAULT_DB,
    as_json: Json = False,
) -> None:
    """Create an account."""
    loc = Location(location, extension) if location else None
    if extension and not location:
        _fail("--extension needs --location", 2)
    account = _run(
        db,
        lambda s: s.accounts.add(
            name,
            kind=kind,
            language=language,
            triggers=trigger or (),
            location=loc,
            security_code=security_code,
            credit_limit=credit_limit,
            hotline_destination=hotline_destination,
        ),
        writes=True,
    )
    _show_account(account, as_json)


@account_app.command("list")
def account_list(
    status: Annotated[AccountStatus | None, typer.Option(help="Only this status.")] = None,
    db: DbUrl = DEFAULT_DB,
    as_json: Json = False,
) -> None:
    """List accounts."""
    found = _run(db, lambda s: s.accounts.list(status=status), writes=False)
    if as_json:
        _print_json([account_json(a) for a in found])
        return
    _print_table(
        ["id", "name", "kind", "lang", "status", "triggers", "location", "limit", "used"],
        [
            (
                a.id,
                a.name,
                a.kind.value,
                a.language.value,
                a.status.value,
                ",".join(a.triggers) or "-",
                _location_text(a),
                a.credit_limit,
                a.credit_used,
            )
            for a in found
        ],
    )


@account_app.command("show")
def account_show(
    account_id: AccountId,
    history: Annotated[
        int, typer.Option(min=0, help="Location changes to show, newest first.")
    ] = HISTORY_SHOWN,
    db: DbUrl = DEFAULT_DB,
    as_json: Json = False,
) -> None:
    """Show one account, whether it has a recorded name, and its last location changes."""

    async def work(s: Store) -> tuple[Account, tuple[LocationChange, ...]]:
        account = await s.accounts.get(account_id)
        return account, await s.accounts.location_history(account_id, limit=history)

    account, changes = _run(db, work, writes=False)
    _show_account(account, as_json, changes)


@account_app.command("edit")
def account_edit(
    account_id: AccountId,
    name: Annotated[str | None, typer.Option(help="New name.")] = None,
    kind: Annotated[AccountKind | None, typer.Option(help="New kind.")] = None,
    language: Annotated[Language | None, typer.Option(help="New language.")] = None,
    location: Annotated[str | None, typer.Option(help="New callback number.")] = None,
    extension: Annotated[str | None, typer.Option(help="Extension with --location.")] = None,
    clear_location: Annotated[bool, typer.Option(help="Forget the location.")] = False,
    security_code: Annotated[str | None, typer.Option(help="New 4-digit code.")] = None,
    clear_security_code: Annotated[bool, typer.Option(help="Remove the code.")] = False,
    credit_limit: Annotated[int | None, typer.Option(help="Credit limit, minor units.")] = None,
    hotline_destination: Annotated[str | None, typer.Option(help="Hotline number.")] = None,
    add_trigger: Annotated[list[str] | None, typer.Option(help="Add a trigger number.")] = None,
    remove_trigger: Annotated[
        list[str] | None, typer.Option(help="Remove a trigger number.")
    ] = None,
    recorded_name: Annotated[str | None, typer.Option(help="Recorded name file.")] = None,
    db: DbUrl = DEFAULT_DB,
    as_json: Json = False,
) -> None:
    """Change an account (only the options given)."""
    if security_code and clear_security_code:
        _fail("--security-code and --clear-security-code exclude each other", 2)
    if location and clear_location:
        _fail("--location and --clear-location exclude each other", 2)
    if extension and not location:
        _fail("--extension needs --location", 2)

    async def work(s: Store) -> Account:
        code = (
            security_code if security_code is not None else None if clear_security_code else UNSET
        )
        account = await s.accounts.update(
            account_id,
            name=UNSET if name is None else name,
            kind=UNSET if kind is None else kind,
            language=UNSET if language is None else language,
            credit_limit=UNSET if credit_limit is None else credit_limit,
            hotline_destination=UNSET if hotline_destination is None else hotline_destination,
            security_code=code,
        )
        if location or clear_location:
            account = await s.accounts.set_location(
                account_id, Location(location, extension) if location else None
            )
        for number in add_trigger or ():
            account = await s.accounts.add_trigger(account_id, number)
        for number in remove_trigger or ():
            account = await s.accounts.remove_trigger(account_id, number)
        if recorded_name is not None:
            account = await s.accounts.set_recorded_name(account_id, recorded_name or None)
        return account

    _show_account(_run(db, work, writes=True), as_json)


@account_app.command("name")
def account_name(
    account_id: AccountId,
    play_to: Annotated[
        Path | None,
        typer.Option(
            "--play-to",
            help="Write the recorded name to FILE: WAV, or the format of its extension "
            "(.flac, .mp3, .ogg, .m4a ...).",
            dir_okay=False,
        ),
    ] = None,
    set_from: Annotated[
        Path | None,
        typer.Option(
            "--set",
            help="Make FILE (any audio format) the recorded name: converted to 8 kHz mono "
            "WAV, put in the recordings directory as name-ID.wav.",
            dir_okay=False,
        ),
    ] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove the recorded name.")] = False,
    recordings: Recordings = None,
    db: DbUrl = DEFAULT_DB,
    as_json: Json = False,
) -> None:
    """Show, export (--play-to), import (--set) or remove (--clear) an account's recorded name."""
    if sum((play_to is not None, set_from is not None, clear)) > 1:
        _fail("--play-to, --set and --clear exclude each other", 2)
    directory = names.recordings_dir(db, recordings)
    done: dict[str, Any] = {"account_id": account_id}

    async def work(s: Store) -> Account:
        account = await s.accounts.get(account_id)
        if set_from is not None:
            path, seconds = names.import_name(set_from, directory, account_id)
            done.update(imported_from=str(set_from), seconds=round(seconds, 3))
            return await s.accounts.set_recorded_name(account_id, str(path))
        if clear:
            removed = _remove_names(account, directory)
            done["removed"] = [str(p) for p in removed]
            return await s.accounts.set_recorded_name(account_id, None)
        if play_to is not None:
            if account.recorded_name_path is None:
                raise _Failed(f"account {account_id} has no recorded name", 2)
            seconds = names.export_name(Path(account.recorded_name_path), play_to)
            done.update(written_to=str(play_to), seconds=round(seconds, 3))
        return account

    account = _run(db, work, writes=set_from is not None or clear)
    path = account.recorded_name_path
    done.update(
        recorded_name=path,
        has_recorded_name=_has_name(account),
        recordings_dir=str(directory),
    )
    done.setdefault("seconds", _seconds(path))
    if as_json:
        _print_json(done)
    elif set_from is not None:
        typer.echo(f"account {account_id}: recorded name set from {set_from} -> {path}")
    elif clear:
        gone = ", ".join(done["removed"]) or "no file"
        typer.echo(f"account {account_id}: recorded name removed ({gone})")
    elif play_to is not None:
        typer.echo(f"account {account_id}: recorded name written to {play_to}")
    elif path is None:
        typer.echo(f"account {account_id}: no recorded name")
    elif not done["has_recorded_name"]:
        typer.echo(f"account {account_id}: recorded name {path} (the file is missing)")
    else:
        typer.echo(f"account {account_id}: recorded name {path} ({done['seconds']:g} s)")


def _seconds(path: str | None) -> float | None:
    found = None if path is None else names.duration(Path(path))
    return None if found is None else round(found, 3)


def _remove_names(account: Account, directory: Path) -> list[Path]:
    """Remove the account's name files: ``name-ID.wav`` in ``directory``, and the file on
    record if it is in ``directory`` too (a file elsewhere was not made by the switch)."""
    candidates = [names.name_file(directory, account.id)]
    if account.recorded_name_path is not None:
        recorded = Path(account.recorded_name_path)
        if names.inside(recorded, directory) and recorded.resolve() != candidates[0].resolve():
            candidates.append(recorded)
    return [p for p in candidates if names.remove(p)]


@account_app.command("delete")
def account_delete(
    account_id: AccountId,
    yes: Annotated[bool, typer.Option("--yes", help="Really delete it.")] = False,
    recordings: Recordings = None,
    db: DbUrl = DEFAULT_DB,
    as_json: Json = False,
) -> None:
    """Delete an account with its numbers, speed dials, location history and recorded name
    (its CDRs stay). Refused while it has a call in progress."""
    if not yes:
        _fail(
            f"deleting account {account_id} removes it and its recorded name for good; "
            "add --yes to do it",
            2,
        )
    directory = names.recordings_dir(db, recordings)
    account = _run(db, lambda s: s.accounts.delete(account_id), writes=True)
    try:
        removed = _remove_names(account, directory)
    except names.NameFileError as exc:
        _fail(f"account {account_id} deleted, but its recorded name was not removed: {exc}", 1)
    if as_json:
        _print_json({"deleted": account_json(account), "removed": [str(p) for p in removed]})
        return
    files = f"; removed {', '.join(map(str, removed))}" if removed else ""
    typer.echo(f"account {account_id} ({account.name}) deleted{files}")


@account_app.command("suspend")
def account_suspend(account_id: AccountId, db: DbUrl = DEFAULT_DB, as_json: Json = False) -> None:
    """Suspend an account: its triggers no longer call back."""
    _show_account(_run(db, lambda s: s.accounts.suspend(account_id), writes=True), as_json)


@account_app.command("resume")
def account_resume(account_id: AccountId, db: DbUrl = DEFAULT_DB, as_json: Json = False) -> None:
    """Resume a suspended account."""
    _show_account(_run(db, lambda s: s.accounts.resume(account_id), writes=True), as_json)


# -- speed dials --------------------------------------------------------------------------------


def _dial_json(d: SpeedDial) -> dict[str, Any]:
    return {"account_id": d.account_id, "code": d.code, "number": d.number, "label": d.label}


def _show_dials(dials: Sequence[SpeedDial], as_json: bool) -> None:
    if as_json:
        _print_json([_dial_json(d) for d in dials])
    else:
        _print_table(["code", "number", "label"], [(d.code, d.number, d.label) for d in dials])


@speed_dial_app.command("set")
def speed_dial_set(
    account_id: AccountId,
    code: Annotated[str, typer.Argument(help="2-4 digits starting with 0 (e.g. 03, 087).")],
    number: Annotated[str, typer.Argument(help="E.164 number.")],
    label: Annotated[str, typer.Option(help="A note for people.")] = "",
    db: DbUrl = DEFAULT_DB,
    as_json: Json = False,
) -> None:
    """Set (or replace) a speed dial."""
    _show_dials(
        [_run(db, lambda s: s.speed_dials.set(account_id, code, number, label), writes=True)],
        as_json,
    )


@speed_dial_app.command("delete")
def speed_dial_delete(
    account_id: AccountId,
    code: Annotated[str, typer.Argument(help="The code to remove.")],
    db: DbUrl = DEFAULT_DB,
    as_json: Json = False,
) -> None:
    """Remove a speed dial."""
    if not _run(db, lambda s: s.speed_dials.delete(account_id, code), writes=True):
        _fail(f"account {account_id} has no speed dial {code}", 2)
    if as_json:
        _print_json({"deleted": code})


@speed_dial_app.command("list")
def speed_dial_list(account_id: AccountId, db: DbUrl = DEFAULT_DB, as_json: Json = False) -> None:
    """List an account's speed dials."""

    async def work(s: Store) -> Sequence[SpeedDial]:
        await s.accounts.get(account_id)
        return await s.speed_dials.list(account_id)

    _show_dials(_run(db, work, writes=False), as_json)


@speed_dial_app.command("import")
def speed_dial_import(
    account_id: AccountId,
    file: Annotated[Path, typer.Argument(help="CSV: code,number[,label]", dir_okay=False)],
    db: DbUrl = DEFAULT_DB,
    as_json: Json = False,
) -> None:
    """Import speed dials from CSV (all or nothing; existing codes are replaced)."""
    count = _run(
        db, lambda s: csvio.import_speed_dials(s.speed_dials, account_id, file), writes=True
    )
    if as_json:
        _print_json({"imported": count})
    else:
        typer.echo(f"{count} speed dials imported")


# -- rates --------------------------------------------------------------------------------------


def price_json(price: int | Decimal) -> int | float:
    """A price for JSON: an integer when whole, else a number with its decimals (exact: at
    most 6 decimal places and 19 digits, which a double prints back as written)."""
    value = Decimal(price)
    return int(value) if value == value.to_integral_value() else float(value)


def _rate_json(r: Rate) -> dict[str, Any]:
    return {
        "prefix": r.prefix,
        "description": r.description,
        "price_per_minute": price_json(r.price_per_minute),
        "increment_s": r.increment_s,
        "minimum_s": r.minimum_s,
        "blocked": r.blocked,
    }


def _show_rates(found: Sequence[Rate], as_json: bool) -> None:
    if as_json:
        _print_json([_rate_json(r) for r in found])
        return
    _print_table(
        ["prefix", "description", "per_min", "incr_s", "min_s", "blocked"],
        [
            (
                r.prefix,
                r.description,
                r.price_per_minute,
                r.increment_s,
                r.minimum_s,
                "yes" if r.blocked else "",
            )
            for r in found
        ],
    )


@rates_app.command("set")
def rates_set(
    prefix: Annotated[
        str, typer.Argument(help="Destination prefix, E.164 digits (e.g. 44, 4477).")
    ],
    price: Annotated[
        str, typer.Argument(help="Minor units per minute, up to 6 decimal places (20, 2.35).")
    ],
    description: Annotated[str, typer.Option(help="A note for people.")] = "",
    increment: Annotated[int, typer.Option(help="Billing step after the minimum, seconds.")] = 6,
    minimum: Annotated[int, typer.Option(help="Seconds billed at least.")] = 30,
    blocked: Annotated[bool, typer.Option(help="Calls to the prefix are refused.")] = False,
    db: DbUrl = DEFAULT_DB,
    as_json: Json = False,
) -> None:
    """Set (or replace) the rate for a prefix."""
    try:
        rate = Rate(
            prefix.removeprefix("+"),
            description,
            parse_price(price),
            increment,
            minimum,
            blocked,
        )
    except InvalidInput as exc:
        _fail(str(exc), 2)
    _show_rates([_run(db, lambda s: s.rates.set(rate), writes=True)], as_json)


@rates_app.command("delete")
def rates_delete(
    prefix: Annotated[str, typer.Argument(help="The prefix to remove.")],
    db: DbUrl = DEFAULT_DB,
    as_json: Json = False,
) -> None:
    """Remove the rate for a prefix."""
    bare = prefix.removeprefix("+")
    if not _run(db, lambda s: s.rates.delete(bare), writes=True):
        _fail(f"no rate for prefix {bare}", 2)
    if as_json:
        _print_json({"deleted": bare})


@rates_app.command("import")
def rates_import(
    file: Annotated[
        Path,
        typer.Argument(
            help="CSV: prefix,description,price_per_minute[,increment_s[,minimum_s[,blocked]]]"
            " (price: minor units, up to 6 decimal places).",
            dir_okay=False,
        ),
    ],
    replace: Annotated[bool, typer.Option(help="Delete rates not in the file.")] = False,
    db: DbUrl = DEFAULT_DB,
    as_json: Json = False,
) -> None:
    """Import rates from CSV (all or nothing)."""
    count = _run(db, lambda s: csvio.import_rates(s.rates, file, replace_all=replace), writes=True)
    if as_json:
        _print_json({"imported": count})
    else:
        typer.echo(f"{count} rates imported")


@rates_app.command("list")
def rates_list(db: DbUrl = DEFAULT_DB, as_json: Json = False) -> None:
    """List every rate."""
    _show_rates(_run(db, lambda s: s.rates.list(), writes=False), as_json)


@rates_app.command("lookup")
def rates_lookup(
    number: Annotated[str, typer.Argument(help="E.164 number.")],
    db: DbUrl = DEFAULT_DB,
    as_json: Json = False,
) -> None:
    """Show the rate a number is billed at (longest prefix match)."""
    rate = _run(db, lambda s: s.rates.lookup(number), writes=False)
    if rate is None:
        _fail(f"no rate for {number}", 2)
    _show_rates([rate], as_json)


# -- CDRs ---------------------------------------------------------------------------------------


def cdr_json(c: Cdr) -> dict[str, Any]:
    """The JSON form of a CDR (what ``--json`` prints)."""
    return {
        "id": c.id,
        "call_uuid": c.call_uuid,
        "leg": c.leg.value,
        "account_id": c.account_id,
        "from_number": c.from_number,
        "to_number": c.to_number,
        "setup_at": iso_utc(c.setup_at),
        "ring_at": iso_utc(c.ring_at) or None,
        "answer_at": iso_utc(c.answer_at) or None,
        "end_at": iso_utc(c.end_at) or None,
        "cause_code": c.cause_code,
        "cause_text": c.cause_text,
        "billed_seconds": c.billed_seconds,
        "cost": c.cost,
        "node_id": c.node_id,
    }


#: The columns of ``softswitch cdr list`` (node: the node that wrote it, in a cluster).
CDR_TABLE = (
    "id",
    "call",
    "leg",
    "acct",
    "from",
    "to",
    "setup (UTC)",
    "cause",
    "billed_s",
    "cost",
    "node",
)

AccountFilter = Annotated[int | None, typer.Option("--account", help="Only this account.")]
CallFilter = Annotated[str | None, typer.Option("--call", help="Only this call_uuid.")]
Since = Annotated[str | None, typer.Option(help="Set up at or after (ISO 8601, UTC default).")]
Until = Annotated[str | None, typer.Option(help="Set up before (ISO 8601, UTC default).")]


@cdr_app.command("list")
def cdr_list(
    account: AccountFilter = None,
    call: CallFilter = None,
    since: Since = None,
    until: Until = None,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 100,
    db: DbUrl = DEFAULT_DB,
    as_json: Json = False,
) -> None:
    """List CDRs, oldest first."""
    where = CdrFilter(account, call, _parse_time(since), _parse_time(until))
    found = _run(db, lambda s: s.cdrs.list(where, limit=limit), writes=False)
    if as_json:
        _print_json([cdr_json(c) for c in found])
        return
    _print_table(
        CDR_TABLE,
        [
            (
                c.id,
                c.call_uuid,
                c.leg.value,
                c.account_id,
                c.from_number,
                c.to_number,
                iso_utc(c.setup_at)[:23],
                f"{c.cause_code or ''} {c.cause_text}".strip(),
                c.billed_seconds,
                c.cost,
                c.node_id,
            )
            for c in found
        ],
    )


@cdr_app.command("export")
def cdr_export(
    account: AccountFilter = None,
    call: CallFilter = None,
    since: Since = None,
    until: Until = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File (default: stdout).")
    ] = None,
    db: DbUrl = DEFAULT_DB,
    as_json: Json = False,
) -> None:
    """Export CDRs as CSV (or a JSON array with --json), oldest first."""
    where = CdrFilter(account, call, _parse_time(since), _parse_time(until))

    async def write(s: Store, handle: TextIO) -> None:
        if as_json:
            found = await s.cdrs.list(where, limit=2**62)
            handle.write(json.dumps([cdr_json(c) for c in found], ensure_ascii=False) + "\n")
        else:
            await csvio.write_cdrs(handle, s.cdrs.stream(where))

    async def work(s: Store) -> None:
        if output is None:
            await write(s, sys.stdout)
            return
        with open(output, "w", newline="", encoding="utf-8") as handle:
            await write(s, handle)

    _run(db, work, writes=False)


# -- schema -------------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(db: DbUrl = DEFAULT_DB, as_json: Json = False) -> None:
    """Create or migrate the schema to the newest revision."""

    async def work(s: Store) -> str | None:
        return await s.db.revision()

    revision = _run(db, work, writes=True)
    if as_json:
        _print_json({"revision": revision})
    else:
        typer.echo(f"database at revision {revision}")
