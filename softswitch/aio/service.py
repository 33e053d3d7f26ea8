"""The callback service's I/O: store tasks and media sockets for the node's call controller.

The controller (:mod:`softswitch.node.calls`) decides everything; this shell only carries out
what :meth:`Node.next_event` returns and reports back, in the manner of aioquic's
``asyncio/protocol.py``:

* a store request runs as a task against the repositories (CDRs, queue rows and settlements
  in group commits: whatever queued while one batch commits goes in the next), and its
  answer goes to ``node.store_done`` (or ``node.store_failed`` with the error);
* a media command is applied to the media engine (:class:`media.aio.MediaShell`) in this
  process or, with ``[media] workers``, in the media worker that carries the call
  (:mod:`softswitch.aio.mediapool`), and the engine's events go to ``node.media_event``;
* after each answer the server's ``transmit()`` sends what the node queued and re-arms its
  one timer. There are no timers here.

Start-up refuses to run without every prompt the call flow can play; shutdown waits (bounded)
for the store writes of the calls the node hung up, so their CDRs are never lost.

A database that cannot be reached (``DatabaseUnavailable``: the connection was refused, so
nothing of the request ran) does not lose the writes that must last: CDRs, queue rows and
their settlements, credit commits and releases, and forgetting a finished call are tried
again for up to ``STORE_RETRY_S`` (a PostgreSQL restart), one WARNING per write kind and
outage; only then is the write reported failed (a CDR is then logged in full). Reads and
heartbeats are not retried: the controller degrades or asks again on its own. A request cut
off mid-way by the server going away is reported failed at once, in one line like the others
(whether its COMMIT landed is unknown, so it is not repeated).

The shell also writes the node down in the store's ``nodes`` table (issue 12): its id, SIP
address and version when it starts, a heartbeat every ``LIVE_HEARTBEAT`` seconds, and the
time it stopped cleanly. Other nodes on the store read the heartbeats to take over the
callbacks a dead node had claimed (``CallbackQueue.claim_due``, ``dead_before``) and
``softswitch status`` shows them as the cluster.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from sqlalchemy.exc import DBAPIError

from media import engine as me
from softswitch import __version__, prompts
from softswitch.aio.mediapool import LocalMedia, MediaBackend, WorkerPool, auto_workers
from softswitch.config import Config
from softswitch.node import commands as cmd
from softswitch.node.calls import recordings_dir
from softswitch.node.node import Node
from softswitch.service.callbacks import LIVE_HEARTBEAT, STALE_AFTER
from softswitch.service.callflow import PROMPTS_PLAYED
from softswitch.service.rating import DEFAULT_CAP_SECONDS
from softswitch.store.db import Database, DatabaseUnavailable
from softswitch.store.models import (
    Cdr,
    CodeCheck,
    LiveCall,
    Location,
    NodeInfo,
    PendingCallback,
)
from softswitch.store.repos import (
    AccountRepo,
    CallbackQueue,
    CdrRepo,
    CreditRepo,
    InvalidInput,
    LiveCallRepo,
    NodeRepo,
    RateRepo,
    SpeedDialRepo,
)

if TYPE_CHECKING:
    from softswitch.web.metrics import Metrics

log = logging.getLogger("softswitch.service")
T = TypeVar("T")
R = TypeVar("R")

#: How long a stopping node waits for the store writes of the calls it hung up.
STOP_GRACE = 10.0
#: A credit reservation outlives the longest call credit can buy (then an hour).
RESERVATION_TTL = DEFAULT_CAP_SECONDS + 3600.0
#: How long start-up waits for the accounts (trigger numbers) to load.
READY_TIMEOUT = 30.0
#: Rows of nodes silent for longer than this are dropped from ``nodes`` at start-up.
NODE_ROW_KEPT = 86400.0
#: How long a write that must last is retried while the database cannot be reached, and
#: the first and the longest pause between tries.
STORE_RETRY_S = 30.0
STORE_RETRY_FIRST = 0.25
STORE_RETRY_MAX = 2.0
#: The writes that are retried (see the module docstring).
DURABLE_WRITES = (
    cmd.WriteCdr,
    cmd.EnqueueCallback,
    cmd.SettleCallback,
    cmd.CommitCredit,
    cmd.ReleaseCredit,
    cmd.ForgetCalls,
)


class GroupCommit(Generic[T, R]):
    """Run store writes in batches: whatever queued while one batch commits goes in the next.

    Each commit costs milliseconds whatever it holds, so a busy node (hundreds of triggers or
    CDRs per second) writes them together; each caller still waits until its item is durable.
    A batch the store refuses for what is in it (not :class:`DatabaseUnavailable`: then every
    item would fail alike) is tried again one item at a time, so one bad item (a CDR whose
    number the database cannot take) fails alone, not the callers batched with it.
    """

    def __init__(self, run: Callable[[list[T]], Awaitable[list[R]]]) -> None:
        self._run = run
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._task: asyncio.Future[None] | None = None

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._task is None:
            # Keep a reference: the loop holds tasks only weakly.
            self._task = asyncio.ensure_future(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    results = await self._run([item for item, _ in batch])
                except DatabaseUnavailable as exc:
                    self._fail(batch, exc)
                    continue
                except Exception as exc:
                    if len(batch) == 1:
                        self._fail(batch, exc)
                        continue
                    for one in batch:
                        await self._alone(one)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._task = None

    async def _alone(self, entry: tuple[T, asyncio.Future[R]]) -> None:
        item, future = entry
        try:
            [result] = await self._run([item])
        except Exception as exc:
            self._fail([entry], exc)
        else:
            if not future.done():
                future.set_result(result)

    @staticmethod
    def _fail(batch: list[tuple[T, asyncio.Future[R]]], exc: Exception) -> None:
        for _, future in batch:
            if not future.done():
                future.set_exception(exc)


class ServiceShell:
    """Carries out the node's store requests and media commands; see the module docstring."""

    def __init__(
        self,
        config: Config,
        node: Node,
        db: Database,
        *,
        transmit: Callable[[], None],
        address: str = "",
    ) -> None:
        self.config = config
        self.node = node
        self.db = db
        self.transmit = transmit
        self.loop = asyncio.get_running_loop()
        self.accounts = AccountRepo(
            db,
            max_code_failures=config.security_code_failures,
            lockout_s=config.security_lockout,
        )
        self.rates = RateRepo(db)
        self.credit = CreditRepo(db)
        self.cdrs = CdrRepo(db)
        self.speed_dials = SpeedDialRepo(db)
        self.queue = CallbackQueue(db)
        self.live_calls = LiveCallRepo(db)
        self.nodes = NodeRepo(db)
        self.recordings = recordings_dir(config)
        workers = auto_workers() if config.media_workers is None else config.media_workers
        self.media: MediaBackend
        if workers == 0:
            self.media = LocalMedia(
                host=config.media_host,
                port_range=config.rtp_ports,
                on_event=self._media_event,
                recordings=self.recordings,
            )
        else:
            self.media = WorkerPool(
                workers,
                host=config.media_host,
                port_range=config.rtp_ports,
                on_event=self._media_event,
                recordings=self.recordings,
                log_level=config.log_level,
            )
        self._tasks: set[asyncio.Future[Any]] = set()
        #: Write kinds waiting for the database to come back (one WARNING each per outage).
        self._retrying: set[str] = set()
        self._ready = asyncio.Event()
        #: Told of every command, store answer and media event (``/metrics``), when set.
        self.metrics: Metrics | None = None
        node_id = node.calls.node_id if node.calls is not None else ""
        self.node_id = node_id
        #: This node as the ``nodes`` table has it (its heartbeat task writes it down).
        now = time.time()
        self.info = NodeInfo(node_id, address, __version__, now, now)
        self._heartbeat: asyncio.Task[None] | None = None
        # Descriptions and their removal go through one queue, in order, so a heartbeat
        # still waiting for its batch can never bring back a call already forgotten.
        self._tracking: GroupCommit[tuple[LiveCall, ...] | tuple[str, ...], None] = GroupCommit(
            self._track_batch
        )
        self._enqueues: GroupCommit[cmd.EnqueueCallback, tuple[PendingCallback, bool]] = (
            GroupCommit(self._enqueue_batch)
        )
        self._cdr_writes: GroupCommit[Cdr, Cdr] = GroupCommit(self.cdrs.write_many)
        self._settlements: GroupCommit[tuple[int, str, str | None], bool] = GroupCommit(
            lambda items: self.queue.settle_many(items, node_id=node_id)
        )
        self._handlers: dict[type, Callable[[Any], None]] = {
            cmd.OpenMedia: self._open,
            cmd.CloseMedia: self.media.apply,
            cmd.SetRemote: self.media.apply,
            cmd.PlayMedia: self.media.apply,
            cmd.StopMedia: self.media.apply,
            cmd.SendDigits: self.media.apply,
            cmd.BridgeMedia: self.media.apply,
            cmd.UnbridgeMedia: self.media.apply,
            cmd.ConferenceMedia: self.media.apply,
            cmd.RecordMedia: self.media.apply,
        }

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Check the prompts, migrate the store, start the media clock."""
        root = self.config.prompts_dir
        # A prompt the call flow can play but the set lacks would be silence on a customer's
        # line, found mid-call: refuse to start instead, naming every missing file.
        await asyncio.to_thread(prompts.check_prompts, root, names=PROMPTS_PLAYED, decode=True)
        await self.db.migrate()
        self.recordings.mkdir(parents=True, exist_ok=True)
        self.media.start()
        self.node.sync_clock(self.loop.time(), time.time())
        if self.node_id:
            await self.nodes.prune(time.time() - NODE_ROW_KEPT)
            await self.nodes.beat(self.info, time.time())
            self._heartbeat = asyncio.ensure_future(self._heartbeats())

    async def wait_ready(self) -> None:
        """Wait until the controller has the accounts (the trigger numbers) from the store."""
        await asyncio.wait_for(self._ready.wait(), READY_TIMEOUT)

    async def stop(self) -> None:
        """After ``node.stop()``: wait (bounded) for the hung-up calls' store writes."""
        calls = self.node.calls
        deadline = self.loop.time() + STOP_GRACE
        while calls is not None and not calls.idle and self.loop.time() < deadline:
            pending = [t for t in self._tasks if not t.done()]
            if pending:
                await asyncio.wait(pending, timeout=max(0.0, deadline - self.loop.time()))
            else:
                await asyncio.sleep(0.01)
            self.transmit()
        if calls is not None and not calls.idle:
            log.error(
                "stopped with %d calls and %d store writes unfinished",
                len(calls.sessions),
                len([t for t in self._tasks if not t.done()]),
            )
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None
            try:
                await asyncio.wait_for(self.nodes.stop(self.node_id, time.time()), STOP_GRACE)
            except Exception as exc:  # the store is gone: survivors see the heartbeat stop
                log.warning("could not mark node %s stopped in the store: %s", self.node_id, exc)

    async def _heartbeats(self) -> None:
        """Write this node's heartbeat every ``LIVE_HEARTBEAT`` seconds until stopped; a store
        that does not answer is logged once per outage (survivors will see the silence)."""
        failing = False
        while True:
            await asyncio.sleep(LIVE_HEARTBEAT)
            try:
                await self.nodes.beat(self.info, time.time())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not failing:
                    log.error("node heartbeat not written: %s", exc)
                failing = True
            else:
                if failing:
                    log.info("node heartbeat written again")
                failing = False

    # --- the node's commands ------------------------------------------------------------------

    def poll(self) -> None:
        """Carry out everything the node asked for since the last input."""
        node = self.node
        node.sync_clock(self.loop.time(), time.time())
        while (command := node.next_event()) is not None:
            if self.metrics is not None:
                self.metrics.command(command)
            handler = self._handlers.get(type(command))
            if handler is not None:
                try:
                    handler(command)
                except Exception:
                    log.exception("media command %r failed", command)
            else:
                self._spawn(self._store_task(command))  # type: ignore[arg-type]
        if not self._ready.is_set() and node.calls is not None and node.calls.ready:
            self._ready.set()

    async def _store_task(self, request: cmd.StoreRequest) -> None:
        started = self.loop.time()
        try:
            result = await self._run_retrying(request)
        except asyncio.CancelledError:
            # Stopped while waiting for the database: the controller still logs what is lost.
            self.node.store_failed(request, "the node stopped first", self.loop.time())
            raise
        except DatabaseUnavailable as exc:
            # The controller logs it (one line that says where and why); no traceback.
            self.node.store_failed(request, f"{type(exc).__name__}: {exc}", self.loop.time())
        except Exception as exc:
            if isinstance(exc, DBAPIError) and exc.connection_invalidated:
                # The server went away mid-request (a restart): one line, no traceback.
                why = (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0]
                error = f"lost the connection to {self.db.where}: {why}"
            else:
                log.error("store request %s failed: %s", type(request).__name__, exc, exc_info=exc)
                error = f"{type(exc).__name__}: {exc}"
            self.node.store_failed(request, error, self.loop.time())
        else:
            if self.metrics is not None:
                self.metrics.store_latency(request, self.loop.time() - started)
            self.node.store_done(request, result, self.loop.time())
        self.transmit()

    async def _run_retrying(self, request: cmd.StoreRequest) -> object:
        """:meth:`_run`, tried again while the database cannot be reached if it is a write
        that must last (``DatabaseUnavailable`` means the request never ran: no duplicate)."""
        kind = type(request).__name__
        deadline = self.loop.time() + STORE_RETRY_S
        pause = STORE_RETRY_FIRST
        while True:
            try:
                result = await self._run(request)
            except DatabaseUnavailable as exc:
                if not isinstance(request, DURABLE_WRITES) or self.loop.time() >= deadline:
                    raise
                if kind not in self._retrying:
                    self._retrying.add(kind)
                    log.warning("%s; %s writes are kept and tried again", exc, kind)
                await asyncio.sleep(min(pause, max(0.0, deadline - self.loop.time())))
                pause = min(pause * 2, STORE_RETRY_MAX)
                continue
            if kind in self._retrying:
                self._retrying.discard(kind)
                log.info("the database is back: %s writes go through again", kind)
            return result

    async def _run(self, request: cmd.StoreRequest) -> object:
        """One store request against the repositories; the answer its docstring promises."""
        if isinstance(request, cmd.WriteCdr):
            return await self._cdr_writes.submit(request.cdr)
        if isinstance(request, cmd.EnqueueCallback):
            if not request.claimed:
                return await self.queue.enqueue(
                    request.account_id,
                    request.trigger,
                    request.at,
                    now=request.at,
                    call_uuid=request.sid,
                )
            return await self._enqueues.submit(request)
        if isinstance(request, cmd.LoadAccounts):
            return tuple(await self.accounts.list())
        if isinstance(request, cmd.ClaimCallbacks):
            due = await self.queue.claim_due(
                request.node_id,
                request.at,
                request.lease_s,
                # A node silent this long has died: its claimed callbacks are taken over now.
                dead_before=request.at - STALE_AFTER,
            )
            return tuple([(p, await self.accounts.get(p.account_id)) for p in due])
        if isinstance(request, cmd.RenewLeases):
            return await self.queue.renew(request.node_id, request.callback_ids, request.until)
        if isinstance(request, cmd.SettleCallback):
            if request.event == "reschedule":
                return await self.queue.reschedule(
                    request.callback_id,
                    time.time() if request.due_at is None else request.due_at,
                    request.error or "",
                    node_id=request.node_id,
                )
            item = (request.callback_id, request.event, request.error)
            if request.node_id != self.node_id:
                # A dead node's claim, taken over by a recovery: not in our batches.
                [moved] = await self.queue.settle_many([item], node_id=request.node_id)
                return moved
            return await self._settlements.submit(item)
        if isinstance(request, cmd.QuoteRate):
            rate = await self.rates.lookup(request.number)
            account = await self.accounts.get(request.account_id)
            spent = 0
            if request.since is not None:
                spent = account.credit_reserved
                spent += await self.cdrs.spent_since(account.id, request.since)
            return (rate, account.available_credit, spent)
        if isinstance(request, cmd.ReserveCredit):
            # Held longer than the longest call credit can buy, so releasing expired holds
            # (a crashed node's) never takes a live call's.
            return await self.credit.reserve(
                request.account_id,
                request.amount,
                request.key,
                now=request.at,
                ttl_s=RESERVATION_TTL,
            )
        if isinstance(request, cmd.CommitCredit):
            await self.credit.commit(request.key, request.cost)
            return None
        if isinstance(request, cmd.ReleaseCredit):
            await self.credit.release(request.key)
            return None
        if isinstance(request, cmd.TrackCalls):
            await self._tracking.submit(request.calls)
            return None
        if isinstance(request, cmd.ForgetCalls):
            await self._tracking.submit(request.call_uuids)
            return None
        if isinstance(request, cmd.TakeStaleCalls):
            return await self.live_calls.take_stale(request.node_id, request.alive_before)
        if isinstance(request, cmd.ReleaseExpiredCredit):
            return await self.credit.release_expired(request.at)
        if isinstance(request, cmd.LookUpSpeedDial):
            found = await self.speed_dials.get(request.account_id, request.code)
            return None if found is None else found.number
        if isinstance(request, cmd.CheckSecurityCode):
            check = await self.accounts.verify_security_code(
                request.account_id, request.code, request.at
            )
            # An account without a code sounds like a wrong code (SPEC section 4).
            return (
                "accepted"
                if check is CodeCheck.ACCEPTED
                else ("locked" if check is CodeCheck.LOCKED else "rejected")
            )
        if isinstance(request, cmd.SetLocation):
            location = Location(request.number, request.extension or None)
            try:
                await self.accounts.set_location(request.account_id, location, via="phone")
            except InvalidInput as exc:
                log.warning("account %d: location not saved: %s", request.account_id, exc)
                return False
            return True
        if isinstance(request, cmd.SaveRecordedName):
            return await self._save_name(request)
        raise TypeError(f"not a store request: {request!r}")

    async def _save_name(self, request: cmd.SaveRecordedName) -> str:
        """Move the recording into place atomically, then remember it (the old one goes)."""
        source = self.recordings / request.recording
        final = self.recordings / f"name-{request.account_id}.wav"
        await asyncio.to_thread(os.replace, source, final)
        await self.accounts.set_recorded_name(request.account_id, str(final))
        return str(final)

    async def _track_batch(
        self, batches: list[tuple[LiveCall, ...] | tuple[str, ...]]
    ) -> list[None]:
        """Each call's last word in the batch: its newest description, or forgotten."""
        latest: dict[str, LiveCall | None] = {}
        for items in batches:
            for item in items:
                if isinstance(item, LiveCall):
                    latest[item.call_uuid] = item
                else:
                    latest[item] = None
        await self.live_calls.heartbeat([c for c in latest.values() if c is not None])
        await self.live_calls.forget([u for u, c in latest.items() if c is None])
        return [None] * len(batches)

    async def _enqueue_batch(
        self, items: list[cmd.EnqueueCallback]
    ) -> list[tuple[PendingCallback, bool]]:
        first = items[0]
        return await self.queue.enqueue_many(
            [(i.account_id, i.trigger, i.sid) for i in items],
            now=first.at,
            claim_for=(first.node_id, first.lease_s),
        )

    # --- media --------------------------------------------------------------------------------

    def _open(self, command: cmd.OpenMedia) -> None:
        self._spawn(self._open_leg(command))

    async def _open_leg(self, command: cmd.OpenMedia) -> None:
        leg_id = command.leg_id
        try:
            port = await self.media.open(command)
        except OSError as exc:
            self.node.media_failed(leg_id, str(exc), self.loop.time())
        else:
            self.node.media_opened(leg_id, port, self.loop.time())
        self.transmit()

    def _media_event(self, event: me.Event) -> None:
        if self.metrics is not None:
            self.metrics.media_event(event)
        self.node.media_event(event, self.loop.time())
        self.transmit()

    # --- plumbing -----------------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Future[Any]:
        task: asyncio.Future[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)

        def done(t: asyncio.Future[Any]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("service task failed", exc_info=t.exception())

        task.add_done_callback(done)
        return task
