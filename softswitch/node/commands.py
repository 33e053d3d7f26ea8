"""What the node asks of its shell: store requests and media commands (frozen values).

The call controller (:mod:`softswitch.node.calls`) never touches a socket, a database or the
media engine. It returns these values from :meth:`softswitch.node.node.Node.next_event`, and
the asyncio shell (:mod:`softswitch.aio.service`) carries them out:

* a :class:`StoreRequest` runs as a store task; its answer comes back through
  ``Node.store_done(request, result, now)`` (or ``Node.store_failed``), typed as the request's
  docstring says. ``rid`` is unique per node, so replies never get confused;
* a :class:`MediaCommand` is applied to the media engine (today in-process; a media worker
  process later, which is why commands are plain values, small and batched, never per
  packet). :class:`OpenMedia` is the only one with an answer: ``Node.media_opened`` with the
  bound RTP port, or ``Node.media_failed``.

Times in store requests are wall-clock UTC seconds (the store's clock); the controller
converts from the monotonic ``now`` with the offset the shell gives it
(``Node.sync_clock``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from media.player import Tone
from softswitch.store.models import Cdr, LiveCall

__all__ = [
    "BridgeMedia",
    "CheckSecurityCode",
    "ClaimCallbacks",
    "CloseMedia",
    "Command",
    "CommitCredit",
    "ConferenceMedia",
    "EnqueueCallback",
    "ForgetCalls",
    "LoadAccounts",
    "LookUpSpeedDial",
    "MediaCommand",
    "OpenMedia",
    "PlayMedia",
    "QuoteRate",
    "RecordMedia",
    "ReleaseCredit",
    "ReleaseExpiredCredit",
    "RenewLeases",
    "ReserveCredit",
    "SaveRecordedName",
    "SendDigits",
    "SetLocation",
    "SetRemote",
    "SettleCallback",
    "StopMedia",
    "StoreRequest",
    "TakeStaleCalls",
    "TrackCalls",
    "UnbridgeMedia",
    "WriteCdr",
]

# --- store requests ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoadAccounts:
    """Every account (the trigger-number cache). Answer: ``tuple[Account, ...]``."""

    rid: int


@dataclass(frozen=True, slots=True)
class EnqueueCallback:
    """Queue a callback for ``account_id``, due at ``at``.

    ``claimed``: already claimed by ``node_id`` for ``lease_s`` (its first attempt leaves
    alongside); otherwise left pending for any node (a trigger that came in while this node
    was stopping). Answer: ``(PendingCallback, created: bool)``; ``created`` is False when the
    account already had an open callback (another node's, or an older one): absorbed.
    """

    rid: int
    sid: str
    account_id: int
    trigger: str
    at: float
    node_id: str
    lease_s: float
    claimed: bool = True


@dataclass(frozen=True, slots=True)
class ClaimCallbacks:
    """Claim the callbacks due by ``at`` (other nodes' leftovers, a restart's backlog).

    Answer: ``tuple[tuple[PendingCallback, Account], ...]``.
    """

    rid: int
    node_id: str
    at: float
    lease_s: float


@dataclass(frozen=True, slots=True)
class RenewLeases:
    """Extend this node's claim on the callbacks of its live calls. Answer: ignored."""

    rid: int
    node_id: str
    callback_ids: tuple[int, ...]
    until: float


@dataclass(frozen=True, slots=True)
class SettleCallback:
    """``event`` the queued callback: "complete", "fail", or "reschedule" (back to the
    queue, due at ``due_at``, wall-clock). Answer: ``bool`` (applied)."""

    rid: int
    sid: str
    callback_id: int
    event: str
    error: str | None
    node_id: str
    due_at: float | None = None


@dataclass(frozen=True, slots=True)
class QuoteRate:
    """The rate for ``number`` and the account's available credit; with ``since`` (the daily
    spend cap is on), also what the account spent from then (its CDRs' cost) plus what its
    live calls hold.

    Answer: ``(Rate | None, available_credit: int, spent: int)`` (``spent`` 0 without
    ``since``).
    """

    rid: int
    sid: str
    account_id: int
    number: str
    since: float | None = None


@dataclass(frozen=True, slots=True)
class ReserveCredit:
    """Hold ``amount`` of the account's credit under ``key``. Answer: ``bool`` (held)."""

    rid: int
    sid: str
    account_id: int
    amount: int
    key: str
    at: float


@dataclass(frozen=True, slots=True)
class CommitCredit:
    """Charge ``cost`` against the reservation ``key`` and drop it. Answer: ignored."""

    rid: int
    sid: str
    key: str
    cost: int


@dataclass(frozen=True, slots=True)
class ReleaseCredit:
    """Give the reservation ``key`` back (the call cost nothing). Answer: ignored."""

    rid: int
    sid: str
    key: str


@dataclass(frozen=True, slots=True)
class LookUpSpeedDial:
    """The number stored under ``code``. Answer: ``str | None``."""

    rid: int
    sid: str
    account_id: int
    code: str


@dataclass(frozen=True, slots=True)
class CheckSecurityCode:
    """Check ``code`` against the account's stored hash; the store counts failures and locks
    the menu for the account (every entry point). Answer: ``"accepted"``, ``"rejected"``
    (also for an account with no code: they sound the same) or ``"locked"``."""

    rid: int
    sid: str
    account_id: int
    code: str
    at: float


@dataclass(frozen=True, slots=True)
class SetLocation:
    """Make ``number`` + ``extension`` the account's location. Answer: ``bool`` (saved)."""

    rid: int
    sid: str
    account_id: int
    number: str
    extension: str


@dataclass(frozen=True, slots=True)
class SaveRecordedName:
    """Keep the recording ``recording`` (a file name in the recordings directory) as the
    account's name: moved into place atomically, then recorded in the store. Answer: ``bool``."""

    rid: int
    sid: str
    account_id: int
    recording: str


@dataclass(frozen=True, slots=True)
class TrackCalls:
    """Write down these live calls (the heartbeat a survivor recovers them from). Answer:
    ignored."""

    rid: int
    calls: tuple[LiveCall, ...]


@dataclass(frozen=True, slots=True)
class ForgetCalls:
    """These calls are over and recorded: forget their descriptions. Answer: ignored."""

    rid: int
    call_uuids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TakeStaleCalls:
    """Take for recovery the calls of dead nodes (not written down since ``alive_before``).

    Answer: ``tuple[LiveCall, ...]``."""

    rid: int
    node_id: str
    alive_before: float


@dataclass(frozen=True, slots=True)
class ReleaseExpiredCredit:
    """Give back credit held by calls that outlived their reservation. Answer: ``int``."""

    rid: int
    at: float


@dataclass(frozen=True, slots=True)
class WriteCdr:
    """Write one CDR durably (group commit). Answer: ignored."""

    rid: int
    sid: str
    cdr: Cdr


StoreRequest = (
    LoadAccounts
    | EnqueueCallback
    | ClaimCallbacks
    | RenewLeases
    | SettleCallback
    | QuoteRate
    | ReserveCredit
    | CommitCredit
    | ReleaseCredit
    | LookUpSpeedDial
    | WriteCdr
    | CheckSecurityCode
    | SetLocation
    | SaveRecordedName
    | TrackCalls
    | ForgetCalls
    | TakeStaleCalls
    | ReleaseExpiredCredit
)


# --- media commands ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpenMedia:
    """Create the leg's RTP endpoint with in-band DTMF and fax detection.

    ``service_digits``: the service decides which of this leg's keys reach its bridge peer
    (RFC 4733 events are not relayed, in-band tones are clamped out of the relayed audio);
    the customer's leg. ``call``: the session the leg belongs to; every leg of one call
    (anything it may bridge or conference together) gets the same one, and a node with media
    workers keeps them on one worker. Answer: ``Node.media_opened(leg_id, port, now)``.
    """

    leg_id: str
    service_digits: bool = False
    call: str = ""


@dataclass(frozen=True, slots=True)
class CloseMedia:
    """Close the leg's sockets and forget it."""

    leg_id: str


@dataclass(frozen=True, slots=True)
class SetRemote:
    """The far end's address and codec from its SDP answer."""

    leg_id: str
    host: str
    port: int
    codec: str
    dtmf_pt: int | None


@dataclass(frozen=True, slots=True)
class PlayMedia:
    """Play files and tones on the leg (replacing what plays)."""

    leg_id: str
    items: tuple[Path | Tone, ...]
    barge_in: bool
    mix: bool


@dataclass(frozen=True, slots=True)
class RecordMedia:
    """Record the leg to ``recording`` (a file name in the recordings directory) until ``#``,
    ``silence_s`` of silence or ``max_s``. The engine reports a RecordFinished."""

    leg_id: str
    recording: str
    max_s: float
    silence_s: float


@dataclass(frozen=True, slots=True)
class StopMedia:
    """Stop what plays on the leg."""

    leg_id: str


@dataclass(frozen=True, slots=True)
class SendDigits:
    """Send DTMF: ``mode`` "rfc4733" (in-band when not negotiated), "inband" or "both"."""

    leg_id: str
    digits: str
    mode: str


@dataclass(frozen=True, slots=True)
class BridgeMedia:
    """Join two legs (each leaves any bridge or conference first); ``early_media``: b -> a."""

    leg_a: str
    leg_b: str
    early_media: bool = False


@dataclass(frozen=True, slots=True)
class UnbridgeMedia:
    """Take the leg out of its bridge or conference."""

    leg_id: str


@dataclass(frozen=True, slots=True)
class ConferenceMedia:
    """Mix the legs together in conference ``conf_id``."""

    conf_id: str
    legs: tuple[str, ...]


MediaCommand = (
    OpenMedia
    | CloseMedia
    | SetRemote
    | PlayMedia
    | StopMedia
    | SendDigits
    | BridgeMedia
    | UnbridgeMedia
    | ConferenceMedia
    | RecordMedia
)

Command = StoreRequest | MediaCommand
