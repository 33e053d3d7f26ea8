"""The controller's side of a media worker that dies: its calls end cleanly, with their CDRs.

On a fake clock (tests/node/harness.py). The pool reports every leg the dead worker carried as
a ``MediaLost`` event (softswitch/aio/mediapool.py); the call ends as an operator's hang-up
would: every leg still up released, a CDR per leg with cause ``media_lost``, and a customer
never reached is owed the callback (the queue row goes back).
"""

from __future__ import annotations

from media import engine as me
from softswitch.node import commands as cmd
from softswitch.store.models import LegKind
from tests.node.harness import CUSTOMER, DESTINATION, Rig
from tests.node.test_calls import assert_all_over, connected


def lose(rig: Rig, leg_id: str) -> None:
    rig.node.media_event(me.MediaLost(leg_id, "media worker 0 died (exit code -9)"), rig.now)
    rig.pump()


def test_every_leg_of_a_call_names_the_call_so_a_pool_keeps_them_on_one_worker() -> None:
    rig = Rig()
    connected(rig)
    opens = [c for c in rig.commands if isinstance(c, cmd.OpenMedia)]
    assert len(opens) == 2  # the customer's leg and the destination's
    [session] = rig.calls.sessions.values()
    assert {o.call for o in opens} == {session.sid}


def test_a_bridged_call_whose_media_is_lost_ends_with_its_records() -> None:
    rig = Rig()
    callback, destination = connected(rig)
    rig.advance(10.0)
    lose(rig, callback.leg_id)
    assert rig.requests_to(callback, "BYE") and rig.requests_to(destination, "BYE")
    cdrs = {c.leg: c for c in rig.store.cdrs}
    assert set(cdrs) == {LegKind.TRIGGER, LegKind.CALLBACK, LegKind.DESTINATION}
    assert cdrs[LegKind.CALLBACK].cause_text == "media_lost"
    assert cdrs[LegKind.DESTINATION].cause_text == "media_lost"
    assert cdrs[LegKind.DESTINATION].answer_at is not None
    assert rig.store.settled == [(1, "complete", None)]  # the customer was reached
    # The other leg's loss, reported in the same breath, changes nothing more.
    lose(rig, destination.leg_id)
    assert len(rig.store.cdrs) == 3
    assert_all_over(rig)


def test_a_callback_still_ringing_when_its_media_is_lost_is_owed_again() -> None:
    rig = Rig()
    rig.trigger()
    callback = rig.last_call(CUSTOMER)
    rig.ring(callback)
    lose(rig, callback.leg_id)
    assert rig.requests_to(callback, "CANCEL")
    rig.reject(callback, 487)
    [cdr] = rig.store.cdrs_of(LegKind.CALLBACK)
    assert cdr.answer_at is None
    assert rig.store.settled == [(1, "reschedule", "media_lost")]
    assert_all_over(rig)
    assert not [c for c in rig.calls_out if c.number == DESTINATION]
