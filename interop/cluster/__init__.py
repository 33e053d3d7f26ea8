"""The cluster's front door for the interop suite and the cluster benchmark (issue 12):
Kamailio's dispatcher in front of several ``softswitch serve`` nodes sharing PostgreSQL.

Theory of operation: ``interop/cluster/kamailio.cfg`` is fixed text (``kamailio -c`` checks
it as is); what changes per run is passed as preprocessor defines (``-A NAME="value"``), the
port as ``-l udp:127.0.0.1:PORT``, and two small files are written into the work directory
before the start: the dispatcher's list of nodes (set 1, one ``sip:host:port`` per node) and
the uac module's registration row (a db_text table ``uacreg``: this proxy registers to the
carrier as the switch, so the carrier routes every trigger number here). See the cfg's header
for the routing: triggers hashed by dialled number to an active node (failover to the next on
no answer or 5xx), the nodes' calls to the carrier with its digest challenge answered here,
everything record-routed.

:func:`node_config` is a node's TOML for such a cluster: the trunk is this proxy, IP-
authenticated (the node holds no carrier credentials), the store is the shared PostgreSQL.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from interop.callback_setup import switch_config
from interop.kamailio import KamailioProcess, quoted
from interop.peers import LOOPBACK, free_port

CONFIG = Path(__file__).resolve().parent / "kamailio.cfg"
SCENARIOS = Path(__file__).resolve().parent / "scenarios"

#: The db_text schema of Kamailio 5.6's ``uacreg`` table (version 5), as Debian ships it in
#: /usr/share/kamailio/dbtext/kamailio/uacreg, with the columns we leave empty nullable (an
#: empty db_text field is NULL, which a plain column refuses).
_UACREG_COLUMNS = (
    "id(int,auto) l_uuid(string) l_username(string) l_domain(string) r_username(string) "
    "r_domain(string) realm(string) auth_username(string) auth_password(string) "
    "auth_ha1(string,null) auth_proxy(string) expires(int) flags(int) reg_delay(int) "
    "contact_addr(string,null) socket(string,null) "
)


def _dbtext(value: str) -> str:
    """A db_text field: ``:`` and ``\\`` escaped (the column separator is ``:``)."""
    return value.replace("\\", "\\\\").replace(":", "\\:")


@dataclass
class Dispatcher(KamailioProcess):
    """One Kamailio process: the cluster's address ``127.0.0.1:port`` (UDP).

    ``nodes``: the nodes' SIP addresses (``127.0.0.1:PORT``); ``carrier``: where the carrier
    takes requests (``127.0.0.1:PORT``); ``register``: register to it as ``username`` (with
    ``password`` in ``realm``), else the carrier must know this address by itself.
    """

    binary: str
    workdir: Path
    nodes: Sequence[str]
    carrier: str
    port: int = field(default_factory=free_port)
    carrier_domain: str = "carrier.test"
    realm: str = "carrier.test"
    username: str = "switch"
    password: str = "secret"
    register: bool = True
    register_expires: int = 300
    node_timeout_ms: int = 1500
    children: int = 4
    shm_mb: int = 64
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)
    config: ClassVar[Path] = CONFIG
    what: ClassVar[str] = "the dispatcher"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"dispatcher_{self.port}.log"

    @property
    def list_path(self) -> Path:
        return self.workdir / f"dispatcher_{self.port}.list"

    @property
    def dbtext_dir(self) -> Path:
        return self.workdir / f"dispatcher_{self.port}_db"

    def prepare(self) -> None:
        """Before the start: the files the cfg reads."""
        self.write_files()

    def write_files(self) -> None:
        """The dispatcher list and the registration row (db_text)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        lines = ["# setid destination flags priority attributes"]
        for i, node in enumerate(self.nodes, 1):
            lines.append(f"1 sip:{node} 0 0 name=node{i}")
        self.list_path.write_text("\n".join(lines) + "\n")
        if not self.register:
            return
        self.dbtext_dir.mkdir(exist_ok=True)
        (self.dbtext_dir / "version").write_text(
            "table_name(string) table_version(int) \nuacreg:5\n"
        )
        row = [
            "1",
            self.username,  # l_uuid: the user part of our Contact
            self.username,
            self.carrier_domain,
            self.username,
            self.carrier_domain,
            self.realm,
            self.username,
            self.password,
            "",
            f"sip:{self.carrier}",
            str(self.register_expires),
            "0",
            "0",
            "",
            "",
        ]
        (self.dbtext_dir / "uacreg").write_text(
            _UACREG_COLUMNS + "\n" + ":".join(_dbtext(v) for v in row) + "\n"
        )

    def defines(self) -> list[str]:
        values = {
            "CARRIER": f"sip:{self.carrier}",
            "CARRIER_IP": self.carrier.rsplit(":", 1)[0],
            "CARRIER_DOMAIN": self.carrier_domain,
            "CARRIER_CREDENTIAL": f"{self.username}:{self.realm}:{self.password}",
            "DS_LIST": str(self.list_path),
            "REG_CONTACT": self.address,
        }
        if self.register:
            values["REG_DB"] = f"text://{self.dbtext_dir}"
        out = [f"{name}={quoted(value)}" for name, value in values.items()]
        out.append(f"NODE_TIMEOUT_MS={self.node_timeout_ms}")
        return out

    def process_options(self) -> list[str]:
        return ["-n", str(self.children)]

    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


def node_config(
    port: int,
    dispatcher: str,
    db_url: str,
    *,
    rtp_ports: tuple[int, int],
    admin_port: int | None = None,
    admin_token: str = "cluster-token-0123456789",
    log_level: str = "INFO",
    extra: str = "",
) -> str:
    """A cluster node's TOML: SIP on ``port``, SIP accepted only from loopback (the dispatcher
    in production: its address alone), the trunk is the dispatcher (no credentials here: the
    dispatcher registers and answers the carrier's challenges), the shared store, RTP in
    ``rtp_ports`` (each node its own range), the admin API on ``admin_port`` if given."""
    admin = (
        ""
        if admin_port is None
        else f'\n[admin]\nlisten = "{LOOPBACK}:{admin_port}"\ntoken = "{admin_token}"\n'
    )
    config = switch_config(
        port,
        dispatcher,
        db_url,
        rtp_ports=rtp_ports,
        log_level=log_level,
        ip_auth=True,
        sip_options='allow_from = ["127.0.0.0/8"]',
    )
    return config + admin + extra
