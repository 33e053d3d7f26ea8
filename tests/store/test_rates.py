"""RateRepo: set, batches (all or nothing, replace_all), longest-prefix lookup."""

from __future__ import annotations

import pytest

from softswitch.store import InvalidInput, Rate, Store

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
