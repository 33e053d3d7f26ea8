"""CSV files of the admin CLI: speed-dial and rate imports, the CDR export.

The repositories take and return records; this module turns files into records and records
into files. Imports are all or nothing: every row is parsed and checked first (an error names
the file and the line, ``CsvError``), then the records are stored in one transaction, and an
error the store finds only then (the 116th speed dial) still names the line of the row that
caused it.

Input files are UTF-8 (a byte-order mark is allowed); blank lines and lines whose first cell
starts with ``#`` are skipped, and so is a header line (its first cell is the first column's
name).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import AsyncIterable
from pathlib import Path
from typing import TextIO

from softswitch.store import (
    Cdr,
    CsvError,
    InvalidInput,
    Rate,
    RateRepo,
    SpeedDial,
    SpeedDialRepo,
    TooManySpeedDials,
)
from softswitch.store.repos import (
    CDR_CSV_COLUMNS,
    MAX_PREFIX_DIGITS,
    MAX_SPEED_DIALS,
    iso_utc,
    parse_price,
    speed_dial,
)

log = logging.getLogger("softswitch.cli")

SPEED_DIAL_COLUMNS = "code,number[,label]"
RATE_COLUMNS = "prefix,description,price_per_minute[,increment_s[,minimum_s[,blocked]]]"
_TRUE = {"1", "yes", "true", "y", "blocked", "x"}
_FALSE = {"", "0", "no", "false", "n"}


def read_rows(path: str | Path, header: str) -> list[tuple[int, list[str]]]:
    """(line, cells) of each data row; blank lines, ``#`` comments and a header are skipped."""
    line = 0
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle, strict=True)
            out: list[tuple[int, list[str]]] = []
            first = True
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


def read_speed_dials(path: str | Path, account_id: int) -> list[tuple[int, SpeedDial]]:
    """The checked speed dials of a ``code,number[,label]`` file, each with its line."""
    out: list[tuple[int, SpeedDial]] = []
    lines: dict[str, int] = {}
    for line, cells in read_rows(path, "code"):
        if len(cells) < 2 or len(cells) > 3:
            raise CsvError(path, line, f"expected {SPEED_DIAL_COLUMNS}")
        try:
            dial = speed_dial(account_id, cells[0], cells[1], cells[2] if len(cells) > 2 else "")
        except InvalidInput as exc:
            raise CsvError(path, line, str(exc)) from None
        if dial.code in lines:
            raise CsvError(path, line, f"code {dial.code} already given on line {lines[dial.code]}")
        lines[dial.code] = line
        out.append((line, dial))
    return out


async def import_speed_dials(repo: SpeedDialRepo, account_id: int, path: str | Path) -> int:
    """Store the speed dials of ``path`` (all or nothing; codes present are replaced).

    Returns how many rows were stored. Every error names the file and the line, including
    the first dial beyond the account's 115.
    """
    rows = read_speed_dials(path, account_id)
    try:
        count = await repo.set_many(account_id, [dial for _, dial in rows])
    except TooManySpeedDials as exc:
        raise CsvError(
            path,
            rows[exc.index][0],
            f"more than {MAX_SPEED_DIALS} speed dials for account {account_id}",
        ) from None
    if count:
        log.info("account %d: %d speed dials imported from %s", account_id, count, path)
    return count


# -- rates --------------------------------------------------------------------------------------


def read_rates(path: str | Path) -> list[tuple[int, Rate]]:
    """The checked rates of a rates file (columns ``RATE_COLUMNS``), each with its line.

    ``price_per_minute`` is minor units with up to 6 decimal places (``20``, ``2.35``);
    ``increment_s`` and ``minimum_s`` default to 6 and 30; ``blocked`` is yes/no/1/0/true/
    false (default no); a ``+`` before the prefix is ignored.
    """
    out: list[tuple[int, Rate]] = []
    lines: dict[str, int] = {}
    for line, cells in read_rows(path, "prefix"):
        if not 3 <= len(cells) <= 6:
            raise CsvError(path, line, f"expected {RATE_COLUMNS}")
        prefix = cells[0].removeprefix("+")
        if not prefix.isascii() or not prefix.isdigit() or len(prefix) > MAX_PREFIX_DIGITS:
            raise CsvError(path, line, f"prefix {cells[0]!r}: 1 to {MAX_PREFIX_DIGITS} digits")
        if prefix in lines:
            raise CsvError(path, line, f"prefix {prefix} already given on line {lines[prefix]}")
        lines[prefix] = line
        try:
            price = parse_price(cells[2])
        except InvalidInput as exc:
            raise CsvError(path, line, f"price_per_minute: {exc}") from None
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
        out.append((line, Rate(prefix, cells[1], price, increment, minimum, flag in _TRUE)))
    return out


async def import_rates(repo: RateRepo, path: str | Path, *, replace_all: bool = False) -> int:
    """Store the rates of ``path`` (all or nothing); returns the rows stored.

    ``replace_all`` also deletes the rates whose prefix is not in the file.
    """
    rows = read_rates(path)
    count = await repo.set_many([rate for _, rate in rows], replace_all=replace_all)
    log.info("%d rates imported from %s", count, path)
    return count


# -- CDRs ---------------------------------------------------------------------------------------


def cdr_row(c: Cdr) -> list[object]:
    """One CDR as the cells of ``CDR_CSV_COLUMNS`` (times ISO 8601 UTC, '' for none)."""
    return [
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


async def write_cdrs(out: TextIO, records: AsyncIterable[Cdr]) -> int:
    """Write CDRs as CSV with a header line (``CDR_CSV_COLUMNS``); returns the rows written."""
    writer = csv.writer(out)
    writer.writerow(CDR_CSV_COLUMNS)
    count = 0
    async for cdr in records:
        writer.writerow(cdr_row(cdr))
        count += 1
    return count
