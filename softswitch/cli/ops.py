"""``softswitch status``, ``softswitch calls`` and ``softswitch calls hangup ID``: the admin API's
clients (:mod:`softswitch.web.admin`).

They find the API as the node does: ``--config`` (default ``$SOFTSWITCH_CONFIG``) gives
``[admin] listen`` and ``token`` (``SOFTSWITCH_ADMIN_TOKEN`` wins, as for the node); ``--url``
and ``--token`` override both. ``calls`` redraws a table of the live calls every second, like
``top``, until Ctrl-C (``--once`` prints it once, as it does when stdout is not a terminal).
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["calls_app", "status"]

calls_app = typer.Typer(
    no_args_is_help=False,
    help="Live calls on a running node (the admin API).",
    invoke_without_command=True,
)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        envvar="SOFTSWITCH_CONFIG",
        help="The node's TOML file (for [admin] listen and token).",
        dir_okay=False,
    ),
]
UrlOption = Annotated[
    str | None, typer.Option("--url", help="The admin API, e.g. http://127.0.0.1:8090.")
]
TokenOption = Annotated[
    str | None,
    typer.Option("--token", envvar="SOFTSWITCH_ADMIN_TOKEN", help="The admin API's bearer token."),
]


class ApiError(Exception):
    """The admin API could not be reached or said no."""


class AdminClient:
    """A few JSON requests to the admin API (urllib: nothing to install)."""

    def __init__(self, url: str, token: str | None) -> None:
        self.url = url.rstrip("/")
        self.token = token

    def request(self, method: str, path: str) -> Any:
        request = urllib.request.Request(self.url + path, method=method)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read()).get("error", exc.reason)
            except ValueError:
                detail = exc.reason
            raise ApiError(f"{self.url}{path}: {exc.code} {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiError(f"cannot reach the admin API at {self.url}: {reason}") from None


def client(config: Path | None, url: str | None, token: str | None) -> AdminClient:
    """The admin API as ``--url``/``--token`` or the node's configuration say."""
    if url is None or token is None:
        from softswitch.config import ConfigError, load_config

        try:
            cfg = load_config(config)
        except ConfigError as exc:
            typer.echo(f"softswitch: configuration error: {exc}", err=True)
            raise typer.Exit(2) from None
        host, port = cfg.admin.listen
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        if url is None:
            url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        token = token or cfg.admin.token
    if not token:
        typer.echo(
            "softswitch: no admin token: give --token, set SOFTSWITCH_ADMIN_TOKEN, "
            "or --config with an [admin] token",
            err=True,
        )
        raise typer.Exit(2)
    return AdminClient(url, token)


def _get(api: AdminClient, method: str, path: str) -> Any:
    try:
        return api.request(method, path)
    except ApiError as exc:
        typer.echo(f"softswitch: {exc}", err=True)
        raise typer.Exit(1) from None


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def status(
    config: ConfigOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON.")] = False,
) -> None:
    """The running node: trunk registration, live calls, pending callbacks, listeners, and the
    nodes sharing its store (the cluster)."""
    data = _get(client(config, url, token), "GET", "/api/status")
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    trunk = data["trunk"]
    if not trunk["configured"]:
        trunk_text = "none configured"
    elif trunk["ip_auth"]:
        trunk_text = f"{trunk['proxy']} (IP-authenticated)"
    else:
        state = "registered" if trunk["registered"] else f"NOT registered ({trunk['state']})"
        trunk_text = f"{trunk['proxy']} {state}"
    since = datetime.fromtimestamp(data["started_at"], tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    lines = [
        f"node      {data['node']} (softswitch {data['version']}, pid {data['pid']})",
        f"up        {_duration(data['uptime'])} since {since}"
        + ("  DRAINING" if data["draining"] else ""),
        f"trunk     {trunk_text}",
        f"calls     {data['calls']} live, {data['legs']} legs",
        f"media     {_media_text(data.get('media') or {})}",
        f"callbacks {data['pending_callbacks']} waiting in the queue",
        f"triggers  {data['trigger_numbers']} numbers",
    ]
    for name, where in data["listeners"].items():
        shown = ", ".join(where) if isinstance(where, list) else where
        lines.append(f"{name:<9} {shown}")
    cluster = data.get("cluster") or []
    if cluster:
        lines.append("")
        lines.append(cluster_table(cluster, data.get("server_time") or time.time()))
    typer.echo("\n".join(lines))


def _media_text(media: dict[str, Any]) -> str:
    """``/api/status`` ``media`` in one line: where the media runs and what it carries."""
    workers = media.get("workers", 0)
    legs = media.get("legs", 0)
    if not workers:
        return f"in the node's process, {legs} legs"
    each = media.get("per_worker") or []
    pids = ", ".join(f"{w['pid']}: {w['legs']}" for w in each)
    restarts = media.get("restarts", 0)
    return f"{workers} workers (pid: legs {pids}), {legs} legs, {restarts} restarts"


def cluster_table(nodes: list[dict[str, Any]], now: float) -> str:
    """The nodes sharing the store (``/api/status`` ``cluster``): which are up, since when,
    their last heartbeat and the live calls each has written down."""
    states = [n["state"] for n in nodes]
    summary = ", ".join(f"{states.count(s)} {s}" for s in ("up", "dead", "stopped") if s in states)
    rows = [
        f"cluster   {len(nodes)} node{'s' if len(nodes) != 1 else ''}: {summary}",
        f"  {'NODE':<28} {'STATE':<8} {'STARTED (UTC)':<19}  {'HEARTBEAT':>9}  {'CALLS':>5}  SIP",
    ]
    for node in nodes:
        started = datetime.fromtimestamp(node["started_at"], tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
        beat = f"{max(0.0, now - node['heartbeat_at']):.0f} s ago"
        name = node["id"] + (" *" if node.get("this") else "")
        rows.append(
            f"  {name:<28} {node['state']:<8} {started:<19}  {beat:>9}  "
            f"{node['live_calls']:>5}  {node['address'] or '-'}"
        )
    rows.append("  (* this node; CALLS: live calls it has written down)")
    return "\n".join(rows)


def calls_table(calls: list[dict[str, Any]]) -> str:
    """The live calls as a fixed-width table, oldest first."""
    header = f"{'ID':<8}  {'ACCOUNT':<16} {'TRIGGER':<14} {'STATE':<20} {'TIME':>7}  KEYS     LEGS"
    rows = [header]
    for call in calls:
        legs = " ".join(f"{leg['name']}:{leg['state']}" for leg in call["legs"]) or "-"
        account = f"{call['account_id']} {call['account_name']}"[:16]
        rows.append(
            f"{call['sid'][:8]:<8}  {account:<16} {call['trigger']:<14} "
            f"{call['state'].lower():<20} {_duration(call['duration']):>7}  "
            f"{call['key_source'] or '-':<8} {legs}"
        )
    return "\n".join(rows)


@calls_app.callback()
def calls(
    ctx: typer.Context,
    config: ConfigOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
    once: Annotated[bool, typer.Option("--once", help="Print the table once and exit.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes.")] = 1.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON once.")] = False,
) -> None:
    """The live calls, refreshed like top (Ctrl-C to leave); ``hangup ID`` ends one."""
    ctx.obj = (config, url, token)
    if ctx.invoked_subcommand is not None:
        return
    api = client(config, url, token)
    if as_json:
        typer.echo(json.dumps(_get(api, "GET", "/api/calls"), indent=2))
        return
    if once or not sys.stdout.isatty():
        typer.echo(calls_table(_get(api, "GET", "/api/calls")["calls"]))
        return
    try:
        while True:
            live = _get(api, "GET", "/api/calls")["calls"]
            stamp = datetime.now(tz=UTC).strftime("%H:%M:%S")
            # Clear the screen and home the cursor, as top does.
            sys.stdout.write("\x1b[H\x1b[2J")
            typer.echo(f"softswitch calls at {api.url}  {stamp} UTC  {len(live)} live\n")
            typer.echo(calls_table(live))
            sys.stdout.flush()
            time.sleep(max(0.2, interval))
    except KeyboardInterrupt:
        typer.echo("")


@calls_app.command("hangup")
def hangup(
    ctx: typer.Context,
    call_id: Annotated[str, typer.Argument(metavar="ID", help="The call's id or its first 8.")],
) -> None:
    """End a live call: every leg is released and its CDRs written."""
    config, url, token = ctx.obj
    api = client(config, url, token)
    _get(api, "POST", f"/api/calls/{call_id}/hangup")
    typer.echo(f"hung up {call_id}")
