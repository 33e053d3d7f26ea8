"""Drive baresip 1.0 (Debian) as the customer's phone in the interop suite.

Theory of operation: :class:`Baresip` writes a private configuration directory (``config``,
``accounts``, ``contacts``) in the test's work directory, starts ``baresip -f DIR`` in the
foreground with its output in a log file, and talks to it over the ``ctrl_tcp`` module: each
command is a netstring-framed JSON object ``{"command", "params", "token"}``; baresip answers
with ``{"response": true, "ok", "data", "token"}`` and also pushes events
``{"event": true, "type": "CALL_ESTABLISHED", ...}`` on the same connection.
:class:`ControlConnection` reads both, keeping every event so a test can wait for one that
arrived while it was doing something else.

Audio: the phone "speaks" a WAV file through the ``aufile`` source (padded with silence, or
all silence when the test gives none) and every call's audio is recorded by the ``sndfile`` filter as
``dump-<time>-enc.wav`` (what the phone sent) and ``dump-<time>-dec.wav`` (what it received).
Keys pressed with :meth:`Baresip.send_dtmf` go out as RFC 4733 telephone-events when the offer
carried telephone-event (baresip always answers it when offered).

Quirks of baresip 1.0 found while building this (all handled here):

- ``stdio.so`` needs a TTY: without one it is simply not loaded and ``menu.so`` commands (dial,
  accept, hangup, sndcode, listcalls, reginfo, quit) are reached through ``ctrl_tcp`` only.
- ``menu.so`` must be loaded for ``ctrl_tcp`` to have any command; responses escape ``/`` as
  ``\\/`` (valid JSON) and ``ok`` is false for unknown commands ("command not found").
- ``net_interface lo`` fails ("could not get IPv4 address"); it must be the address itself
  (``net_interface 127.0.0.1``). Without it baresip picks the default route's interface and puts
  that address into SDP, i.e. RTP would leave loopback.
- ``aufile`` is a source only in 1.0 (no ``aufile`` player) and the file must match
  ``ausrc_srate``/``ausrc_channels`` exactly (8000 Hz mono here), or the call has no audio.
  ``ausine`` is 48 kHz stereo only. When the file ends, ``menu.so`` treats it as an audio
  error ("end of file") and hangs the call up: the driver pads the file with silence. There is no null player: ``aubridge`` with a device name
  nobody reads serves as one (``audio_player aubridge,nowhere``).
- Its Contact user is ``<user>-0x<pointer>`` (unique per user agent); an incoming INVITE whose
  Request-URI user is the account's AOR user still matches (fallback match on the AOR).
- ``sndfile`` names dumps by the second the call started: two calls in the same second share
  (overwrite) one file.
- Events go only to connected ctrl_tcp clients and are not queued: ``REGISTER_OK`` is usually
  over before the driver connects, so registration is polled with ``reginfo`` (whose status is
  ANSI-coloured). With ``answermode=auto`` there is no ``CALL_INCOMING`` event, only
  ``CALL_ESTABLISHED``; ``CALL_CLOSED``'s ``param`` is "Connection reset by peer" for a BYE.
- ``sndcode`` sends the key and then the key release itself; without a running audio source
  the telephone-event packets are never sent (they ride the audio transmit path).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interop.peers import LOOPBACK, free_port, spawn, terminate

CUSTOMER_NUMBER = "815011110000"
MODULE_PATH = "/usr/lib/baresip/modules"
RATE = 8000
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class BaresipError(Exception):
    """baresip refused a command, closed its control socket, or did not start."""


def write_speech(path: Path, source: Path | None, seconds: float) -> Path:
    """Write the WAV the phone speaks: ``source`` (or nothing) padded with silence to last at
    least ``seconds``, as 8 kHz mono 16-bit (the only format ``aufile`` accepts here).

    Raises ``ValueError`` if ``source`` is in another format (baresip would play nothing).
    """
    frames = b""
    if source is not None:
        with wave.open(str(source), "rb") as r:
            shape = (r.getframerate(), r.getnchannels(), r.getsampwidth())
            if shape != (RATE, 1, 2):
                raise ValueError(f"{source}: need 8000 Hz mono 16-bit, got {shape}")
            frames = r.readframes(r.getnframes())
    frames += b"\0\0" * max(0, int(RATE * seconds) - len(frames) // 2)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(frames)
    return path


def netstring(payload: bytes) -> bytes:
    """``payload`` framed as a netstring (``<len>:<payload>,``), as ctrl_tcp expects."""
    return str(len(payload)).encode() + b":" + payload + b","


def split_netstrings(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Complete netstring payloads at the start of ``buffer`` and the unparsed rest."""
    out: list[bytes] = []
    while True:
        colon = buffer.find(b":")
        if colon < 0:
            return out, buffer
        length_text = buffer[:colon]
        if not length_text.isdigit():
            raise BaresipError(f"bad netstring from baresip: {buffer[:40]!r}")
        end = colon + 1 + int(length_text)
        if len(buffer) < end + 1:
            return out, buffer
        if buffer[end : end + 1] != b",":
            raise BaresipError(f"netstring without ',' from baresip: {buffer[:40]!r}")
        out.append(buffer[colon + 1 : end])
        buffer = buffer[end + 1 :]


class ControlConnection:
    """A ctrl_tcp client: commands with tokens, and every event baresip pushed, in order."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((LOOPBACK, port), timeout=timeout)
        self.events: list[dict[str, Any]] = []
        self._responses: dict[str, dict[str, Any]] = {}
        self._buffer = b""
        self._token = 0

    def close(self) -> None:
        self.sock.close()

    def _pump(self, deadline: float) -> bool:
        """Read what arrives before ``deadline``; False if nothing did."""
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return False
        if not data:
            raise BaresipError("baresip closed its control connection")
        messages, self._buffer = split_netstrings(self._buffer + data)
        for raw in messages:
            message = json.loads(raw)
            if message.get("event"):
                self.events.append(message)
            elif message.get("response"):
                self._responses[str(message.get("token"))] = message
        return True

    def command(self, command: str, params: str = "", timeout: float = 5.0) -> str:
        """Run a menu command (``dial``, ``hangup``, ``sndcode`` ...) and return its text.

        Raises :class:`BaresipError` when baresip answers ``ok: false`` or not at all.
        """
        self._token += 1
        token = str(self._token)
        request = {"command": command, "params": params, "token": token}
        self.sock.sendall(netstring(json.dumps(request).encode()))
        deadline = time.monotonic() + timeout
        while token not in self._responses:
            if not self._pump(deadline) and time.monotonic() >= deadline:
                raise BaresipError(f"no response to {command!r} within {timeout} s")
        response = self._responses.pop(token)
        if not response.get("ok"):
            raise BaresipError(f"{command} {params!r} failed: {response.get('data')!r}")
        return str(response.get("data", ""))

    def wait_event(self, kind: str, timeout: float, *, after: int = 0) -> dict[str, Any]:
        """The first event of type ``kind`` with index >= ``after`` in :attr:`events`."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events[after:]:
                if event.get("type") == kind:
                    return event
            if time.monotonic() >= deadline:
                seen = [e.get("type") for e in self.events]
                raise BaresipError(f"no {kind} event within {timeout} s; events: {seen}")
            self._pump(deadline)


@dataclass
class Baresip:
    """One baresip process: a phone with one account ``sip:<number>@<carrier>``.

    ``register_password`` None: ``regint=0``, the phone never registers and the carrier must
    route to :attr:`sip_address` statically; otherwise it registers to the carrier with
    ``<number>``/``register_password``. ``auto_answer`` sets ``answermode=auto``.
    ``audio_file``: an 8 kHz mono 16-bit WAV to speak, padded with silence to
    ``audio_seconds`` because baresip hangs up when its source file ends.
    """

    binary: str
    workdir: Path
    carrier: str
    number: str = CUSTOMER_NUMBER
    register_password: str | None = None
    auto_answer: bool = True
    audio_file: Path | None = None
    audio_seconds: float = 60.0
    sip_port: int = field(default_factory=lambda: free_port(span=2))  # TLS on port + 1
    ctrl_port: int = field(default_factory=free_port)
    rtp_base: int = field(default_factory=lambda: free_port() & ~1)
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)
    control: ControlConnection | None = field(default=None, init=False)

    @property
    def confdir(self) -> Path:
        return self.workdir / f"baresip_{self.sip_port}"

    @property
    def log_path(self) -> Path:
        return self.confdir / "baresip.log"

    @property
    def sip_address(self) -> str:
        """Where the phone listens for SIP: ``127.0.0.1:PORT``."""
        return f"{LOOPBACK}:{self.sip_port}"

    @property
    def aor(self) -> str:
        return f"sip:{self.number}@{self.carrier}"

    def config_text(self, audio: Path) -> str:
        """The ``config`` file: headless, loopback only, G.711 at 8 kHz mono."""
        lines = [
            "poll_method epoll",
            f"sip_listen {self.sip_address}",
            f"net_interface {LOOPBACK}",
            f"rtp_ports {self.rtp_base}-{self.rtp_base + 19}",
            f"audio_source aufile,{audio}",
            "audio_player aubridge,nowhere",
            "audio_alert aubridge,nowhere",
            f"ausrc_srate {RATE}",
            f"auplay_srate {RATE}",
            "ausrc_channels 1",
            "auplay_channels 1",
            f"module_path {MODULE_PATH}",
            "module g711.so",
            "module aufile.so",
            "module aubridge.so",
            "module sndfile.so",
            f"snd_path {self.confdir}",
            "module_app account.so",
            "module_app menu.so",
            "module_app ctrl_tcp.so",
            f"ctrl_tcp_listen {LOOPBACK}:{self.ctrl_port}",
        ]
        return "\n".join(lines) + "\n"

    def account_line(self) -> str:
        """The ``accounts`` line for :attr:`aor`."""
        params = [f"answermode={'auto' if self.auto_answer else 'manual'}", "audio_codecs=PCMU"]
        if self.register_password is None:
            params.append("regint=0")
        else:
            params += [f"auth_pass={self.register_password}", "regint=60"]
        return f"<{self.aor}>;" + ";".join(params) + "\n"

    def start(self, ready_timeout: float = 10.0) -> Baresip:
        """Write the configuration, start baresip, and connect to ctrl_tcp; raise if it fails."""
        self.confdir.mkdir(parents=True, exist_ok=True)
        audio = write_speech(self.confdir / "speech.wav", self.audio_file, self.audio_seconds)
        (self.confdir / "config").write_text(self.config_text(audio))
        (self.confdir / "accounts").write_text(self.account_line())
        (self.confdir / "contacts").write_text("")
        cmd = [self.binary, "-4", "-v", "-f", str(self.confdir)]
        self.proc = spawn(cmd, self.confdir, self.log_path)
        deadline = time.monotonic() + ready_timeout
        while self.control is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise BaresipError(f"baresip did not start:\n{self.log()[-3000:]}")
            if "baresip is ready" in self.log():
                # ctrl_tcp listens before "ready" is logged; a refused connect is retried anyway.
                with contextlib.suppress(OSError):
                    self.control = ControlConnection(self.ctrl_port)
            time.sleep(0.05)
        return self

    def log(self) -> str:
        """Everything baresip wrote so far."""
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def _control(self) -> ControlConnection:
        if self.control is None:
            raise BaresipError("baresip is not running")
        return self.control

    def command(self, command: str, params: str = "") -> str:
        """A raw ctrl_tcp command (see ``help``); its response text."""
        return self._control().command(command, params)

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every event baresip pushed so far (``type``, ``peeruri``, ``param`` ...)."""
        return self._control().events

    def wait_event(self, kind: str, timeout: float = 10.0, *, after: int = 0) -> dict[str, Any]:
        """Wait for an event of type ``kind`` (e.g. ``CALL_INCOMING``, ``REGISTER_OK``)."""
        return self._control().wait_event(kind, timeout, after=after)

    def wait_for_call_established(self, timeout: float = 10.0) -> dict[str, Any]:
        """Wait until a call is answered (by auto-answer, :meth:`accept` or the far end)."""
        return self.wait_event("CALL_ESTABLISHED", timeout)

    def wait_for_call_closed(self, timeout: float = 10.0) -> dict[str, Any]:
        """Wait until a call ended (BYE either way, rejection, or failure)."""
        return self.wait_event("CALL_CLOSED", timeout)

    def is_registered(self) -> bool:
        """True if the account's registration stands (``reginfo`` says OK)."""
        return re.search(r"\bOK\b", _ANSI.sub("", self.command("reginfo"))) is not None

    def wait_for_registered(self, timeout: float = 10.0) -> None:
        """Wait until the carrier accepted the phone's REGISTER; raise on timeout.

        Polls ``reginfo``: the ``REGISTER_OK`` event usually fires before the control
        connection exists (events only go to connected clients).
        """
        deadline = time.monotonic() + timeout
        while not self.is_registered():
            if time.monotonic() > deadline:
                raise BaresipError(f"not registered after {timeout} s:\n{self.log()[-2000:]}")
            time.sleep(0.05)

    def dial(self, uri: str) -> None:
        """Call ``uri`` (a SIP URI or a number at the carrier)."""
        self.command("dial", uri)

    def accept(self) -> None:
        """Answer the ringing call (when ``auto_answer`` is off)."""
        self.command("accept")

    def hangup(self) -> None:
        """Hang up the current call (BYE, or CANCEL while ringing)."""
        self.command("hangup")

    def send_dtmf(self, digits: str) -> None:
        """Press ``digits`` on the current call (RFC 4733 telephone-events, then release)."""
        for digit in digits:
            self.command("sndcode", digit)
            # One sndcode is press + release; keys sent back to back merge into one event.
            time.sleep(0.15)

    def _dump(self, kind: str) -> Path | None:
        dumps = sorted(self.confdir.glob(f"dump-*-{kind}.wav"))
        return dumps[-1] if dumps else None

    def received_audio(self) -> Path | None:
        """The WAV of what the phone received on its latest call (decoded, 8 kHz mono)."""
        return self._dump("dec")

    def sent_audio(self) -> Path | None:
        """The WAV of what the phone sent on its latest call."""
        return self._dump("enc")

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM, wait, and return the exit code (-9: it had to be killed)."""
        if self.control is not None:
            self.control.close()
            self.control = None
        if self.proc is None:
            return 0
        return terminate(self.proc, timeout, self.kill)

    def kill(self) -> None:
        """SIGKILL by PID if still running (teardown of a failed start)."""
        if self.control is not None:
            self.control.close()
            self.control = None
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
