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


def test_a_ringing_trigger_whose_early_media_is_lost_rings_plainly_and_still_calls_back() -> None:
    rig = Rig(trigger_answer_after=20.0)
    trigger = rig.ring_trigger()
    assert any(r.status == 183 for r in rig.trigger_responses(trigger))
    lose(rig, trigger.leg_id)
    assert any(r.status == 180 for r in rig.trigger_responses(trigger))
    rig.advance(21.0)  # no early media any more: never answered into the menu
    assert not any(r.status == 200 for r in rig.trigger_responses(trigger))
    rig.trigger_request(trigger, "CANCEL")
    assert rig.last_call(CUSTOMER)  # the callback, as for any trigger


def test_a_caller_in_the_location_menu_whose_media_is_lost_is_hung_up_with_a_record() -> None:
    rig = Rig()
    trigger = rig.ring_trigger()
    rig.advance(2.0)
    rig.trigger_key(trigger, "#")
    rig.trigger_request(trigger, "ACK")
    lose(rig, trigger.leg_id)
    bye = [r for r in rig.requests if r.call_id == trigger.call_id and r.method == "BYE"]
    assert bye, "the switch hangs up the trigger call"
    [cdr] = rig.store.cdrs_of(LegKind.TRIGGER)
    assert cdr.answer_at is not None and cdr.cause_text.endswith("media_lost")
    assert rig.calls.idle
