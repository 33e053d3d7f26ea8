"""RateRepo: set, batches (all or nothing, replace_all), lookup, exact fractional prices."""

from __future__ import annotations

from decimal import Decimal

import pytest

from softswitch.service import rating
from softswitch.store import Cdr, InvalidInput, LegKind, Rate, Store
from softswitch.store.repos import parse_price

from .conftest import T0

RATES = [
    Rate("1", "USA/Canada", 20),
    Rate("44", "United Kingdom", 30, 6, 30, False),
    Rate("447", "UK mobile", 60, 6),
    Rate("8190", "Japan premium", 0, 6, 30, True),
    Rate("81", "Japan", 15, 30, 60),
]


async def test_rates_and_longest_prefix_lookup(store: Store) -> None:
    assert await store.rates.set_many(RATES) == 5
    assert await store.rates.lookup("+44 7911 123456") == Rate("447", "UK mobile", 60, 6, 30)
    assert (await store.rates.lookup("442071234567")) == Rate("44", "United Kingdom", 30, 6, 30)
    assert await store.rates.lookup("12125550100") == Rate("1", "USA/Canada", 20, 6, 30)
    premium = await store.rates.lookup("819012345678")
    assert premium is not None and premium.blocked
    assert (await store.rates.lookup("81312345678")) == Rate("81", "Japan", 15, 30, 60)
    assert await store.rates.lookup("33123456789") is None
    assert await store.rates.lookup("garbage") is None
    assert [r.prefix for r in await store.rates.list()] == ["1", "44", "447", "81", "8190"]

    assert await store.rates.set_many([Rate("447", "UK mobile", 50, 6)]) == 1  # upsert
    assert (await store.rates.lookup("447911123456")) == Rate("447", "UK mobile", 50, 6, 30)
    assert len(await store.rates.list()) == 5
    assert await store.rates.set_many([Rate("447", "UK mobile", 50, 6)], replace_all=True) == 1
    assert [r.prefix for r in await store.rates.list()] == ["447"]
    await store.rates.set(Rate("33", "France", 25))
    assert await store.rates.delete("33") and not await store.rates.delete("33")
    with pytest.raises(InvalidInput):
        await store.rates.set(Rate("3x", "bad", 1))
    assert await store.rates.set_many([], replace_all=True) == 0
    assert await store.rates.list() == ()


async def test_set_many_is_all_or_nothing(store: Store) -> None:
    for bad in (
        [Rate("1", "USA", 20), Rate("44", "UK", -1)],
        [Rate("1", "USA", 20), Rate("1", "USA again", 20)],
        [Rate("1", "USA", 20), Rate("1x", "bad", 20)],
        [Rate("1", "USA", 20), Rate("44", "UK", 20, 0)],
        [Rate("1", "USA", 20), Rate("4" * 17, "long", 20)],
    ):
        with pytest.raises(InvalidInput):
            await store.rates.set_many(bad, replace_all=True)
    assert await store.rates.list() == ()


async def test_fractional_prices_are_kept_exactly(store: Store) -> None:
    prices = {"44": "2.3", "1": "0.000001", "81": "1234567.891234", "33": "0.14", "49": "7"}
    for prefix, price in prices.items():
        stored = await store.rates.set(Rate(prefix, "", Decimal(price)))
        assert stored.price_per_minute == Decimal(price)
    got = {r.prefix: r.price_per_minute for r in await store.rates.list()}
    assert got == {p: Decimal(v) for p, v in prices.items()}
    assert all(isinstance(v, Decimal) for v in got.values())
    assert str(got["44"]) == "2.3" and str(got["49"]) == "7"  # no trailing zeros
    rate = await store.rates.lookup("442071234567")
    assert rate is not None and rate.price_per_minute == Decimal("2.3")
    await store.rates.set(Rate("39", "", 25))  # whole prices as int still work
    assert (await store.rates.lookup("390612345678")) == Rate("39", "", 25)
    for bad, problem in (
        (Decimal("2.1234567"), "at most 6 decimal places"),
        (Decimal("-0.5"), "must not be negative"),
        (Decimal("NaN"), "not a price"),
        (Decimal("1e13"), "too large"),
    ):
        with pytest.raises(InvalidInput, match=problem):
            await store.rates.set(Rate("44", "", bad))
    assert (await store.rates.lookup("442071234567")) == Rate("44", "", Decimal("2.3"))


@pytest.mark.parametrize(
    ("text", "price"),
    [("20", "20"), ("2.35", "2.35"), ("0.000001", "0.000001"), (" 1.50 ", "1.5"), (".5", "0.5")],
)
def test_parse_price(text: str, price: str) -> None:
    assert parse_price(text) == Decimal(price)


@pytest.mark.parametrize("text", ["", "thirty", "1e3", "-1", "1,5", "NaN", "2.1234567", "1.2.3"])
def test_parse_price_refuses(text: str) -> None:
    with pytest.raises(InvalidInput, match="price"):
        parse_price(text)


async def test_billing_at_a_fractional_price_is_exact(store: Store) -> None:
    # 0.14 per minute for 50 minutes is exactly 7; in floats 0.14 * 3000 / 60 is 7.000000000000001
    # and rounding up would charge 8.
    acct = await store.accounts.add("Alice", credit_limit=100)
    await store.rates.set(Rate("44", "United Kingdom", Decimal("0.14"), 6, 30))
    rate = await store.rates.lookup("442071234567")
    assert rate is not None
    available = (await store.accounts.get(acct.id)).available_credit
    hold = rating.reservation_for(
        available, rate.price_per_minute, rate.minimum_s, rate.increment_s, cap_seconds=3600
    )
    assert (hold.amount, hold.max_seconds) == (9, 3600)  # 0.14 * 60 = 8.4 -> 9
    assert await store.credit.reserve(acct.id, hold.amount, "call-1", now=T0)
    done = rating.settle(hold, 2999.5)
    assert (done.billed_seconds, done.cost, done.released) == (3000, 7, 2)
    await store.credit.commit("call-1", done.cost)
    cdr = await store.cdrs.write(
        Cdr(
            "call-1",
            LegKind.DESTINATION,
            acct.id,
            "81312345678",
            "442071234567",
            T0,
            answer_at=T0 + 1,
            end_at=T0 + 3000.5,
            billed_seconds=done.billed_seconds,
            cost=done.cost,
        )
    )
    after = await store.accounts.get(acct.id)
    assert (after.credit_used, after.credit_reserved, after.available_credit) == (7, 0, 93)
    assert (cdr.billed_seconds, cdr.cost) == (3000, 7)
    # The cut for the rest of the credit: 93 buys floor(93 * 60 / 0.14) s, on the 6 s grid.
    nxt = rating.reservation_for(after.available_credit, rate.price_per_minute, 30, 6)
    assert nxt.max_seconds == 14400 and nxt.amount == 34  # capped at 4 h: 0.14 * 240 = 33.6
