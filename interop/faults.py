"""Faults for the interop suite: a lossy loopback in a network namespace, a restartable
PostgreSQL cluster.

:class:`LossyLoopback` makes a network namespace with its own loopback and drops a share of
the UDP datagrams crossing it at random (independently per datagram, like ``netem loss``).
``tc qdisc ... netem`` is the usual tool, but kernels built without ``sch_netem`` (this
machine's: "Specified qdisc kind is unknown") cannot use it, so the drop is an iptables rule
with the ``statistic`` match in the INPUT chain: a datagram dropped there is lost silently, as
on a wire (a drop in OUTPUT would fail the sender's ``sendto`` with EPERM, which no network
does). Rules without a target count every UDP datagram and every SIP one (a ``string`` match
on "SIP/2.0", which every SIP message carries and RTP does not), and the dropped ones go
through a chain that counts the SIP among them before dropping, so :meth:`counters` tells how
much crossed and how much was lost, signalling apart. TCP is left alone: only the test
harness's control channels (baresip's ctrl_tcp) use it; SIP and RTP here are UDP.

The test process itself enters the namespace (``setns(2)`` on the calling thread, then back
out at teardown): every peer it starts (node, Kamailio, baresip, SIPp) inherits it, exactly
as with ``ip netns exec NAME ...``, and the drivers' own sockets (Kamailio's OPTIONS ping,
baresip's control connection, ``free_port``) are inside too. Files are unaffected: the SQLite
store is read from the test as usual.

:class:`PgCluster` is a throw-away PostgreSQL cluster from the Debian binaries (as
``tests/store/conftest.py`` makes one), on a fixed loopback port so it can be stopped and
started again where the node expects it.
"""

from __future__ import annotations

import ctypes
import glob
import os
import re
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

#: ``CLONE_NEWNET`` from <sched.h>: setns(2) into a network namespace.
_CLONE_NEWNET = 0x40000000


class FaultSetupError(Exception):
    """The fault could not be arranged here (not permitted, tool missing): the reason."""


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


def _run(cmd: list[str]) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise FaultSetupError(f"`{' '.join(cmd)}` exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def sbin(name: str) -> str | None:
    """An administration program (``ip``, ``iptables``), also from /usr/sbin off ``$PATH``."""
    found = shutil.which(name)
    if found is None and Path("/usr/sbin", name).exists():
        found = f"/usr/sbin/{name}"
    return found


@dataclass(frozen=True, slots=True)
class LossCounters:
    """UDP datagrams that reached the namespace's loopback input, and how many were dropped;
    ``sip`` and ``sip_dropped`` count the SIP messages among them."""

    udp: int
    dropped: int
    sip: int
    sip_dropped: int

    def __str__(self) -> str:
        def share(part: int, whole: int) -> str:
            return f"{part} of {whole} ({100 * part / max(whole, 1):.1f} %)"

        return (
            f"UDP datagrams dropped: {share(self.dropped, self.udp)}, "
            f"SIP messages among them: {share(self.sip_dropped, self.sip)}"
        )


_SIP = ["-m", "string", "--string", "SIP/2.0", "--algo", "bm"]
_LOSS_CHAIN = "SOFTSWITCH_LOSS"


@dataclass
class LossyLoopback:
    """A network namespace whose loopback drops ``loss`` (0..1) of UDP datagrams at random."""

    loss: float
    ip: str = "ip"
    iptables: str = "iptables"
    name: str = field(
        default_factory=lambda: f"softswitch-loss-{os.getpid()}-{secrets.token_hex(3)}"
    )
    created: bool = field(default=False, init=False)
    _home: int | None = field(default=None, init=False)

    def _exec(self, *cmd: str) -> str:
        return _run([self.ip, "netns", "exec", self.name, *cmd])

    def create(self) -> LossyLoopback:
        """Make the namespace, bring its loopback up, install the counting and dropping rules."""
        _run([self.ip, "netns", "add", self.name])
        self.created = True
        self._exec(self.ip, "link", "set", "lo", "up")
        iptables = self.iptables
        udp = ["-i", "lo", "-p", "udp"]
        self._exec(iptables, "-N", _LOSS_CHAIN)
        self._exec(iptables, "-A", _LOSS_CHAIN, *_SIP)
        self._exec(iptables, "-A", _LOSS_CHAIN, "-j", "DROP")
        self._exec(iptables, "-A", "INPUT", *udp)
        self._exec(iptables, "-A", "INPUT", *udp, *_SIP)
        drop = ["-m", "statistic", "--mode", "random", "--probability", f"{self.loss:.4f}"]
        self._exec(iptables, "-A", "INPUT", *udp, *drop, "-j", _LOSS_CHAIN)
        return self

    def enter(self) -> None:
        """Move the calling thread (and every process it starts from now on) into it."""
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
        try:
            _setns(target)
        except OSError as exc:
            os.close(home)
            raise FaultSetupError(f"cannot enter network namespace {self.name}: {exc}") from None
        finally:
            os.close(target)
        self._home = home

    def leave(self) -> None:
        """Back to the namespace the thread came from."""
        if self._home is not None:
            _setns(self._home)
            os.close(self._home)
            self._home = None

    def _packets(self, chain: str, rules: int) -> list[int]:
        listing = self._exec(self.iptables, "-L", chain, "-v", "-n", "-x")
        counts = [int(m.group(1)) for m in re.finditer(r"^\s*(\d+)\s+\d+\s", listing, re.M)]
        if len(counts) != rules:
            raise FaultSetupError(f"unexpected iptables listing of {chain}:\n{listing}")
        return counts

    def counters(self) -> LossCounters:
        """What crossed the loopback so far and what was dropped."""
        udp, sip, dropped = self._packets("INPUT", 3)
        sip_dropped, _ = self._packets(_LOSS_CHAIN, 2)
        return LossCounters(udp, dropped, sip, sip_dropped)

    def delete(self) -> None:
        """Leave (if inside) and remove the namespace; processes still in it keep it alive."""
        self.leave()
        if self.created:
            subprocess.run([self.ip, "netns", "del", self.name], capture_output=True, check=False)
            self.created = False


# --- PostgreSQL ------------------------------------------------------------------------------


def pg_bindir() -> Path | None:
    """The newest Debian PostgreSQL server binaries (initdb, pg_ctl), or None."""
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    found.sort(key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@dataclass
class PgCluster:
    """A PostgreSQL cluster in a temporary directory on ``127.0.0.1:port`` (trust auth).

    As root, initdb and the server run as the ``postgres`` user (initdb refuses root); the
    directory is not under pytest's tmp dir, which is private to root.
    """

    bindir: Path
    port: int
    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="softswitch-pg-")))

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def log_path(self) -> Path:
        return self.base / "log"

    def _as_postgres(self) -> list[str]:
        return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def init(self) -> PgCluster:
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres", "postgres")
        _run([*self._as_postgres(), "mkdir", str(self.base / "sock")])
        initdb = [str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres"]
        _run([*self._as_postgres(), *initdb, "--auth=trust", "-E", "UTF8", "--no-sync"])
        return self

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (
            f"-p {self.port} -k {self.base / 'sock'} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off -c synchronous_commit=off"
        )
        pg_ctl = [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log_path)]
        _run([*self._as_postgres(), *pg_ctl, "-o", options, "-w", "start"])

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: open connections are terminated, as on a restart)."""
        pg_ctl = [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"]
        _run([*self._as_postgres(), *pg_ctl])

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def createdb(self, name: str) -> str:
        where = ["-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"]
        _run([str(self.bindir / "createdb"), *where, name])
        return self.url(name)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def destroy(self) -> None:
        """Stop the server if it runs and remove the cluster."""
        pg_ctl = [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"]
        subprocess.run([*self._as_postgres(), *pg_ctl], capture_output=True, check=False)
        shutil.rmtree(self.base, ignore_errors=True)
