"""The callback's life cycle as the service decides it: leases, claims, and how a call's end
settles its queue row. Pure rules; the call controller carries them out.

A trigger queues a callback already claimed by the node that takes it (its first attempt leaves
at once); callbacks due in the queue (retries, a restart's backlog, a dead node's leftovers)
are claimed every :data:`CLAIM_INTERVAL`; a node renews the leases of its live calls every
:data:`LEASE_RENEWAL`, so a call longer than :data:`CALLBACK_LEASE` keeps its row. When the
customer's call ends, :func:`settlement` says what becomes of the row (the store's
``callbacks`` table enforces the moves: ``softswitch/store/repos/callbacks.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CALLBACK_LEASE",
    "CLAIM_INTERVAL",
    "LEASE_RENEWAL",
    "LIVE_HEARTBEAT",
    "RECOVERY_INTERVAL",
    "RECOVERY_PASSES",
    "STALE_AFTER",
    "STATIC_TRIGGER_HOLD",
    "TRIGGER_REFRESH",
    "Settlement",
    "settlement",
]

#: How long a claimed callback stays ours before another node may take it over.
CALLBACK_LEASE = 300.0
#: How often due callbacks (a restart's backlog, other nodes' leftovers) are claimed.
CLAIM_INTERVAL = 1.0
#: How often the leases of live calls are renewed (well inside the lease).
LEASE_RENEWAL = CALLBACK_LEASE / 5
#: How often trigger numbers are re-read from the store (accounts added by the CLI).
TRIGGER_REFRESH = 10.0
#: A static ``[[trigger]]`` (no account: signalling tests) has no call to be live; its
#: "callback under way" lasts this long, so repeated test triggers are absorbed as a real
#: account's would be.
STATIC_TRIGGER_HOLD = 120.0
#: How often a node writes down its live calls (what a survivor recovers them from).
LIVE_HEARTBEAT = 5.0
#: A live call not written down for this long belongs to a node that died.
STALE_AFTER = 4 * LIVE_HEARTBEAT
#: How often a node looks for calls of dead nodes to recover, and for expired credit.
RECOVERY_INTERVAL = 10.0
#: How many passes a recovery gets for writes the store refused, before they go to the log
#: in full (for re-entry by hand) and the call's description is dropped.
RECOVERY_PASSES = 3


@dataclass(frozen=True, slots=True)
class Settlement:
    """What becomes of a finished call's queue row.

    ``event``: "complete", "fail" or "reschedule" (back to the queue, due at ``due_at``, now
    when None); ``error`` is kept on the row.
    """

    event: str
    error: str | None = None
    due_at: float | None = None


def settlement(reason: str, *, answered: bool, retry_at: float | None) -> Settlement:
    """The row's fate from how the customer's call ended (its ``Finished`` reason).

    * ``callback_retry`` (an attempt failed, another is owed): back to the queue, due after
      the pause, so a restart or another node resumes it;
    * ``node_stopping`` (or ``interrupted``: the node died; ``media_lost``: the media worker
      carrying the call died) before the customer answered: back to the queue now (the
      customer is still owed the callback; once answered, never again);
    * ``callback_<failure>`` (attempts exhausted, or a refusal): failed;
    * anything else (the customer was reached): done.
    """
    if reason == "callback_retry" and retry_at is not None:
        return Settlement("reschedule", reason, retry_at)
    if reason in ("node_stopping", "interrupted", "media_lost") and not answered:
        return Settlement("reschedule", reason)
    if reason.startswith("callback_"):
        return Settlement("fail", reason)
    return Settlement("complete")
