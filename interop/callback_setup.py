"""Shared set-up for the whole-callback-call interop tests and the callback benchmark.

Theory of operation: a callback call needs a store with accounts (:func:`provision`), a node
configuration with a trunk (:func:`switch_config`), and around the node Kamailio as the carrier,
baresip as the customer's phone and a SIPp UAS as the destination (:func:`start_callback_rig`).
Evidence is gathered three ways: the store (:func:`cdrs`, or anything through
:func:`read_store`; :func:`wait_for` polls until a state is reached), the audio baresip
recorded, and a packet capture on the loopback interface (:class:`Capture`, ``dumpcap``
writing classic pcap, read back by :func:`read_pcap` without tshark's dissectors).
:func:`write_rtp_pcap` makes the RTP stream a SIPp UAS replays with ``play_pcap_audio``;
:func:`first_request` and :func:`answer_time` find SIP messages in a capture; the audio helpers
(:func:`tone_ratio`, :func:`active_frames`) judge what was heard with a Goertzel filter per 20
ms frame.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from interop.baresip import Baresip, BaresipError
from interop.kamailio import SCENARIOS as KAMAILIO_SCENARIOS
from interop.kamailio import Kamailio
from interop.peers import LOOPBACK, SCENARIOS, Node, Sipp, free_port, spawn
from media import g711
from media.tools import write_audio
from softswitch.store import Store
from softswitch.store.models import Account, AccountKind, Cdr, Language, Location, Rate

TRIGGER = "815012345678"
CUSTOMER = "815011110000"
DESTINATION = "441234567890"
RATE = 8000
FRAME = 160  # samples in 20 ms

T = TypeVar("T")

# --- the store and the node's configuration --------------------------------------------------


def provision(
    db_url: str,
    accounts: Iterable[tuple[str, str]] = ((TRIGGER, CUSTOMER),),
    *,
    language: Language = Language.EN,
    kind: AccountKind = AccountKind.STANDARD,
    security_code: str | None = None,
    hotline_destination: str | None = None,
) -> int:
    """Create one account per ``(trigger number, location number)`` and the UK rate.

    Accounts are named ``Alice`` (the first) and ``customer<i>`` after it; all get ``kind``,
    ``security_code`` and ``hotline_destination``. Returns how many accounts were created.
    """

    async def go() -> int:
        store = await Store.open(db_url)
        count = 0
        try:
            for i, (trigger, location) in enumerate(accounts):
                await store.accounts.add(
                    "Alice" if i == 0 else f"customer{i}",
                    kind=kind,
                    language=language,
                    triggers=[trigger],
                    location=Location(location),
                    security_code=security_code,
                    credit_limit=100_000,
                    hotline_destination=hotline_destination,
                )
                count += 1
            await store.rates.set(Rate("44", "United Kingdom", 20, 6, 30))
        finally:
            await store.close()
        return count

    return asyncio.run(go())


def read_store(
    db_url: str,
    read: Callable[[Store], Awaitable[T]],
    *,
    migrate: bool = True,
    create: bool = True,
) -> T:
    """Open the store at ``db_url``, ``await read(store)``, close it: the test's own look.

    ``migrate=False, create=False`` reads a store some node made without touching it."""

    async def go() -> T:
        async with await Store.open(db_url, migrate=migrate, create=create) as store:
            return await read(store)

    return asyncio.run(go())


def wait_for(
    what: str,
    poll: Callable[[], T],
    ready: Callable[[T], bool],
    timeout: float,
    interval: float = 0.25,
) -> T:
    """Call ``poll`` every ``interval`` seconds until ``ready`` says yes to what it returned;
    AssertionError naming ``what`` with the last value after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        state = poll()
        if ready(state):
            return state
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout} s:\n{state}")
        time.sleep(interval)


def account(db_url: str, account_id: int = 1) -> Account:
    """The account as the store has it now."""
    return read_store(db_url, lambda store: store.accounts.get(account_id))


async def _all_cdrs(store: Store) -> list[Cdr]:
    # stream(), not list(): list() stops at 1,000 rows, and a benchmark writes more.
    return [cdr async for cdr in store.cdrs.stream()]


def cdrs(db_url: str) -> list[Cdr]:
    """Every CDR in the store."""
    return read_store(db_url, _all_cdrs)


def node_id(node: Node) -> str:
    """The node's id in the store (``host:pid:token``, new at every start), from its log."""
    found = re.search(r"callback service ready \(node (\S+),", node.log())
    assert found is not None, node.log()[-4000:]
    return found.group(1)


def rtp_range(size: int = 200) -> tuple[int, int]:
    """A random even-based RTP port range, so parallel tests and captures rarely overlap."""
    low = random.randrange(20000, 29000 - size) & ~1
    return low, low + size - 1


def switch_config(
    port: int,
    carrier: str,
    db_url: str,
    *,
    rtp_ports: tuple[int, int] = (30000, 30999),
    log_level: str = "DEBUG",
    ip_auth: bool = False,
    outbound_per_minute: int | None = None,
    keepalive_interval: float = 0,
    sip_options: str = "",
) -> str:
    """The node's TOML: SIP on ``port``, the trunk at ``carrier`` (registering with digest
    unless ``ip_auth``), bare E.164 numbers to the trunk, RTP on loopback in ``rtp_ports``;
    ``outbound_per_minute``: the cap on call attempts, when not the default (benchmarks: 0);
    ``keepalive_interval``: the trunk's OPTIONS keep-alive (0: off); ``sip_options``: more
    ``[sip]`` lines (``t1 = 0.1``, ``allow_from = [...]``)."""
    if ip_auth:
        trunk = f'proxy = "{carrier}"\nip_auth = true'
    else:
        trunk = (
            f'registrar = "sip:carrier.test"\nproxy = "{carrier}"\n'
            'username = "switch"\npassword = "secret"\nrealm = "carrier.test"\nexpires = 300'
        )
    if sip_options:
        sip_options += "\n"
    return f"""
[sip]
listen = "127.0.0.1:{port}"
{sip_options}
[database]
url = "{db_url}"

[trunk]
{trunk}
keepalive_interval = {keepalive_interval:g}
caller_id = "81300000000"
international_prefix = ""     # this carrier routes bare E.164 digits

[media]
host = "127.0.0.1"
rtp_ports = [{rtp_ports[0]}, {rtp_ports[1]}]

[log]
level = "{log_level}"
""" + (
        ""
        if outbound_per_minute is None
        else f"\n[limits]\noutbound_per_minute = {outbound_per_minute}\n"
    )


# --- the trigger call ---------------------------------------------------------------------------


def ring_trigger(sipp: Callable[..., Sipp], carrier: str, number: str = TRIGGER) -> None:
    """Ring ``number`` through the proxy ``carrier`` and hang up (the CANCEL's 200 and the 487
    may cross there); raise if SIPp saw a failure."""
    result = sipp("invite_cancel_via_proxy.xml", remote=carrier, service=number).run()
    assert result.returncode == 0, result.describe()


def register_at_carrier(
    sipp: Callable[..., Sipp], carrier: str, number: str, contact_port: int, timeout_s: float = 15
) -> None:
    """Register ``number`` (password "phone") at the carrier with its Contact on
    ``contact_port``, where a SIPp UAS listens: the carrier then routes ``number`` to it."""
    registered = sipp(
        str(KAMAILIO_SCENARIOS / "register_auth.xml"),
        remote=carrier,
        service=number,
        timeout_s=timeout_s,
        extra=("-au", number, "-ap", "phone", "-key", "contact_port", str(contact_port)),
    ).run()
    assert registered.returncode == 0, registered.describe()


# --- the rig: carrier, phone, destination, node ------------------------------------------------


@dataclass
class CallbackRig:
    """Everything a whole callback call runs against (stopped by the fixtures that made it)."""

    db_url: str
    carrier: Kamailio
    phone: Baresip
    destination: Sipp
    node: Node
    rtp_ports: tuple[int, int]

    def node_log(self) -> str:
        """The tail of the node's log, for assertion messages."""
        return self.node.log()[-4000:]

    def release(self) -> None:
        """The customer releases the bridged call with ``**``: the phone's call closes, the
        destination UAS ends its scenario without error and the node logs the call finished."""
        self.phone.send_dtmf("**")
        self.phone.wait_for_call_closed(10)
        result = self.destination.wait(20)
        assert result.returncode == 0, result.describe()
        assert self.node.wait_for_log("finished", timeout=10), self.node_log()


@dataclass(frozen=True)
class ToneDestination:
    """A destination UAS (``uas_destination_audio.xml``) that answers and plays a tone with
    SIPp's play_pcap_audio (which needs root), from ``media_port``."""

    scenario: str
    media_port: int

    @property
    def extra(self) -> tuple[str, ...]:
        """Its SIPp options (``destination_extra`` of :func:`start_callback_rig`)."""
        return ("-mp", str(self.media_port))


def tone_destination(workdir: Path, freq: float, seconds: float = 30.0) -> ToneDestination:
    """Write the RTP the destination plays (``freq`` Hz for ``seconds``) and its scenario
    into ``workdir``, where SIPp looks for ``destination_audio.pcap``."""
    write_rtp_pcap(workdir / "destination_audio.pcap", tone(freq, seconds))
    scenario = shutil.copy(SCENARIOS / "uas_destination_audio.xml", workdir)
    return ToneDestination(str(scenario), free_port())


def phone_tone_file(workdir: Path, freq: float, seconds: float = 40.0) -> Path:
    """What baresip's microphone sends (``audio_file``): ``freq`` Hz for ``seconds``."""
    speech = workdir / "phone_tone.wav"
    write_audio(speech, tone(freq, seconds))
    return speech


def start_callback_rig(
    tmp_path: Path,
    softswitch_bin: str,
    start_kamailio: Callable[..., Kamailio],
    start_baresip: Callable[..., Baresip],
    sipp: Callable[..., Sipp],
    *,
    destination_scenario: str = str(KAMAILIO_SCENARIOS / "uas_answer.xml"),
    destination_port: int | None = None,
    destination_extra: Sequence[str] = (),
    audio_file: Path | None = None,
    rtp_ports: tuple[int, int] | None = None,
    language: Language = Language.EN,
    extra_config: str = "",
    keepalive_interval: float = 0,
    sip_options: str = "",
    kind: AccountKind = AccountKind.STANDARD,
    security_code: str | None = None,
    hotline_destination: str | None = None,
    phone_auto_answer: bool = True,
) -> CallbackRig:
    """Provision the store, start the carrier, the destination UAS, the phone and the node,
    and wait until the node has registered to the carrier. The caller stops the node.

    ``destination_scenario``: the destination UAS (default: one that answers and waits for
    the BYE); ``extra_config``: TOML appended to the node's configuration (``[web]``,
    ``[mail]`` ...); ``keepalive_interval``, ``sip_options``: as :func:`switch_config`;
    ``kind``, ``security_code``, ``hotline_destination``: the account's (:func:`provision`);
    ``phone_auto_answer`` False: the test answers the callback (``phone.accept()``)."""
    db_url = f"sqlite:///{tmp_path / 'switch.sqlite3'}"
    provision(
        db_url,
        language=language,
        kind=kind,
        security_code=security_code,
        hotline_destination=hotline_destination,
    )
    dest_port = destination_port or free_port()
    carrier = start_kamailio(
        trigger_number=TRIGGER, customer_number=CUSTOMER, pstn_target=f"127.0.0.1:{dest_port}"
    )
    destination = sipp(
        destination_scenario, local_port=dest_port, timeout_s=60, extra=tuple(destination_extra)
    ).start()
    phone = _start_phone(start_baresip, carrier.address, audio_file, phone_auto_answer)
    ports = rtp_ports or rtp_range()
    port = free_port()
    config = switch_config(
        port,
        carrier.address,
        db_url,
        rtp_ports=ports,
        keepalive_interval=keepalive_interval,
        sip_options=sip_options,
    )
    node = start_registered_node(softswitch_bin, tmp_path, port, config + extra_config)
    return CallbackRig(db_url, carrier, phone, destination, node, ports)


def _start_phone(
    start_baresip: Callable[..., Baresip],
    carrier: str,
    audio_file: Path | None,
    auto_answer: bool = True,
) -> Baresip:
    """The customer's phone, registered."""
    return registered_phone(
        lambda: start_baresip(
            carrier=carrier,
            number=CUSTOMER,
            register_password="phone",
            audio_file=audio_file,
            auto_answer=auto_answer,
        )
    )


def registered_phone(start: Callable[[], Baresip], phone: Baresip | None = None) -> Baresip:
    """Wait until ``phone`` (or one ``start()`` starts) has registered. free_port() can race
    with other processes on this machine: when baresip lost a port to one ("Address already
    in use"), stop it and ``start()`` it again (new ports), three starts in all."""
    for attempt in range(3):
        if phone is None:
            phone = start()
        try:
            phone.wait_for_registered(10)
            return phone
        except BaresipError:
            if attempt == 2 or "Address already in use" not in phone.log():
                raise
            phone.stop()
            phone = None
    raise AssertionError("unreachable")


def start_registered_node(
    binary: str, workdir: Path, port: int, config: str, timeout: float = 10.0
) -> Node:
    """A ``softswitch serve`` on ``port`` that has registered to its carrier within ``timeout``
    seconds; stopped and AssertionError with its log otherwise."""
    node = Node(binary, workdir, port, config).start()
    if not node.wait_for_log("registered to", timeout=timeout):
        node.stop()
        raise AssertionError(f"node did not register to the carrier:\n{node.log()[-4000:]}")
    return node


# --- packet capture on loopback ----------------------------------------------------------------


class CaptureError(Exception):
    """dumpcap is missing, not allowed to capture, or did not start."""


@dataclass(frozen=True, slots=True)
class UdpPacket:
    """One captured IPv4 UDP datagram."""

    time: float
    src: tuple[str, int]
    dst: tuple[str, int]
    payload: bytes


@dataclass
class Capture:
    """``dumpcap`` on the loopback interface with a BPF ``bpf`` filter, into a classic pcap.

    Root (or dumpcap's capabilities) is needed: :meth:`start` raises :class:`CaptureError`
    when capturing is not possible, so a test can skip or fail with the reason.
    """

    workdir: Path
    bpf: str
    name: str = "capture"
    binary: str = "dumpcap"
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def path(self) -> Path:
        return self.workdir / f"{self.name}.pcap"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def start(self, ready_timeout: float = 10.0) -> Capture:
        """Start capturing; return once dumpcap says it is capturing."""
        cmd = [self.binary, "-q", "-i", "lo", "-f", self.bpf, "-P", "-w", str(self.path)]
        # A large kernel buffer: a 200 calls/s burst must not be dropped by the capture itself.
        cmd += ["-B", "64"]
        try:
            self.proc = spawn(cmd, self.workdir, self.log_path)
        except OSError as exc:
            raise CaptureError(f"cannot run {self.binary}: {exc}") from None
        deadline = time.monotonic() + ready_timeout
        while "Capturing on" not in self._log():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise CaptureError(f"{self.binary} did not start capturing: {self._log()[-800:]}")
            time.sleep(0.02)
        return self

    def _log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> list[UdpPacket]:
        """Stop dumpcap (SIGINT lets it flush) and return what it captured."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return read_pcap(self.path) if self.path.exists() else []


_PCAP_HEADER = struct.Struct("<IHHiIII")
_PCAP_RECORD = struct.Struct("<IIII")
_LINK_OFFSETS = {1: 14, 113: 16, 276: 20, 0: 4}  # Ethernet, Linux SLL, SLL2, BSD loopback


def read_pcap(path: Path) -> list[UdpPacket]:
    """The IPv4 UDP datagrams of a classic (little-endian, microsecond) pcap file."""
    data = path.read_bytes()
    if len(data) < _PCAP_HEADER.size:
        return []
    magic, _, _, _, _, _, linktype = _PCAP_HEADER.unpack_from(data)
    if magic != 0xA1B2C3D4:
        raise ValueError(f"{path}: not a little-endian microsecond pcap (magic {magic:#x})")
    link = _LINK_OFFSETS.get(linktype)
    if link is None:
        raise ValueError(f"{path}: link type {linktype} not supported")
    out: list[UdpPacket] = []
    pos = _PCAP_HEADER.size
    while pos + _PCAP_RECORD.size <= len(data):
        sec, usec, caplen, _ = _PCAP_RECORD.unpack_from(data, pos)
        pos += _PCAP_RECORD.size
        frame = data[pos : pos + caplen]
        pos += caplen
        ip = frame[link:]
        if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        ihl = (ip[0] & 0x0F) * 4
        sport, dport, length = struct.unpack_from("!HHH", ip, ihl)
        src = ".".join(str(b) for b in ip[12:16])
        dst = ".".join(str(b) for b in ip[16:20])
        payload = ip[ihl + 8 : ihl + length]
        out.append(UdpPacket(sec + usec / 1e6, (src, sport), (dst, dport), payload))
    return out


def write_rtp_pcap(
    path: Path,
    pcm: NDArray[np.int16],
    *,
    src_port: int = 6000,
    dst_port: int = 7000,
    ssrc: int = 0x5EED0001,
) -> Path:
    """Write ``pcm`` (8 kHz) as a PCMU RTP stream, one 20 ms packet per frame, 20 ms apart,
    in an Ethernet pcap that SIPp's ``play_pcap_audio`` replays (it rewrites the addresses
    and ports, keeping the RTP header and payload as they are)."""
    frames = len(pcm) // FRAME
    records = [_PCAP_HEADER.pack(0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for i in range(frames):
        payload = g711.ulaw_encode(pcm[i * FRAME : (i + 1) * FRAME])
        rtp = struct.pack("!BBHII", 0x80, 0x80 if i == 0 else 0, i & 0xFFFF, i * FRAME, ssrc)
        udp = struct.pack("!HHHH", src_port, dst_port, 8 + len(rtp) + len(payload), 0)
        ip_len = 20 + len(udp) + len(rtp) + len(payload)
        ip = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, ip_len, i & 0xFFFF, 0, 64, 17, 0, bytes(4), bytes(4)
        )
        ip = ip[:10] + struct.pack("!H", _ip_checksum(ip)) + ip[12:]
        ether = bytes(12) + b"\x08\x00"
        frame = ether + ip + udp + rtp + payload
        usec = i * 20_000
        records.append(
            _PCAP_RECORD.pack(usec // 1_000_000, usec % 1_000_000, len(frame), len(frame))
        )
        records.append(frame)
    path.write_bytes(b"".join(records))
    return path


def _ip_checksum(header: bytes) -> int:
    total: int = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def rtp_payloads(packets: Iterable[UdpPacket], *, pt: int = 0) -> list[bytes]:
    """The payloads of the RTP packets with payload type ``pt``, in capture order."""
    out = []
    for p in packets:
        if len(p.payload) > 12 and p.payload[0] >> 6 == 2 and p.payload[1] & 0x7F == pt:
            out.append(p.payload[12:])
    return out


# --- SIP messages in a capture ------------------------------------------------------------------


def sip_header(payload: bytes, name: str) -> str:
    """The value of header ``name`` in a captured SIP message (full form only), or ""."""
    for line in payload.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name.lower().encode():
            return value.strip().decode()
    return ""


def first_request(packets: Iterable[UdpPacket], method: str, user: str | None = None) -> UdpPacket:
    """The first ``method`` request in ``packets`` (to Request-URI user ``user`` if given)."""
    start = f"{method} sip:{user}@" if user is not None else f"{method} sip:"
    for p in packets:
        if p.payload.startswith(start.encode()):
            return p
    raise AssertionError(f"no {start}... captured")


def answer_time(packets: Iterable[UdpPacket], call_id: str) -> float:
    """When the 200 OK to the INVITE of ``call_id`` was captured."""
    for p in packets:
        if (
            p.payload.startswith(b"SIP/2.0 200 ")
            and sip_header(p.payload, "Call-ID") == call_id
            and sip_header(p.payload, "CSeq").endswith(" INVITE")
        ):
            return p.time
    raise AssertionError(f"no 200 OK to the INVITE of {call_id} captured")


# --- judging audio -----------------------------------------------------------------------------


def tone(freq: float, seconds: float, level_dbfs: float = -12.0) -> NDArray[np.int16]:
    """A sine of ``freq`` Hz, ``seconds`` long, at 8 kHz."""
    t = np.arange(int(RATE * seconds)) / RATE
    return np.rint(32767 * 10 ** (level_dbfs / 20) * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def frames_of(pcm: NDArray[Any]) -> NDArray[np.float64]:
    """``pcm`` as (n, 160) float frames (the tail that does not fill a frame is dropped)."""
    n = len(pcm) // FRAME
    return np.asarray(pcm[: n * FRAME], dtype=np.float64).reshape(n, FRAME)


def frame_dbfs(pcm: NDArray[Any]) -> NDArray[np.float64]:
    """The RMS level of every 20 ms frame, dBFS (silence is about -100)."""
    rms = np.sqrt(np.mean(frames_of(pcm) ** 2, axis=1)) / 32768.0
    return np.asarray(20 * np.log10(np.maximum(rms, 1e-5)), dtype=np.float64)


def active_frames(pcm: NDArray[Any], threshold_dbfs: float = -45.0) -> NDArray[np.bool_]:
    """Which 20 ms frames are louder than ``threshold_dbfs``."""
    return frame_dbfs(pcm) > threshold_dbfs


def tone_ratio(pcm: NDArray[Any], freq: float) -> NDArray[np.float64]:
    """Per 20 ms frame, the share of the frame's energy at ``freq`` (Goertzel, 0..1).

    A clean sine at ``freq`` gives about 1; speech, silence or another tone give near 0.
    """
    frames = frames_of(pcm)
    if not len(frames):
        return np.zeros(0)
    n = np.arange(FRAME)
    ref = np.exp(-2j * np.pi * freq * n / RATE)
    power = np.abs(frames @ ref) ** 2 * 2 / FRAME
    energy = np.sum(frames**2, axis=1)
    return np.asarray(np.where(energy > 0, power / np.maximum(energy, 1e-9), 0.0))


def spans(mask: NDArray[np.bool_], max_gap: int = 0) -> list[tuple[int, int]]:
    """``(first, last)`` frame indices of the runs of True in ``mask``, joining runs separated
    by at most ``max_gap`` False frames (pauses between words)."""
    out: list[tuple[int, int]] = []
    for i in np.flatnonzero(mask):
        idx = int(i)
        if out and idx - out[-1][1] - 1 <= max_gap:
            out[-1] = (out[-1][0], idx)
        else:
            out.append((idx, idx))
    return out


def loopback_only(packets: Iterable[UdpPacket]) -> bool:
    """True if every packet stayed on 127.0.0.1 (the suite never sends anywhere else)."""
    return all(p.src[0] == LOOPBACK and p.dst[0] == LOOPBACK for p in packets)
