"""Fixtures for the interop suite: the node and SIPp as real processes on 127.0.0.1.

A missing peer (sipp, or the node's ``softswitch serve``) skips the test on a workstation and
fails it when the ``CI`` environment variable is set, so CI never passes by skipping. Every
process a test starts is stopped at teardown; the node must exit 0 on SIGTERM.
``$SOFTSWITCH_BIN`` replaces the node's command (to run the suite against another build).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator, Sequence
from functools import cache, partial
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest

from interop.peers import (
    Node,
    PeerMissing,
    Sipp,
    find_program,
    find_softswitch,
    free_port,
    node_config,
)


def missing_peer(reason: str) -> None:
    """Skip the test, or fail it under CI (a CI run must never pass by skipping)."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so a missing peer is a failure)")
    pytest.skip(reason)


@cache
def _softswitch_serve_works(binary: str) -> str | None:
    """None if ``softswitch serve --help`` runs, else why not."""
    try:
        done = subprocess.run(
            [binary, "serve", "--help"], capture_output=True, timeout=30, check=False
        )
    except OSError as exc:
        return f"{binary} cannot run: {exc}"
    if done.returncode != 0:
        return f"`{binary} serve --help` exited {done.returncode}: {done.stderr[-500:]!r}"
    return None


@pytest.fixture(scope="session")
def sipp_bin() -> str:
    """The SIPp executable (package sip-tester)."""
    try:
        return find_program("sipp")
    except PeerMissing as exc:
        missing_peer(f"{exc} (Debian package sip-tester)")
        raise


@pytest.fixture(scope="session")
def softswitch_bin() -> str:
    """The node's executable, checked with ``serve --help``."""
    try:
        binary = find_softswitch()
    except PeerMissing as exc:
        missing_peer(f"{exc}: install the project (make setup)")
        raise
    problem = _softswitch_serve_works(binary)
    if problem:
        missing_peer(problem)
    return binary


class Peer(Protocol):
    """A peer process a fixture started: stopped at teardown, its log quoted if it failed."""

    def stop(self) -> int: ...

    def log(self) -> str: ...


P = TypeVar("P", bound=Peer)


def stop_each(peers: Sequence[P], name: Callable[[P], str]) -> None:
    """Teardown: stop every peer (SIGTERM); each must exit 0, else one assertion lists all
    that did not, with the end of their logs."""
    failures = []
    for peer in peers:
        code = peer.stop()
        if code != 0:
            failures.append(f"{name(peer)} exited {code}:\n{peer.log()[-2000:]}")
    assert not failures, "\n".join(failures)


NodeFactory = Callable[..., Node]
SippFactory = Callable[..., Sipp]


@pytest.fixture
def start_node(tmp_path: Path, softswitch_bin: str) -> Iterator[NodeFactory]:
    """Start nodes: ``start_node(registrar_port=..., triggers=...)`` -> a running :class:`Node`.

    Keyword arguments go to :func:`interop.peers.node_config`. At teardown each node gets
    SIGTERM and must exit 0.
    """
    nodes: list[Node] = []

    def factory(**config: Any) -> Node:
        port = free_port()
        node = Node(softswitch_bin, tmp_path, port, node_config(port, **config)).start()
        # Appended only once running: a node that failed to start was killed by start().
        nodes.append(node)
        return node

    yield factory
    stop_each(nodes, lambda node: f"node on port {node.port}")


@pytest.fixture
def node(start_node: NodeFactory) -> Node:
    """A node with the default trigger number and no trunk."""
    return start_node()


@pytest.fixture(scope="module")
def shared_node(tmp_path_factory: pytest.TempPathFactory, softswitch_bin: str) -> Iterator[Node]:
    """One node for a whole module (tests that must leave it serving); exits 0 at the end."""
    port = free_port()
    workdir = tmp_path_factory.mktemp("shared_node")
    shared = Node(softswitch_bin, workdir, port, node_config(port)).start()
    yield shared
    code = shared.stop()
    assert code == 0, f"node exited {code}:\n{shared.log()[-2000:]}"


@pytest.fixture
def sipp(tmp_path: Path, sipp_bin: str) -> Iterator[SippFactory]:
    """Make SIPp runs: ``sipp("options.xml", remote=node.address, ...)`` -> :class:`Sipp`.

    Keyword arguments are :class:`interop.peers.Sipp` fields; ``local_port`` defaults to a free
    port. Call ``.run()`` (UAC) or ``.start()`` then ``.wait()`` (UAS). Leftovers are killed.
    """
    runs: list[Sipp] = []

    def factory(scenario: str, **kwargs: Any) -> Sipp:
        kwargs.setdefault("local_port", free_port())
        run = Sipp(scenario, workdir=tmp_path, binary=sipp_bin, **kwargs)
        runs.append(run)
        return run

    yield factory
    for run in runs:
        run.kill()


# --- Kamailio (the carrier) and baresip (the customer's phone) -------------------------------
# Imported here, not at the top: this block is appended to a file another engineer owns.
from interop.baresip import MODULE_PATH, Baresip  # noqa: E402
from interop.kamailio import Kamailio  # noqa: E402

#: The baresip modules the driver loads (all in Debian's baresip-core).
BARESIP_MODULES = ("g711", "aufile", "aubridge", "sndfile", "account", "menu", "ctrl_tcp")

KamailioFactory = Callable[..., Kamailio]
BaresipFactory = Callable[..., Baresip]


@pytest.fixture(scope="session")
def kamailio_bin() -> str:
    """The Kamailio executable (Debian package kamailio; in /usr/sbin, off a user's PATH)."""
    try:
        return find_program("kamailio")
    except PeerMissing as exc:
        if Path("/usr/sbin/kamailio").exists():
            return "/usr/sbin/kamailio"
        missing_peer(f"{exc} (Debian package kamailio)")
        raise


@pytest.fixture(scope="session")
def baresip_bin() -> str:
    """The baresip executable, with the modules the driver needs."""
    try:
        binary = find_program("baresip")
    except PeerMissing as exc:
        missing_peer(f"{exc} (Debian package baresip)")
        raise
    absent = [m for m in BARESIP_MODULES if not Path(MODULE_PATH, f"{m}.so").exists()]
    if absent:
        missing_peer(f"baresip modules missing from {MODULE_PATH}: {absent}")
    return binary


@pytest.fixture
def start_kamailio(tmp_path: Path, kamailio_bin: str) -> Iterator[KamailioFactory]:
    """Start carriers: ``start_kamailio(customer_target=phone.sip_address, ...)`` -> running.

    Keyword arguments are :class:`interop.kamailio.Kamailio` fields (the port defaults to a
    free one). At teardown each gets SIGTERM and must exit 0.
    """
    started: list[Kamailio] = []

    def factory(**kwargs: Any) -> Kamailio:
        carrier = Kamailio(kamailio_bin, tmp_path, **kwargs)
        started.append(carrier)
        return carrier.start()

    yield factory
    stop_each(started, lambda carrier: f"kamailio on {carrier.port}")


@pytest.fixture
def start_baresip(tmp_path: Path, baresip_bin: str) -> Iterator[BaresipFactory]:
    """Start phones: ``start_baresip(carrier=kamailio.address, ...)`` -> a running Baresip.

    Keyword arguments are :class:`interop.baresip.Baresip` fields. At teardown each gets
    SIGTERM and must exit 0.
    """
    started: list[Baresip] = []

    def factory(**kwargs: Any) -> Baresip:
        phone = Baresip(baresip_bin, tmp_path, **kwargs)
        started.append(phone)
        return phone.start()

    yield factory
    stop_each(started, lambda phone: f"baresip on {phone.sip_port}")


# --- PostgreSQL (a store several nodes share, or one a test stops and starts) ----------------
from interop.faults import FaultSetupError, PgCluster, pg_bindir  # noqa: E402


@pytest.fixture
def pg_cluster() -> Iterator[PgCluster]:
    """A PostgreSQL server of the test's own on a free port (``createdb`` gives a URL); the
    test may stop and start it. Removed at teardown, whatever happened."""
    bindir = pg_bindir()
    if bindir is None:
        missing_peer("PostgreSQL server binaries (initdb, pg_ctl) not installed")
    assert bindir is not None
    cluster = PgCluster(bindir, free_port())
    try:
        try:
            cluster.init().start()
        except FaultSetupError as exc:
            missing_peer(f"cannot run PostgreSQL here: {exc}")
        yield cluster
    finally:
        cluster.destroy()


# --- the callback rig and packet capture ------------------------------------------------------
from interop.callback_setup import (  # noqa: E402
    CallbackRig,
    Capture,
    CaptureError,
    start_callback_rig,
)

RigFactory = Callable[..., CallbackRig]


@pytest.fixture
def start_rig(
    tmp_path: Path,
    softswitch_bin: str,
    start_kamailio: KamailioFactory,
    start_baresip: BaresipFactory,
    sipp: SippFactory,
) -> RigFactory:
    """Start whole-callback-call rigs: ``start_rig(security_code=..., ...)`` -> a running
    :class:`interop.callback_setup.CallbackRig` (keyword arguments of
    :func:`interop.callback_setup.start_callback_rig`). The test stops the node; the
    carrier, phone and SIPp are stopped by their own fixtures."""
    return partial(
        start_callback_rig, tmp_path, softswitch_bin, start_kamailio, start_baresip, sipp
    )


def start_capture(capture: Capture) -> None:
    """Start ``capture``; a machine where dumpcap cannot capture on lo is a missing peer."""
    try:
        capture.start()
    except CaptureError as exc:
        missing_peer(f"cannot capture on lo: {exc}")
