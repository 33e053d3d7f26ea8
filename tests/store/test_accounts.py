"""AccountRepo: accounts, trigger numbers, location, security code lockout, recorded name."""

from __future__ import annotations

import logging

import pytest

from softswitch.store import (
    UNSET,
    AccountKind,
    AccountRepo,
    AccountStatus,
    Cdr,
    CodeCheck,
    Conflict,
    InvalidInput,
    Language,
    LegKind,
    Location,
    LocationChange,
    NotFound,
    SpeedDial,
    Store,
)
from softswitch.store.repos import check_security_code, e164_number, hash_security_code

from .conftest import T0, FakeClock


async def test_add_get_and_find_by_trigger(store: Store, clock: FakeClock) -> None:
    added = await store.accounts.add(
        "Alice",
        kind=AccountKind.TRAVELER,
        language=Language.EN,
        triggers=["+81 50-1234-5678", "815099990000"],
        location=Location("+1 212 555 0100", "1234"),
        security_code="4321",
        credit_limit=5000,
    )
    assert added.triggers == ("815012345678", "815099990000")
    assert added.location == Location("12125550100", "1234")
    assert added.kind is AccountKind.TRAVELER and added.language is Language.EN
    assert added.status is AccountStatus.ACTIVE and added.active
    assert added.has_security_code and added.available_credit == 5000
    assert added.created_at == added.updated_at == T0
    assert await store.accounts.get(added.id) == added
    assert await store.accounts.by_trigger("+81 50 1234 5678") == added
    assert await store.accounts.by_trigger("815000000000") is None
    assert await store.accounts.by_trigger("not a number") is None
    with pytest.raises(NotFound):
        await store.accounts.get(999)


async def test_trigger_numbers_are_unique_across_accounts(store: Store) -> None:
    alice = await store.accounts.add("Alice", triggers=["815011110000"])
    with pytest.raises(Conflict):
        await store.accounts.add("Bob", triggers=["815011110000"])
    bob = await store.accounts.add("Bob")
    with pytest.raises(Conflict):
        await store.accounts.add_trigger(bob.id, "815011110000")
    bob = await store.accounts.add_trigger(bob.id, "815022220000")
    assert bob.triggers == ("815022220000",)
    alice = await store.accounts.remove_trigger(alice.id, "815011110000")
    assert alice.triggers == ()
    with pytest.raises(NotFound):
        await store.accounts.remove_trigger(alice.id, "815011110000")
    assert [a.name for a in await store.accounts.list()] == ["Alice", "Bob"]


async def test_bad_input_is_refused(store: Store) -> None:
    with pytest.raises(InvalidInput):
        await store.accounts.add(" ")
    with pytest.raises(InvalidInput):
        await store.accounts.add("Hotline without destination", kind=AccountKind.HOTLINE)
    with pytest.raises(InvalidInput):
        await store.accounts.add("X", triggers=["81-50-abc"])
    with pytest.raises(InvalidInput):
        await store.accounts.add("X", security_code="12345")
    with pytest.raises(InvalidInput):
        await store.accounts.add("X", location=Location("81312345678", "12a"))
    assert await store.accounts.list() == ()


async def test_update_suspend_resume_location_name(store: Store, clock: FakeClock) -> None:
    acct = await store.accounts.add("Alice", credit_limit=100)
    clock.now += 10
    changed = await store.accounts.update(
        acct.id, name="Alice B", language=Language.EN, credit_limit=900
    )
    assert (changed.name, changed.language, changed.credit_limit) == ("Alice B", Language.EN, 900)
    assert changed.updated_at == T0 + 10 and changed.created_at == T0
    with pytest.raises(InvalidInput):
        await store.accounts.update(acct.id, kind=AccountKind.HOTLINE)
    hotline = await store.accounts.update(
        acct.id, kind=AccountKind.HOTLINE, hotline_destination="81355550000"
    )
    assert hotline.kind is AccountKind.HOTLINE and hotline.hotline_destination == "81355550000"
    assert (await store.accounts.update(acct.id, name=UNSET)).name == "Alice B"

    suspended = await store.accounts.suspend(acct.id)
    assert suspended.status is AccountStatus.SUSPENDED and not suspended.active
    assert [a.id for a in await store.accounts.list(status=AccountStatus.SUSPENDED)] == [acct.id]
    assert (await store.accounts.resume(acct.id)).active

    moved = await store.accounts.set_location(acct.id, Location("6561234567", "812"))
    assert moved.location == Location("6561234567", "812")
    assert (await store.accounts.set_location(acct.id, None)).location is None
    named = await store.accounts.set_recorded_name(acct.id, "/var/names/1.wav")
    assert named.recorded_name_path == "/var/names/1.wav"
    with pytest.raises(NotFound):
        await store.accounts.suspend(4242)


async def test_registered_numbers(store: Store) -> None:
    acct = await store.accounts.add("Alice")
    home = await store.accounts.add_registered_number(acct.id, "81312345678", None, "home")
    hotel = await store.accounts.add_registered_number(acct.id, "6561234567", "812", "hotel")
    assert await store.accounts.registered_numbers(acct.id) == (home, hotel)
    with pytest.raises(Conflict):
        await store.accounts.add_registered_number(acct.id, "6561234567", "812")
    await store.accounts.remove_registered_number(acct.id, home.id)
    assert await store.accounts.registered_numbers(acct.id) == (hotel,)
    with pytest.raises(NotFound):
        await store.accounts.remove_registered_number(acct.id, home.id)


def test_security_code_hash_is_salted_and_checks() -> None:
    one, two = hash_security_code("1234"), hash_security_code("1234")
    # Never stored in clear: only the scrypt fields (a random hex salt and digest may contain
    # "1234" by chance, so the check is on whole fields, not substrings).
    fields = one.split("$")
    assert one != two and fields[0] == "scrypt" and "1234" not in fields
    assert len(fields[4]) == 32 and len(fields[5]) == 64
    assert check_security_code("1234", one) and not check_security_code("1235", one)
    assert not check_security_code("1234", "garbage")


async def test_security_code_lockout(
    store: Store, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store.accounts.max_code_failures = 3
    store.accounts.lockout_s = 600
    acct = await store.accounts.add("Alice", security_code="2468")
    verify = store.accounts.verify_security_code
    assert await verify(acct.id, "2468", T0) is CodeCheck.ACCEPTED
    assert await verify(acct.id, "0000", T0) is CodeCheck.REJECTED
    assert await verify(acct.id, "2468", T0) is CodeCheck.ACCEPTED  # success resets the count
    assert await verify(acct.id, "0000", T0) is CodeCheck.REJECTED
    assert await verify(acct.id, "1111", T0) is CodeCheck.REJECTED
    with caplog.at_level(logging.WARNING, "softswitch.store"):
        assert await verify(acct.id, "2222", T0 + 1) is CodeCheck.LOCKED
    assert "locked" in caplog.text
    locked = await store.accounts.get(acct.id)
    assert locked.locked_until == T0 + 601
    # While locked even the right code is refused; afterwards it works again.
    assert await verify(acct.id, "2468", T0 + 600) is CodeCheck.LOCKED
    assert await verify(acct.id, "2468", T0 + 601) is CodeCheck.ACCEPTED
    assert (await store.accounts.get(acct.id)).locked_until is None

    changed = await store.accounts.update(acct.id, security_code="1357")
    assert await verify(changed.id, "1357", T0 + 700) is CodeCheck.ACCEPTED
    bare = await store.accounts.update(acct.id, security_code=None)
    assert await verify(bare.id, "1357", T0 + 700) is CodeCheck.NO_CODE
    with pytest.raises(NotFound):
        await verify(999, "1234", T0)


NOT_E164 = {
    "0312345678": "starts with 0",  # national format (Tokyo 03-1234-5678)
    "0081312345678": "starts with 0",  # the international prefix 00 in front
    "8103123456789": "trunk prefix 0",  # the national 0 kept after the country code
    "2801234567": "no country code",  # 28x is a spare code
    "8131": "too short",
    "12345678901234567": "digits",  # 17 digits, E.164 allows 15
    "11235550100": "NANP",
}


async def test_numbers_stored_for_calling_are_e164(store: Store) -> None:
    acct = await store.accounts.add("Alice", location=Location("+81 3 1234 5678"))
    assert acct.location == Location("81312345678")
    italy = await store.accounts.set_location(acct.id, Location("+39 06 1234 5678"))
    assert italy.location == Location("390612345678")  # Italy keeps the 0 of its area codes
    for number, problem in NOT_E164.items():
        for attempt in (
            store.accounts.add("X", location=Location(number)),
            store.accounts.set_location(acct.id, Location(number)),
            store.accounts.add_registered_number(acct.id, number),
            store.accounts.add("X", kind=AccountKind.HOTLINE, hotline_destination=number),
            store.accounts.update(acct.id, hotline_destination=number),
            store.speed_dials.set(acct.id, "03", number),
        ):
            with pytest.raises(InvalidInput) as info:
                await attempt
            message = str(info.value)
            assert problem in message and "E.164" in message and "country code first" in message
    assert [a.id for a in await store.accounts.list()] == [acct.id]
    assert (await store.accounts.get(acct.id)).location == Location("390612345678")
    assert await store.accounts.registered_numbers(acct.id) == ()
    assert await store.speed_dials.list(acct.id) == ()
    # Trigger numbers are the service's own numbers, not destinations: only digits are checked.
    assert (await store.accounts.add_trigger(acct.id, "8150")).triggers == ("8150",)


def test_e164_message_says_what_is_expected() -> None:
    with pytest.raises(InvalidInput) as info:
        e164_number("0312345678", "location")
    assert str(info.value) == (
        "location '0312345678': starts with 0 (a national number, or the international prefix "
        "00); expected E.164: country code first, no + or 00, no national 0, at most 15 digits "
        "(e.g. 81312345678 for Tokyo 03-1234-5678)"
    )
    assert e164_number("+1 (212) 555-0100") == "12125550100"


async def test_location_history_keeps_every_change_newest_first(
    store: Store, clock: FakeClock
) -> None:
    acct = await store.accounts.add("Alice", location=Location("81312345678"))
    other = await store.accounts.add("Bob")
    assert await store.accounts.location_history(acct.id) == ()  # creating is not a change
    clock.now = T0 + 10
    await store.accounts.set_location(acct.id, Location("6561234567", "812"), via="phone")
    clock.now = T0 + 20
    await store.accounts.set_location(acct.id, None)  # the CLI's default
    clock.now = T0 + 30
    moved = await store.accounts.set_location(acct.id, Location("+1 212 555 0100"), via="web")
    assert moved.location == Location("12125550100")
    await store.accounts.set_location(other.id, Location("81355550000"), via="phone")

    history = await store.accounts.location_history(acct.id)
    assert [(c.changed_at, c.via, c.previous, c.location) for c in history] == [
        (T0 + 30, "web", None, Location("12125550100")),
        (T0 + 20, "cli", Location("6561234567", "812"), None),
        (T0 + 10, "phone", Location("81312345678"), Location("6561234567", "812")),
    ]
    assert all(isinstance(c, LocationChange) and c.account_id == acct.id for c in history)
    assert await store.accounts.location_history(acct.id, limit=2) == history[:2]
    # Two changes in the same microsecond still come newest first (by id).
    await store.accounts.set_location(acct.id, Location("81312345678"), via="phone")
    again = await store.accounts.location_history(acct.id, limit=2)
    assert [c.location for c in again] == [Location("81312345678"), Location("12125550100")]
    assert [c.via for c in await store.accounts.location_history(other.id)] == ["phone"]
    with pytest.raises(NotFound):
        await store.accounts.location_history(999)


async def test_a_refused_location_change_leaves_no_history(store: Store) -> None:
    acct = await store.accounts.add("Alice", location=Location("81312345678"))
    with pytest.raises(InvalidInput):
        await store.accounts.set_location(acct.id, Location("0312345678"), via="phone")
    for via in ("", "Phone", "phone menu", "x" * 17, "1cli"):
        with pytest.raises(InvalidInput):
            await store.accounts.set_location(acct.id, Location("6561234567"), via=via)
    with pytest.raises(NotFound):
        await store.accounts.set_location(999, Location("6561234567"), via="phone")
    assert await store.accounts.location_history(acct.id) == ()
    assert (await store.accounts.get(acct.id)).location == Location("81312345678")


async def test_lockout_defaults_to_three_codes_for_half_an_hour(store: Store) -> None:
    assert (store.accounts.max_code_failures, store.accounts.lockout_s) == (3, 1800.0)
    acct = await store.accounts.add("Alice", security_code="2468")
    verify = store.accounts.verify_security_code
    assert await verify(acct.id, "0000", T0) is CodeCheck.REJECTED
    assert await verify(acct.id, "0000", T0) is CodeCheck.REJECTED
    assert await verify(acct.id, "0000", T0) is CodeCheck.LOCKED
    assert (await store.accounts.get(acct.id)).locked_until == T0 + 1800
    assert await verify(acct.id, "2468", T0 + 1799) is CodeCheck.LOCKED
    assert await verify(acct.id, "2468", T0 + 1800) is CodeCheck.ACCEPTED


async def test_lockout_as_configured(store: Store) -> None:
    repo = AccountRepo(store.db, max_code_failures=1, lockout_s=60)
    acct = await repo.add("Alice", security_code="2468")
    assert await repo.verify_security_code(acct.id, "0000", T0) is CodeCheck.LOCKED
    assert (await repo.get(acct.id)).locked_until == T0 + 60
    assert await repo.verify_security_code(acct.id, "2468", T0 + 60) is CodeCheck.ACCEPTED
    for bad in ({"max_code_failures": 0}, {"lockout_s": -1.0}):
        with pytest.raises(ValueError):
            AccountRepo(store.db, **bad)


async def test_delete_removes_the_account_and_what_is_only_its_own(
    store: Store, clock: FakeClock
) -> None:
    acct = await store.accounts.add(
        "Alice", triggers=["815011110000"], location=Location("81312345678")
    )
    keep = await store.accounts.add("Bob", triggers=["815022220000"])
    await store.accounts.set_location(acct.id, Location("6561234567"), via="phone")
    await store.accounts.set_recorded_name(acct.id, "/var/recordings/name-1.wav")
    await store.accounts.add_registered_number(acct.id, "81312345678")
    await store.speed_dials.set(acct.id, "01", "81355550000")
    await store.speed_dials.set(keep.id, "01", "81355550000")
    cdr = await store.cdrs.write(
        Cdr("call-1", LegKind.TRIGGER, acct.id, "815011110000", "815011110000", T0)
    )
    done, _ = await store.callbacks.enqueue(acct.id, "815011110000", T0, now=T0)
    await store.callbacks.claim_due("node-a", T0, 30)
    await store.callbacks.complete(done.id)

    gone = await store.accounts.delete(acct.id)
    assert gone.name == "Alice" and gone.recorded_name_path == "/var/recordings/name-1.wav"
    with pytest.raises(NotFound):
        await store.accounts.get(acct.id)
    with pytest.raises(NotFound):
        await store.accounts.location_history(acct.id)
    assert await store.accounts.by_trigger("815011110000") is None
    assert await store.speed_dials.list(acct.id) == ()
    assert await store.callbacks.list() == ()
    # CDRs are kept (billing history), without the account.
    assert [(c.id, c.account_id) for c in await store.cdrs.list()] == [(cdr.id, None)]
    # The trigger number is free again; the other account is untouched.
    assert (await store.accounts.add("Carol", triggers=["815011110000"])).triggers
    assert await store.speed_dials.list(keep.id) == (SpeedDial(keep.id, "01", "81355550000"),)
    with pytest.raises(NotFound):
        await store.accounts.delete(acct.id)


async def test_delete_is_refused_during_a_call(store: Store) -> None:
    acct = await store.accounts.add("Alice", triggers=["815011110000"], credit_limit=1000)
    assert await store.credit.reserve(acct.id, 100, "call-1", now=T0)
    with pytest.raises(Conflict, match="call in progress"):
        await store.accounts.delete(acct.id)
    await store.credit.release("call-1")
    await store.callbacks.enqueue(acct.id, "815011110000", T0, now=T0, claim_for=("node-a", 30))
    with pytest.raises(Conflict, match="call in progress"):
        await store.accounts.delete(acct.id)
    assert (await store.accounts.get(acct.id)).name == "Alice"
    [claimed] = await store.callbacks.list()
    await store.callbacks.complete(claimed.id)
    await store.accounts.delete(acct.id)
    assert await store.accounts.list() == ()


async def test_list_gives_each_account_its_own_trigger_numbers(store: Store) -> None:
    # One query joins accounts to their trigger numbers: two, none and one must not mix.
    await store.accounts.add("Alice", triggers=["815011110000", "815011110001"])
    await store.accounts.add("Bob")
    await store.accounts.add("Carol", triggers=["815033330000"])
    found = await store.accounts.list()
    assert [(a.name, a.triggers) for a in found] == [
        ("Alice", ("815011110000", "815011110001")),
        ("Bob", ()),
        ("Carol", ("815033330000",)),
    ]
    assert [await store.accounts.get(a.id) for a in found] == list(found)
