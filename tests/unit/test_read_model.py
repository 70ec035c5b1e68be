"""The read model's first level on its own (no Redis): what a lookup is given while fetches
and changes interleave."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from decimal import Decimal

from adapters.ports import ChangeBatch, Money, Price
from gateway.readmodel.bus import ChangeBus
from gateway.readmodel.levels import LocalLevel
from gateway.readmodel.model import Lifetimes, ReadModel
from legacy.demo import DemoEstate
from tests.fakes import FakeEstate, FakePrices, Landings


class HeldPrices:
    """The pricing engine: each answer is what it held when asked, given when the test lets
    it (``landings``)."""

    def __init__(self, engine: FakePrices) -> None:
        self.engine = engine
        self.landings = Landings()

    async def prices(self, skus: Sequence[str], store_id: str | None = None) -> dict[str, Price]:
        found = dict(await self.engine.prices(skus, store_id))
        await self.landings.wait()
        return found

    async def changes(self, since: str | None) -> ChangeBatch:
        return await self.engine.changes(since)

    async def aclose(self) -> None:
        await self.engine.aclose()


async def test_a_lookup_after_a_change_is_not_given_what_a_fetch_begun_before_it_brings(
    truth: DemoEstate,
) -> None:
    # given a lookup of a SKU's price whose fetch from the engine is under way
    estate = FakeEstate.from_demo(truth)
    engine, bus = HeldPrices(estate.prices), ChangeBus(None)
    model = ReadModel(
        estate.catalogue, engine, estate.promotions, bus, LocalLevel(100), None, Lifetimes()
    )
    sku = next(iter(truth.skus)).sku
    old = (await estate.prices.prices([sku]))[sku]
    before = asyncio.create_task(model.prices([sku]))
    await engine.landings.begun(1)

    # when the price changes, its notice arrives, and the SKU is looked up again (as the live
    # hub does on that notice), and then the first fetch lands
    estate.prices.set_price(replace(old, current=Money(Decimal("1.23"), "EUR")))
    bus.deliver_here("pricing", [sku])
    after = asyncio.create_task(model.prices([sku]))
    await engine.landings.land_in_turn(0)
    if not after.done():
        await engine.landings.begun(2)
        await engine.landings.land_in_turn(1)

    # then the later lookup has the new price, and no fetch begun before the change kept the old
    assert (await after)[sku].current.amount == Decimal("1.23")
    assert (await before)[sku].current.amount == old.current.amount
    assert (await model.prices([sku]))[sku].current.amount == Decimal("1.23")
