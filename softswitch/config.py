"""Configuration: one TOML file, checked before anything starts.

Every error names the file, the line and the key, because a sysadmin reading "invalid config"
at 3 a.m. should not have to guess. tomllib reports syntax errors with a line number; for
semantic errors (wrong type, unknown key, bad address) we find the key's line in the text.
Unknown keys, in any table, are reported before anything else is checked (the first in the
file), so ``usernme = "alice"`` is named as a typo, not as a missing ``username``.

With no file at all the defaults are a safe local node: SIP on 127.0.0.1:5060 (UDP and TCP),
an embedded SQLite file, no trunk, SIP accepted from loopback only.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_LISTEN = "127.0.0.1:5060"
DEFAULT_DB = "sqlite:///var/softswitch.sqlite3"
LOOPBACK_NETS = ("127.0.0.0/8", "::1/128")
DEFAULT_ADMIN_LISTEN = "127.0.0.1:8090"
#: The account kinds (``softswitch.store.models.AccountKind``'s values; a test keeps them equal).
ACCOUNT_KINDS = ("standard", "traveler", "hotline")

#: Secrets an environment variable may set instead of the file (systemd's ``Environment=`` or
#: ``LoadCredential=``, a container's secrets): variable -> (table, key). The variable wins.
ENV_OVERRIDES: dict[str, tuple[str, str]] = {
    "SOFTSWITCH_TRUNK_PASSWORD": ("trunk", "password"),
    "SOFTSWITCH_ADMIN_TOKEN": ("admin", "token"),
    "SOFTSWITCH_WEB_SECRET": ("web", "secret"),
    "SOFTSWITCH_DB": ("database", "url"),
}


class ConfigError(ValueError):
    """A configuration problem, located: ``file:line: [table] key: message``."""

    def __init__(
        self,
        message: str,
        *,
        path: str = "<config>",
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        self.path = path
        self.line = line
        self.key = key
        self.message = message
        where = path if line is None else f"{path}:{line}"
        what = f"{key}: " if key else ""
        super().__init__(f"{where}: {what}{message}")


def auto_media_workers(cpus: int | None = None) -> int:
    """``[media] workers = "auto"``, as the config check and the node at start both resolve it
    (softswitch.aio.mediapool imports it as ``auto_workers``): one core for the SIP process,
    the rest for media, at least one worker. ``cpus``: the core count (default: this
    machine's)."""
    count = os.cpu_count() if cpus is None else cpus
    return max(1, (count or 1) - 1)


def parse_host_port(text: str, default_port: int = 5060) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]:port`` or ``v6`` -> (host without brackets, port)."""
    text = text.strip()
    if not text:
        raise ValueError("empty address")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ValueError(f"unclosed '[' in {text!r}")
        if rest and not rest.startswith(":"):
            raise ValueError(f"junk after ']' in {text!r}")
        port_text = rest[1:] if rest else ""
    elif text.count(":") > 1:
        host, port_text = text, ""
    else:
        host, _, port_text = text.partition(":")
    if not host:
        raise ValueError(f"no host in {text!r}")
    port = default_port
    if port_text:
        if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            raise ValueError(f"bad port {port_text!r} in {text!r}")
        port = int(port_text)
    return host, port


@dataclass(frozen=True, slots=True)
class TrunkConfig:
    """The carrier trunk: registration credentials, or IP authentication (no REGISTER)."""

    proxy: tuple[str, int]
    registrar: str | None = None
    username: str | None = None
    password: str | None = None
    realm: str | None = None
    expires: int = 3600
    ip_auth: bool = False
    keepalive_interval: float = 30.0
    caller_id: str | None = None
    international_prefix: str = "+"
    transport: str = "udp"


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """Limits on triggers and on what the switch spends (``[limits]``).

    Within any ``window`` seconds a web or mail source (an IP address, a sender's address) may
    ask for at most ``per_source`` callbacks, and one trigger number may be asked for at most
    ``per_trigger`` times by phone, web and mail together; a source over its limit is banned
    for ``ban`` seconds (a phone trigger's source is the carrier: never banned).
    ``outbound_per_minute``: call attempts the node places in any 60 s (callbacks,
    destinations, the operator; 0: no cap), so a runaway loop cannot dial the world.
    ``daily_spend``: what one account may spend in any 24 hours, in the units of its credit
    (0: only the credit limit).
    """

    per_source: int = 10
    per_trigger: int = 20
    window: float = 3600.0
    ban: float = 3600.0
    outbound_per_minute: int = 1200
    daily_spend: int = 0


@dataclass(frozen=True, slots=True)
class SipLimits:
    """What one SIP source may send and what the node holds for strangers (``[sip]``).

    A source (an IP address) other than the trunk's proxy and ``exempt_from`` may send at most
    ``rate_per_source`` requests a second (0: no limit); over it, or on a scanner's
    User-Agent, it is banned for ``source_ban`` seconds (everything it sends is dropped
    unanswered). ``invite_from``: the only networks (besides the trunk's proxy) that may send
    INVITEs; empty: every source in ``allow_from`` may. Caps (0: none): ``max_transactions``
    live server transactions, ``max_dialogs`` inbound calls (ringing triggers, answered
    triggers, test lines), ``max_early_per_source`` ringing triggers from one non-exempt
    source, ``tcp_max_per_source`` TCP connections from one non-exempt source; over a cap a
    request gets 503 with Retry-After. The trunk's proxy and ``exempt_from`` meet
    ``max_transactions`` and ``max_dialogs`` only at twice the cap, so strangers who fill them
    do not stop the carrier's calls.
    """

    rate_per_source: int = 200
    source_ban: float = 600.0
    exempt_from: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    invite_from: tuple[str, ...] = ()
    max_transactions: int = 100_000
    max_dialogs: int = 10_000
    max_early_per_source: int = 20
    tcp_max_per_source: int = 32


@dataclass(frozen=True, slots=True)
class WebConfig:
    """The "Trigger a call" page (``[web]``)."""

    listen: tuple[str, int] = ("127.0.0.1", 8080)
    #: Key for the CSRF tokens; random at each start when unset (forms die with a restart).
    secret: str | None = None
    #: Reverse proxies whose ``X-Forwarded-For`` names the client (else the peer address is).
    trusted_proxies: tuple[str, ...] = ()
    #: Every answer to a trigger takes at least this long (seconds), so timing tells nothing.
    answer_time: float = 0.5
    #: The page's language when the browser states no Japanese or English preference.
    default_language: str = "ja"


@dataclass(frozen=True, slots=True)
class MailConfig:
    """The e-mail trigger's SMTP listener (``[mail]``)."""

    address: str
    listen: tuple[str, int] = ("127.0.0.1", 2525)
    max_size: int = 32 * 1024
    #: Trigger number -> the only senders that may trigger it (numbers not listed: anyone).
    senders: dict[str, tuple[str, ...]] = field(default_factory=dict)
    hostname: str = "softswitch"
    #: The site's MTAs (addresses or networks): mail from them names its client in the
    #: Received header they add, and that client is what the limits count.
    trusted_relays: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AdminConfig:
    """The admin API and ``/metrics`` (``[admin]``): off without a token."""

    listen: tuple[str, int] = ("127.0.0.1", 8090)
    token: str | None = None


@dataclass(frozen=True, slots=True)
class Config:
    """Everything ``softswitch serve`` needs, validated."""

    listen: tuple[tuple[str, int], ...] = (("127.0.0.1", 5060),)
    transports: tuple[str, ...] = ("udp", "tcp")
    public_address: str | None = None
    allow_from: tuple[str, ...] = LOOPBACK_NETS
    db_url: str = DEFAULT_DB
    trunk: TrunkConfig | None = None
    trigger_numbers: tuple[str, ...] = ()
    #: Test lines: number -> seconds after which the switch hangs up (0: wait for the caller).
    test_numbers: dict[str, float] = field(default_factory=dict)
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    user_agent: str = "softswitch"
    log_level: str = "INFO"
    tcp_idle_timeout: float = 300.0
    tcp_max_connections: int = 1024
    sip_limits: SipLimits = field(default_factory=SipLimits)
    # The callback service ([service], [media], [prompts]).
    operator: str = "customer-service"
    tone_country: str = "ITU"
    callback_ring_timeout: float = 45.0
    destination_ring_timeout: float = 60.0
    #: Callback attempts in all (busy, no answer, unreachable are retried) and the pause.
    callback_attempts: int = 3
    callback_retry_pause: float = 20.0
    #: An answered callback with no key pressed for this long ends (hotel operator on hold).
    silence_timeout: float = 120.0
    #: After the destination hangs up, the dial prompt waits this long for the next number.
    after_call_idle: float = 30.0
    first_digit_timeout: float = 10.0
    inter_digit_timeout: float = 10.0
    blocked_prefixes: tuple[str, ...] = ()
    media_host: str = "127.0.0.1"
    rtp_ports: tuple[int, int] | None = (16384, 32767)
    #: Media worker processes; None: "auto" (one per core but one, at least 1); 0: the media
    #: engine runs in the node's own process.
    media_workers: int | None = None
    prompts_dir: Path | None = None
    #: Where recorded names are kept (default: beside the SQLite database).
    recordings_dir: Path | None = None
    #: A trigger caller who stays on the line this long (about 4 rings) is answered into the
    #: Location menu; 0: never (the trigger is released with 480 at the ring limit).
    trigger_answer_after: float = 20.0
    #: Wrong security codes in a row that lock the account's Location menu, and for how long
    #: (seconds); shared by every entry point (SPEC section 4).
    security_code_failures: int = 3
    security_lockout: float = 1800.0
    #: The per-kind policy (SPEC section 7): the account kinds that may open the Location menu
    #: by phone, and those that may record their name there (the name menu is inside it).
    location_kinds: tuple[str, ...] = ("standard", "traveler")
    name_kinds: tuple[str, ...] = ("standard", "traveler")
    service: bool = True
    #: SIGTERM: seconds live calls may go on before they are hung up (0: at once).
    drain_timeout: float = 0.0
    web: WebConfig | None = None
    mail: MailConfig | None = None
    admin: AdminConfig = field(default_factory=AdminConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    source: str = "<defaults>"
    #: Fields the command line set over the file (``--sip-listen``, ``--db``): a reload of
    #: the file keeps them.
    overrides: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


#: Every key each table may hold ("" is the top level: the tables themselves). Unknown keys are
#: reported before anything else is checked, so a typo is named as a typo, not as the
#: missing key it was meant to be.
_KEYS: dict[str, frozenset[str]] = {
    "": frozenset(
        {"sip", "database", "log", "trunk", "trigger", "service", "media", "prompts"}
        | {"test_number", "web", "mail", "admin", "limits"}
    ),
    "sip": frozenset(
        {"listen", "transports", "public_address", "allow_from", "t1", "t2", "t4"}
        | {"user_agent", "tcp_idle_timeout", "tcp_max_connections"}
        | {"rate_per_source", "source_ban", "exempt_from", "invite_from", "max_transactions"}
        | {"max_dialogs", "max_early_per_source", "tcp_max_per_source"}
    ),
    "database": frozenset({"url"}),
    "log": frozenset({"level"}),
    "trunk": frozenset(
        {"proxy", "registrar", "username", "password", "realm", "expires", "ip_auth"}
        | {"keepalive_interval", "caller_id", "international_prefix", "transport"}
    ),
    "trigger": frozenset({"number"}),
    "service": frozenset(
        {"enabled", "operator", "tone_country", "callback_ring_timeout", "recordings_dir"}
        | {"trigger_answer_after"}
        | {"security_code_failures", "security_lockout", "location_kinds", "name_kinds"}
        | {"destination_ring_timeout", "blocked_prefixes", "callback_attempts"}
        | {"callback_retry_pause", "silence_timeout", "after_call_idle"}
        | {"first_digit_timeout", "inter_digit_timeout", "drain_timeout"}
    ),
    "media": frozenset({"host", "rtp_ports", "workers"}),
    "prompts": frozenset({"dir"}),
    "test_number": frozenset({"number", "hangup_after"}),
    "web": frozenset(
        {"enabled", "listen", "secret", "trusted_proxies", "answer_time", "default_language"}
    ),
    "mail": frozenset(
        {"enabled", "listen", "address", "max_size", "senders", "hostname", "trusted_relays"}
    ),
    "admin": frozenset({"listen", "token"}),
    "limits": frozenset(
        {"per_source", "per_trigger", "window", "ban", "outbound_per_minute", "daily_spend"}
    ),
}

_KEY_LINE = re.compile(r"^\s*([A-Za-z0-9_.\-\"']+)\s*=")
_TABLE_LINE = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")


def _find_line(text: str, table: str, key: str | None) -> int | None:
    """Line (1-based) where ``key`` is set inside ``[table]`` ('' = top level)."""
    current = ""
    table_line: int | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        m = _TABLE_LINE.match(line)
        if m:
            current = m.group(1)
            if key is not None and current == (f"{table}.{key}" if table else key):
                return number  # the key is a (sub-)table: its header line
            if current == table and key is None:
                return number
            if current == table:
                table_line = number
            continue
        if key is not None and current == table:
            km = _KEY_LINE.match(line)
            if km and km.group(1).strip("\"'") == key:
                return number
    return table_line


class _Reader:
    """Typed access to one table of the parsed TOML, with located errors."""

    def __init__(self, data: dict[str, Any], table: str, text: str, path: str) -> None:
        self.data = data
        self.table = table
        self.text = text
        self.path = path
        self.used: set[str] = set()

    def error(self, key: str | None, message: str) -> ConfigError:
        name = f"[{self.table}] {key}" if self.table and key else (key or f"[{self.table}]")
        return ConfigError(
            message, path=self.path, line=_find_line(self.text, self.table, key), key=name
        )

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        assert key in _KEYS[self.table], f"[{self.table}] {key} missing from _KEYS"
        self.used.add(key)
        if key not in self.data:
            return default
        value = self.data[key]
        # bool is an int in Python; a port of `true` is a mistake, not 1.
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise self.error(key, f"expected {_kind_name(kind)}, got a boolean")
        if not isinstance(value, kind):
            raise self.error(key, f"expected {_kind_name(kind)}, got {type(value).__name__}")
        return value

    def finish(self) -> None:
        for key in self.data:
            if key not in self.used:
                raise self.error(key, _unknown(self.table, key))


def _unknown(table: str, key: str) -> str:
    close = difflib.get_close_matches(key, sorted(_KEYS[table]), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown key ({hint}check the spelling; see README)"


def _check_keys(data: dict[str, Any], text: str, path: str) -> None:
    """Raise for the first unknown key in the file (by line), in any table."""
    found: list[tuple[int, int, _Reader, str]] = []

    def check(table_data: dict[str, Any], table: str) -> None:
        reader = _Reader(table_data, table, text, path)
        for key in table_data:
            if key not in _KEYS[table]:
                line = _find_line(text, table, key)
                found.append((line if line is not None else 1 << 30, len(found), reader, key))

    check(data, "")
    for table in sorted(_KEYS[""] & data.keys()):
        value = data[table]
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, dict):
                check(item, table)
    if found:
        _, _, reader, key = min(found, key=lambda f: (f[0], f[1]))
        raise reader.error(key, _unknown(reader.table, key))


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if set(kinds) == {int, float}:
        return "a number"
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true/false",
        list: "a list",
        dict: "a table",
    }
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _addr(reader: _Reader, key: str, value: str, default_port: int = 5060) -> tuple[str, int]:
    try:
        return parse_host_port(value, default_port)
    except ValueError as exc:
        raise reader.error(key, str(exc)) from None


def load_config(
    path: str | Path | None = None,
    *,
    sip_listen: str | None = None,
    db_url: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Read and validate ``path`` (or the defaults), then apply the environment's secrets
    (:data:`ENV_OVERRIDES`; ``env`` defaults to ``os.environ``) and command-line overrides."""
    text = ""
    source = "<defaults>"
    data: dict[str, Any] = {}
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read: {exc.strerror}", path=source) from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            # Python 3.11 puts the position only in the text: "... (at line 3, column 6)".
            found = re.search(r"\(at line (\d+)", str(exc))
            line = int(found.group(1)) if found else None
            msg = str(exc).split(" (at line")[0]
            raise ConfigError(f"TOML syntax error: {msg}", path=source, line=line) from None

    _check_keys(data, text, source)
    _apply_env(data, os.environ if env is None else env)
    top = _Reader(data, "", text, source)
    sip = _Reader(top.get("sip", dict, {}), "sip", text, source)
    kwargs: dict[str, Any] = {"source": source}

    listen = sip.get("listen", (str, list), DEFAULT_LISTEN)
    listens = [listen] if isinstance(listen, str) else listen
    if not listens or not all(isinstance(x, str) for x in listens):
        raise sip.error("listen", 'expected "host:port" or a list of them')
    kwargs["listen"] = tuple(_addr(sip, "listen", x) for x in listens)
    transports = sip.get("transports", list, ["udp", "tcp"])
    for t in transports:
        if t not in ("udp", "tcp"):
            raise sip.error("transports", f"unknown transport {t!r} (udp, tcp)")
    kwargs["transports"] = tuple(transports)
    kwargs["public_address"] = sip.get("public_address", str)
    allow = sip.get("allow_from", list, list(LOOPBACK_NETS))
    for net in allow:
        try:
            ipaddress.ip_network(str(net), strict=False)
        except ValueError:
            raise sip.error("allow_from", f"not an address or network: {net!r}") from None
    kwargs["allow_from"] = tuple(str(n) for n in allow)
    for timer in ("t1", "t2", "t4"):
        value = sip.get(timer, (int, float))
        if value is not None:
            if value <= 0:
                raise sip.error(timer, "must be positive (seconds)")
            kwargs[timer] = float(value)
    kwargs["user_agent"] = sip.get("user_agent", str, "softswitch")
    kwargs["tcp_idle_timeout"] = float(sip.get("tcp_idle_timeout", (int, float), 300.0))
    kwargs["tcp_max_connections"] = sip.get("tcp_max_connections", int, 1024)
    kwargs["sip_limits"] = _load_sip_limits(sip)
    sip.finish()

    db = _Reader(top.get("database", dict, {}), "database", text, source)
    kwargs["db_url"] = db.get("url", str, DEFAULT_DB)
    db.finish()

    log = _Reader(top.get("log", dict, {}), "log", text, source)
    level = log.get("level", str, "INFO").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise log.error("level", f"unknown level {level!r} (DEBUG, INFO, WARNING, ERROR)")
    kwargs["log_level"] = level
    log.finish()

    trunk_data = top.get("trunk", dict)
    if trunk_data is not None:
        kwargs["trunk"] = _load_trunk(_Reader(trunk_data, "trunk", text, source))

    triggers = top.get("trigger", list, [])
    numbers = []
    for index, item in enumerate(triggers):
        if not isinstance(item, dict):
            raise top.error("trigger", "expected [[trigger]] tables")
        reader = _Reader(item, "trigger", text, source)
        number = reader.get("number", str)
        if not number or not number.lstrip("+").isdigit():
            raise reader.error("number", f"trigger #{index + 1}: expected digits, got {number!r}")
        reader.finish()
        numbers.append(number.lstrip("+"))
    kwargs["trigger_numbers"] = tuple(numbers)

    service = _Reader(top.get("service", dict, {}), "service", text, source)
    kwargs["service"] = service.get("enabled", bool, True)
    kwargs["operator"] = service.get("operator", str, "customer-service")
    country = service.get("tone_country", str, "ITU").upper()
    if country not in ("ITU", "US", "JP"):
        raise service.error("tone_country", f"unknown {country!r} (ITU, US, JP)")
    kwargs["tone_country"] = country
    # Each timing: (lowest, highest) seconds a sysadmin may set.
    for key, (low, high) in {
        "callback_ring_timeout": (5, 300),
        "destination_ring_timeout": (5, 300),
        "callback_retry_pause": (0, 3600),
        "silence_timeout": (10, 3600),
        "after_call_idle": (5, 3600),
        "first_digit_timeout": (2, 120),
        "inter_digit_timeout": (2, 120),
    }.items():
        value = service.get(key, (int, float))
        if value is not None:
            if not low <= value <= high:
                raise service.error(key, f"must be between {low} and {high} seconds")
            kwargs[key] = float(value)
    answer_after = service.get("trigger_answer_after", (int, float))
    if answer_after is not None:
        if answer_after != 0 and not 5 <= answer_after <= 120:
            raise service.error(
                "trigger_answer_after", "must be 0 (never) or between 5 and 120 seconds"
            )
        kwargs["trigger_answer_after"] = float(answer_after)
    failures = service.get("security_code_failures", int)
    if failures is not None:
        if not 1 <= failures <= 10:
            raise service.error("security_code_failures", "must be between 1 and 10")
        kwargs["security_code_failures"] = failures
    lockout = service.get("security_lockout", (int, float))
    if lockout is not None:
        if not 1 <= lockout <= 86400:
            raise service.error("security_lockout", "must be between 1 and 86400 seconds")
        kwargs["security_lockout"] = float(lockout)
    recordings = service.get("recordings_dir", str)
    if recordings is not None:
        kwargs["recordings_dir"] = Path(recordings)
    attempts = service.get("callback_attempts", int)
    if attempts is not None:
        if not 1 <= attempts <= 10:
            raise service.error("callback_attempts", "must be between 1 and 10")
        kwargs["callback_attempts"] = attempts
    blocked = service.get("blocked_prefixes", list, [])
    if not all(isinstance(p, str) and p.lstrip("+").isdigit() for p in blocked):
        raise service.error("blocked_prefixes", "expected a list of digit strings")
    kwargs["blocked_prefixes"] = tuple(p.lstrip("+") for p in blocked)
    for key in ("location_kinds", "name_kinds"):
        kinds = service.get(key, list)
        if kinds is None:
            continue
        if not all(isinstance(k, str) and k in ACCOUNT_KINDS for k in kinds):
            raise service.error(
                key, f"expected a list of account kinds ({', '.join(ACCOUNT_KINDS)})"
            )
        kwargs[key] = tuple(kinds)
    drain = service.get("drain_timeout", (int, float), 0)
    if not 0 <= drain <= 3600:
        raise service.error("drain_timeout", "must be between 0 and 3600 seconds")
    kwargs["drain_timeout"] = float(drain)
    service.finish()

    kwargs["limits"] = _load_limits(_Reader(top.get("limits", dict, {}), "limits", text, source))
    web = top.get("web", dict)
    if web is not None:
        kwargs["web"] = _load_web(_Reader(web, "web", text, source))
    mail = top.get("mail", dict)
    if mail is not None:
        kwargs["mail"] = _load_mail(_Reader(mail, "mail", text, source))
    kwargs["admin"] = _load_admin(_Reader(top.get("admin", dict, {}), "admin", text, source))

    media = _Reader(top.get("media", dict, {}), "media", text, source)
    kwargs["media_host"] = media.get("host", str, "127.0.0.1")
    ports = media.get("rtp_ports", list, [16384, 32767])
    if (
        len(ports) != 2
        or not all(isinstance(p, int) and not isinstance(p, bool) for p in ports)
        or not 1024 <= ports[0] < ports[1] <= 65535
    ):
        raise media.error("rtp_ports", "expected [low, high] with 1024 <= low < high <= 65535")
    kwargs["rtp_ports"] = (ports[0], ports[1])
    workers = media.get("workers", (str, int), "auto")
    if workers == "auto":
        kwargs["media_workers"] = None
    elif isinstance(workers, int) and 0 <= workers <= 256:
        kwargs["media_workers"] = workers
    else:
        raise media.error("workers", 'expected "auto" or a number of processes from 0 to 256')
    # Each worker gets a slice of rtp_ports holding at least one RTP/RTCP pair, counted from
    # the first even port as the node splits them (softswitch.aio.mediapool.split_ports).
    pairs = (ports[1] - (ports[0] + (ports[0] & 1)) + 1) // 2
    if isinstance(workers, int) and workers > pairs:
        raise media.error("workers", "more workers than RTP port pairs in rtp_ports")
    if workers == "auto" and (auto := auto_media_workers()) > pairs:
        # Named where the fix goes: the workers line if there is one, else the range's.
        raise media.error(
            "workers" if "workers" in media.data else "rtp_ports",
            f"rtp_ports {ports[0]}-{ports[1]} holds {pairs} RTP port pair(s), fewer than the "
            f'{auto} media workers of workers = "auto" on this machine (one per core but '
            "one): widen rtp_ports or set workers to a number",
        )
    media.finish()

    prompts = _Reader(top.get("prompts", dict, {}), "prompts", text, source)
    directory = prompts.get("dir", str)
    if directory is not None:
        kwargs["prompts_dir"] = Path(directory)
    prompts.finish()

    tests: dict[str, float] = {}
    for index, item in enumerate(top.get("test_number", list, [])):
        if not isinstance(item, dict):
            raise top.error("test_number", "expected [[test_number]] tables")
        reader = _Reader(item, "test_number", text, source)
        number = reader.get("number", str)
        if not number or not number.lstrip("+").isdigit():
            raise reader.error(
                "number", f"test number #{index + 1}: expected digits, got {number!r}"
            )
        hangup = float(reader.get("hangup_after", (int, float), 0))
        if hangup < 0:
            raise reader.error("hangup_after", "must be 0 (wait for the caller) or positive")
        reader.finish()
        tests[number.lstrip("+")] = hangup
    clash = set(tests) & set(numbers)
    if clash:
        raise top.error("test_number", f"{sorted(clash)[0]} is also a trigger number")
    kwargs["test_numbers"] = tests
    top.finish()

    if kwargs.get("t2", 4.0) < kwargs.get("t1", 0.5):
        raise ConfigError(
            "t2 must not be smaller than t1",
            path=source,
            line=_find_line(text, "sip", "t2"),
            key="[sip] t2",
        )

    overrides = []
    if sip_listen is not None:
        try:
            kwargs["listen"] = (parse_host_port(sip_listen),)
        except ValueError as exc:
            raise ConfigError(str(exc), path="--sip-listen") from None
        overrides.append("listen")
    if db_url is not None:
        kwargs["db_url"] = db_url
        overrides.append("db_url")
    kwargs["overrides"] = tuple(overrides)
    return Config(**kwargs)


def _load_trunk(r: _Reader) -> TrunkConfig:
    proxy_text = r.get("proxy", str)
    registrar = r.get("registrar", str)
    if proxy_text is None and registrar is None:
        raise r.error(None, "needs 'proxy' (host:port) or 'registrar' (a sip: URI)")
    if registrar is not None and not registrar.lower().startswith(("sip:", "sips:")):
        raise r.error("registrar", f"expected a sip: URI, got {registrar!r}")
    if proxy_text is None:
        assert registrar is not None
        hostport = registrar.split(":", 1)[1].split(";", 1)[0]
        hostport = hostport.rsplit("@", 1)[-1]
        proxy = _addr(r, "registrar", hostport)
    else:
        proxy = _addr(r, "proxy", proxy_text)
    ip_auth = r.get("ip_auth", bool, False)
    username = r.get("username", str)
    password = r.get("password", str)
    if not ip_auth and registrar is not None and (username is None or password is None):
        raise r.error(
            "username", "a registering trunk needs username and password (or set ip_auth = true)"
        )
    expires = r.get("expires", int, 3600)
    if expires < 60:
        raise r.error("expires", "must be at least 60 seconds")
    prefix = r.get("international_prefix", str, "+")
    if prefix not in ("+", "00", "011", "010", "0011", "001", ""):
        raise r.error(
            "international_prefix",
            f"unusual prefix {prefix!r} "
            "(expected one of '+', '00', '011', '010', '0011', '001', '')",
        )
    transport = r.get("transport", str, "udp").lower()
    if transport not in ("udp", "tcp"):
        raise r.error("transport", f"unknown transport {transport!r} (udp, tcp)")
    trunk = TrunkConfig(
        proxy=proxy,
        registrar=registrar,
        username=username,
        password=password,
        realm=r.get("realm", str),
        expires=expires,
        ip_auth=ip_auth,
        keepalive_interval=_keepalive(r),
        caller_id=r.get("caller_id", str),
        international_prefix=prefix,
        transport=transport,
    )
    r.finish()
    return trunk


def _keepalive(r: _Reader) -> float:
    value = float(r.get("keepalive_interval", (int, float), 30.0))
    if value != 0 and value < 5:
        raise r.error("keepalive_interval", "must be 0 (off) or at least 5 seconds")
    return value


def _apply_env(data: dict[str, Any], env: Mapping[str, str]) -> None:
    """Secrets from the environment replace the file's (a table that configures nothing else
    is not created for them: a trunk password alone is no trunk, a web secret no web page)."""
    for variable, (table, key) in ENV_OVERRIDES.items():
        value = env.get(variable)
        if not value:
            continue
        section = data.get(table)
        if section is None and table in ("database", "admin"):
            section = data[table] = {}
        if isinstance(section, dict):
            section[key] = value


def _positive(r: _Reader, key: str, default: float, *, low: float, high: float) -> float:
    value = r.get(key, (int, float), default)
    if not low <= value <= high:
        raise r.error(key, f"must be between {low:g} and {high:g}")
    return float(value)


def _networks(r: _Reader, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    values = r.get(key, list, list(default))
    for net in values:
        try:
            ipaddress.ip_network(str(net), strict=False)
        except ValueError:
            raise r.error(key, f"not an address or network: {net!r}") from None
    return tuple(str(n) for n in values)


def _load_sip_limits(r: _Reader) -> SipLimits:
    """The ``[sip]`` keys of :class:`SipLimits` (the caller finishes the table)."""
    counts = {}
    for key, default in (
        ("rate_per_source", 200),
        ("max_transactions", 100_000),
        ("max_dialogs", 10_000),
        ("max_early_per_source", 20),
        ("tcp_max_per_source", 32),
    ):
        value = r.get(key, int, default)
        if not 0 <= value <= 10**7:
            raise r.error(key, "must be between 0 (no limit) and 10000000")
        counts[key] = value
    defaults = SipLimits()
    return SipLimits(
        source_ban=_positive(r, "source_ban", 600, low=0, high=86400 * 7),
        exempt_from=_networks(r, "exempt_from", defaults.exempt_from),
        invite_from=_networks(r, "invite_from", ()),
        **counts,
    )


def _load_limits(r: _Reader) -> LimitsConfig:
    limits = LimitsConfig(
        per_source=int(_positive(r, "per_source", 10, low=1, high=100_000)),
        per_trigger=int(_positive(r, "per_trigger", 20, low=1, high=100_000)),
        window=_positive(r, "window", 3600, low=1, high=86400 * 7),
        ban=_positive(r, "ban", 3600, low=0, high=86400 * 7),
        outbound_per_minute=int(_positive(r, "outbound_per_minute", 1200, low=0, high=10**6)),
        daily_spend=int(_positive(r, "daily_spend", 0, low=0, high=10**15)),
    )
    for key in ("per_source", "per_trigger", "outbound_per_minute", "daily_spend"):
        if not isinstance(r.data.get(key, 0), int):
            raise r.error(key, "expected an integer")
    r.finish()
    return limits


def _load_web(r: _Reader) -> WebConfig | None:
    enabled = r.get("enabled", bool, True)
    listen = _addr(r, "listen", r.get("listen", str, "127.0.0.1:8080"), 8080)
    secret = r.get("secret", str)
    if secret is not None and len(secret) < 16:
        raise r.error("secret", "too short: use at least 16 random characters")
    proxies = r.get("trusted_proxies", list, [])
    for net in proxies:
        try:
            ipaddress.ip_network(str(net), strict=False)
        except ValueError:
            raise r.error("trusted_proxies", f"not an address or network: {net!r}") from None
    language = r.get("default_language", str, "ja")
    if language not in ("ja", "en"):
        raise r.error("default_language", f"unknown language {language!r} (ja, en)")
    web = WebConfig(
        listen=listen,
        secret=secret,
        trusted_proxies=tuple(str(n) for n in proxies),
        answer_time=_positive(r, "answer_time", 0.5, low=0, high=10),
        default_language=language,
    )
    r.finish()
    return web if enabled else None


_MAIL_ADDRESS = re.compile(r"^[^@\s<>]+@[^@\s<>]+$")


def _load_mail(r: _Reader) -> MailConfig | None:
    enabled = r.get("enabled", bool, True)
    address = r.get("address", str)
    if address is None:
        raise r.error(None, "needs 'address' (the trigger address, e.g. callback@example.net)")
    if not _MAIL_ADDRESS.match(address):
        raise r.error("address", f"not an e-mail address: {address!r}")
    listen = _addr(r, "listen", r.get("listen", str, "127.0.0.1:2525"), 25)
    max_size = r.get("max_size", int, 32 * 1024)
    if not 1024 <= max_size <= 10 * 1024 * 1024:
        raise r.error("max_size", "must be between 1024 and 10485760 bytes")
    senders: dict[str, tuple[str, ...]] = {}
    for number, allowed in r.get("senders", dict, {}).items():
        if not number.lstrip("+").isdigit():
            raise r.error("senders", f"expected trigger numbers as keys, got {number!r}")
        if not isinstance(allowed, list) or not all(
            isinstance(a, str) and _MAIL_ADDRESS.match(a) for a in allowed
        ):
            raise r.error("senders", f"{number}: expected a list of e-mail addresses")
        senders[number.lstrip("+")] = tuple(a.lower() for a in allowed)
    relays = r.get("trusted_relays", list, [])
    for net in relays:
        try:
            ipaddress.ip_network(str(net), strict=False)
        except ValueError:
            raise r.error("trusted_relays", f"not an address or network: {net!r}") from None
    mail = MailConfig(
        address=address.lower(),
        listen=listen,
        max_size=max_size,
        senders=senders,
        hostname=r.get("hostname", str, "softswitch"),
        trusted_relays=tuple(str(n) for n in relays),
    )
    r.finish()
    return mail if enabled else None


def _load_admin(r: _Reader) -> AdminConfig:
    listen = _addr(r, "listen", r.get("listen", str, DEFAULT_ADMIN_LISTEN), 8090)
    token = r.get("token", str)
    if token is not None and len(token) < 16:
        raise r.error("token", "too short: use at least 16 random characters")
    r.finish()
    return AdminConfig(listen=listen, token=token)
