"""Drive Kamailio as the carrier in the interop suite: a registrar with digest auth and a router.

Theory of operation: the configuration ``interop/kamailio/kamailio.cfg`` is fixed text; what
changes per test (the port, passwords, numbers and where they route) is passed on the command
line, the port as ``-l udp:127.0.0.1:PORT`` and the rest as preprocessor defines
(``-A NAME="value"``), so the same file passes ``kamailio -c`` and needs no templating. The
process runs in the foreground (``-DD``) logging to stderr (``-E``) into a file in the test's
work directory, and is ready when it answers an OPTIONS probe. It is stopped by PID (SIGTERM to
the main process, which stops its children). :class:`KamailioProcess` is that handling, shared
with the cluster's dispatcher (``interop.cluster.Dispatcher``, its own cfg).

Routing (see the cfg's header): the trigger number (and, with ``trigger_prefix``, every
number in that block) goes to the switch's registered Contact (or a static address), a registered AOR to its Contact, the customer number to baresip, and any
other number to the "PSTN" (a SIPp UAS). INVITEs towards customers and the PSTN must carry the
switch's credentials (407) unless ``auth_invite`` is off; REGISTER always gets 401 first.

Quirks of Kamailio 5.6 (Debian) found while building this:

- ``pv_auth_check``'s third argument is "password is HA1" (1) or plain text (0), not the qop
  flag that ``auth_challenge`` takes there: passing 1 makes every plain password fail (-2).
- ``lookup("location")`` rewrites the Request-URI to the Contact; the switch matches trigger
  numbers on the Request-URI user, so the cfg puts the dialled number back as user and keeps
  the Contact's address in the destination URI.
- The default runtime directory ``/run/kamailio`` may not exist or be shared: ``-Y`` and ``-w``
  point at the work directory. ``-x fm`` selects the fast shared-memory allocator; 64 MB of
  shared memory is plenty for tests (``-m``).
- Defines are not expanded inside quoted strings, so string values carry their own quotes and
  are assigned to variables (``$var(x) = DEFINE;``) before use in function arguments.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Self

from interop.baresip import CUSTOMER_NUMBER
from interop.peers import LOOPBACK, TRIGGER_NUMBER, free_port, spawn, terminate

CONFIG = Path(__file__).resolve().parent / "kamailio" / "kamailio.cfg"
SCENARIOS = Path(__file__).resolve().parent / "kamailio" / "scenarios"
DESTINATION_NUMBER = "441234567890"


class KamailioError(Exception):
    """Kamailio did not start or answer."""


def quoted(value: str) -> str:
    """A string value for a ``-A NAME=value`` define: in double quotes (see the quirks above)."""
    if '"' in value or "\\" in value:
        raise ValueError(f"define values must not contain quotes or backslashes: {value!r}")
    return f'"{value}"'


def sip_uri(address: str) -> str:
    """``host:port`` -> ``sip:host:port`` (targets may be given either way)."""
    return address if address.startswith("sip:") else f"sip:{address}"


class KamailioProcess(ABC):
    """Start, probe and stop one Kamailio process in the foreground; what it runs (the
    command line, the log file, files written before the start) is up to the subclass.

    Shared by the carrier (:class:`Kamailio`) and the cluster's dispatcher
    (``interop.cluster.Dispatcher``).
    """

    binary: str
    workdir: Path
    port: int
    shm_mb: int
    proc: subprocess.Popen[bytes] | None
    #: The kamailio.cfg it runs.
    config: ClassVar[Path] = CONFIG
    #: Names the process in :class:`KamailioError`.
    what: ClassVar[str] = "kamailio"

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    @abstractmethod
    def log_path(self) -> Path:
        """Where Kamailio's stderr goes."""

    @abstractmethod
    def defines(self) -> list[str]:
        """The ``-A`` preprocessor defines for the cfg."""

    def process_options(self) -> list[str]:
        """Options on the number of processes (``-n``); none: Kamailio's default."""
        return []

    def command(self) -> list[str]:
        cmd = [self.binary, "-DD", "-E", "-x", "fm", "-m", str(self.shm_mb), "-M", "8"]
        cmd += self.process_options()
        cmd += ["-f", str(self.config), "-l", f"udp:{self.address}"]
        cmd += ["-w", str(self.workdir), "-Y", str(self.workdir)]
        for define in self.defines():
            cmd += ["-A", define]
        return cmd

    def prepare(self) -> None:
        """Called by :meth:`start` before the process starts: creates the work directory."""
        self.workdir.mkdir(parents=True, exist_ok=True)

    def start(self, ready_timeout: float = 10.0) -> Self:
        """Start Kamailio and wait until it answers OPTIONS; raise (and kill it) otherwise."""
        self.prepare()
        # Its own process group: kill() can then take the children with the main process.
        self.proc = spawn(self.command(), self.workdir, self.log_path, new_session=True)
        deadline = time.monotonic() + ready_timeout
        while not self.ping():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise KamailioError(f"{self.what} did not start:\n{self.log()[-3000:]}")
        return self

    def ping(self, wait: float = 0.2) -> bool:
        """True if Kamailio answers an OPTIONS to itself with 200 within ``wait`` seconds."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((LOOPBACK, 0))
            port = sock.getsockname()[1]
            branch = f"z9hG4bK-ping-{port}-{time.monotonic_ns()}"
            probe = (
                f"OPTIONS sip:{self.address} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {LOOPBACK}:{port};branch={branch};rport\r\n"
                "Max-Forwards: 70\r\n"
                f"From: <sip:ping@{LOOPBACK}:{port}>;tag=ping\r\n"
                f"To: <sip:{self.address}>\r\n"
                f"Call-ID: {branch}@{LOOPBACK}\r\n"
                "CSeq: 1 OPTIONS\r\n"
                "Content-Length: 0\r\n\r\n"
            )
            sock.settimeout(wait)
            try:
                sock.sendto(probe.encode(), (LOOPBACK, self.port))
                answer = sock.recv(65535)
            except (TimeoutError, ConnectionRefusedError):
                time.sleep(0.05)
                return False
        return answer.startswith(b"SIP/2.0 200 ")

    def log(self) -> str:
        """Everything Kamailio logged so far (the cfg's ``carrier:`` or ``cluster:`` lines tell
        each routing step)."""
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_for_log(self, text: str, timeout: float) -> bool:
        """Wait until ``text`` appears in the log; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return True
            time.sleep(0.05)
        return text in self.log()

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM to the main process, wait, and return its exit code (-9: killed)."""
        if self.proc is None:
            return 0
        return terminate(self.proc, timeout, self.kill)

    def kill(self) -> None:
        """SIGKILL the process group this driver started (main process and children)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@dataclass
class Kamailio(KamailioProcess):
    """One Kamailio process: the carrier on ``127.0.0.1:port`` (UDP).

    Targets are ``"127.0.0.1:PORT"`` (or SIP URIs); None means no static route: the switch is
    then reached only through its registration, the customer only if registered, and other
    numbers get 404.
    """

    binary: str
    workdir: Path
    port: int = field(default_factory=free_port)
    realm: str = "carrier.test"
    switch_user: str = "switch"
    switch_password: str = "secret"
    phone_password: str = "phone"
    trigger_number: str = TRIGGER_NUMBER
    #: Numbers starting with these digits go to the switch too (a block of trigger DIDs).
    trigger_prefix: str | None = None
    switch_target: str | None = None
    customer_number: str = CUSTOMER_NUMBER
    customer_target: str | None = None
    pstn_target: str | None = None
    auth_invite: bool = True
    shm_mb: int = 64
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def log_path(self) -> Path:
        return self.workdir / f"kamailio_{self.port}.log"

    def defines(self) -> list[str]:
        """The ``-A`` preprocessor defines for kamailio.cfg."""
        values = {
            "REALM": self.realm,
            "SWITCH_USER": self.switch_user,
            "SWITCH_PASSWORD": self.switch_password,
            "PHONE_PASSWORD": self.phone_password,
            "TRIGGER_NUMBER": self.trigger_number,
            "CUSTOMER_NUMBER": self.customer_number,
        }
        if self.switch_target:
            values["SWITCH_TARGET"] = sip_uri(self.switch_target)
        if self.customer_target:
            values["CUSTOMER_TARGET"] = sip_uri(self.customer_target)
        if self.pstn_target:
            values["PSTN_TARGET"] = sip_uri(self.pstn_target)
        if self.trigger_prefix:
            values["TRIGGER_PREFIX"] = self.trigger_prefix
        out = [f"{name}={quoted(value)}" for name, value in values.items()]
        if self.auth_invite:
            out.append("AUTH_INVITE")
        return out
