"""The ``softswitch`` command: serve, demo, version; mounts tools and the admin commands.

Typer, in uvicorn's shape: CLI -> Config -> Server (``softswitch.aio.server``).
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from softswitch import __version__
from softswitch.cli import admin as admin_cli
from softswitch.cli import ops as ops_cli
from softswitch.cli.tools import tools_app
from softswitch.config import Config
from softswitch.logs import LogWriter

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="softswitch: a SIP/RTP softswitch for an international callback service.",
)
app.add_typer(tools_app, name="tools")
app.add_typer(admin_cli.account_app, name="account")
app.add_typer(admin_cli.speed_dial_app, name="speed-dial")
app.add_typer(admin_cli.rates_app, name="rates")
app.add_typer(admin_cli.cdr_app, name="cdr")
app.add_typer(admin_cli.db_app, name="db")
app.add_typer(ops_cli.calls_app, name="calls")
app.command("status")(ops_cli.status)


class _UtcFormatter(logging.Formatter):
    """ISO 8601 UTC timestamps with microseconds: log lines line up with packet captures."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        stamp = datetime.fromtimestamp(record.created, tz=UTC)
        return stamp.strftime("%Y-%m-%dT%H:%M:%S.%f")


def setup_logging(level: str = "INFO") -> None:
    """One line per event, UTC timestamps, to stderr (from a thread: softswitch.logs)."""
    for old in logging.getLogger().handlers:
        if isinstance(old, LogWriter):
            old.close()  # set up again (tests): its thread ends with it
    handler = LogWriter(sys.stderr)
    handler.setFormatter(_UtcFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Alembic narrates every plugin it loads; a sysadmin needs only the migration lines.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    # aiosmtpd logs every SMTP command; the mail trigger logs what matters (softswitch.mail).
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    # aiosqlite logs every call it hands its thread (four lines per statement): at DEBUG it
    # would drown the switch's own lines; the store logs what it does (softswitch.store).
    logging.getLogger("aiosqlite").setLevel(logging.INFO)


@app.command()
def serve(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="TOML configuration file.", dir_okay=False)
    ] = None,
    sip_listen: Annotated[
        str | None, typer.Option("--sip-listen", help="HOST:PORT for SIP (UDP and TCP).")
    ] = None,
    db: Annotated[
        str | None, typer.Option("--db", help="Database URL (sqlite:///FILE or postgresql://...).")
    ] = None,
    log_level: Annotated[
        str | None, typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR.")
    ] = None,
) -> None:
    """Run a switch node until SIGTERM or SIGINT."""
    from softswitch.aio.server import run
    from softswitch.config import ConfigError, load_config

    try:
        cfg = load_config(config, sip_listen=sip_listen, db_url=db)
    except ConfigError as exc:
        typer.echo(f"softswitch: configuration error: {exc}", err=True)
        raise typer.Exit(2) from None
    setup_logging((log_level or cfg.log_level).upper())
    raise typer.Exit(run(cfg))


@app.command("check-config")
def check_config(
    file: Annotated[Path, typer.Argument(help="TOML configuration file.", dir_okay=False)],
) -> None:
    """Check a configuration file (with the environment's secrets) without starting anything.

    Exit 0 and a summary when it is valid; exit 2 and ``file:line: [table] key: problem``
    when it is not.
    """
    from softswitch.config import ConfigError, load_config

    try:
        cfg = load_config(file)
    except ConfigError as exc:
        typer.echo(f"softswitch: configuration error: {exc}", err=True)
        raise typer.Exit(2) from None
    for line in describe_config(cfg):
        typer.echo(line)


def describe_config(cfg: Config) -> list[str]:
    """What a node with ``cfg`` would run, one line per part (``check-config``'s summary)."""

    def hp(addr: tuple[str, int]) -> str:
        host, port = addr
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    lines = [f"{cfg.source}: OK"]
    sip = ", ".join(f"{t}:{hp(a)}" for a in cfg.listen for t in cfg.transports)
    lines.append(f"  sip      {sip}")
    lines.append(f"  database {_redact(cfg.db_url)}")
    if cfg.trunk is None:
        lines.append("  trunk    none (no call goes out)")
    else:
        how = "ip auth" if cfg.trunk.ip_auth else f"registers as {cfg.trunk.username}"
        lines.append(f"  trunk    {hp(cfg.trunk.proxy)} ({how})")
    web = "off" if cfg.web is None else f"http://{hp(cfg.web.listen)}/"
    lines.append(f"  web      {web}")
    mail = "off" if cfg.mail is None else f"smtp {hp(cfg.mail.listen)} for {cfg.mail.address}"
    lines.append(f"  mail     {mail}")
    admin = "off (no token)" if cfg.admin.token is None else f"http://{hp(cfg.admin.listen)}/api/"
    lines.append(f"  admin    {admin}")
    lines.append(f"  drain    {cfg.drain_timeout:g} s")
    return lines


def _redact(url: str) -> str:
    """A database URL without its password."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in creds:
        return url
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"


DEMO_HELP = (
    "Run a whole callback call on loopback and show it step by step.\n\n"
    "A real node (softswitch serve in a subprocess, a temporary SQLite store with a demo "
    "account and a rate) and an emulated carrier with the customer's and the destination's "
    "phones. The node registers with digest auth; the customer rings the trigger number and "
    "hangs up after one ring; the node calls back and plays the dial prompt; the customer "
    "dials the destination (RFC 4733); the node dials it and bridges the legs; each side's "
    "tone is measured at the far end; ** ends the call. Prints the checks, a timeline of "
    "every SIP message and log line, and the CDRs; exits 0 only if every check held.\n\n"
    "--scenario location shows a location change by phone instead: the customer stays on the "
    "trigger call, presses # in the switch's early media, is answered into the Location menu, "
    "types the security code, the hotel room's number, *, * (no extension), 1 (confirm) and 1 "
    "(call me back now); the switch hangs up and calls back at the room phone, which hears the "
    "dial prompt and ends the call with **."
)


class DemoScenario(StrEnum):
    """What ``softswitch demo`` shows (``softswitch.demo.run.SCENARIOS``)."""

    CALL = "call"
    LOCATION = "location"


@app.command(help=DEMO_HELP)
def demo(
    scenario: Annotated[
        DemoScenario,
        typer.Option(
            help="call: a whole callback call; location: a location change by phone, then "
            "the callback at the new place."
        ),
    ] = DemoScenario.CALL,
    keep: Annotated[bool, typer.Option(help="Keep the temporary directory with logs.")] = False,
) -> None:
    """A callback call or a location change on loopback (``softswitch.demo.run``)."""
    from softswitch.demo.run import run_demo

    raise typer.Exit(run_demo(keep=keep, scenario=scenario.value))


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
