"""The read model and the change bus over a real Redis: two instances in one test, each its own
levels, bus and followers, as two gateway processes would have them."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import pytest
from redis.asyncio import Redis

from adapters.ports import BackendUnavailable, Money, PartialAnswer
from gateway.readmodel.bus import ChangeBus
from gateway.readmodel.levels import LocalLevel, RedisLink, SharedLevel
from gateway.readmodel.model import Lifetimes, ReadModel
from gateway.readmodel.responses import ResponseCache
from legacy.demo import DemoEstate
from tests.fakes import FakeEstate
from tests.support import REDIS_TEST_URL, missing_service

pytestmark = pytest.mark.redis


@pytest.fixture
async def namespace() -> AsyncIterator[str]:
    """A Redis namespace of this test's own; its keys are deleted after."""
    client = Redis.from_url(REDIS_TEST_URL)
    try:
        await client.ping()
    except OSError as exc:
        await client.aclose()
        missing_service(f"Redis ({exc!r})", "redis-server --daemonize yes --port 6379")
    name = f"t{uuid.uuid4().hex[:10]}"
    yield name
    async for key in client.scan_iter(match=f"{{{name}}}:*"):
        await client.delete(key)
    await client.aclose()


@dataclass
class Instance:
    """One gateway instance's read side."""

    link: RedisLink
    bus: ChangeBus
    model: ReadModel
    responses: ResponseCache
    stop: asyncio.Event
    task: asyncio.Task[None]

    async def close(self) -> None:
        self.stop.set()
        await self.task
        await self.link.aclose()


@pytest.fixture
async def instances(
    namespace: str,
) -> AsyncIterator[Callable[[FakeEstate], Coroutine[Any, Any, Instance]]]:
    started: list[Instance] = []

    async def start(estate: FakeEstate, url: str = REDIS_TEST_URL) -> Instance:
        link = RedisLink.from_url(url, timeout=0.5, pause=0.2)
        bus = ChangeBus(link, namespace, check_interval=0.2, reconnect_delay=0.1)
        model = ReadModel(
            estate.catalogue,
            estate.prices,
            estate.promotions,
            bus,
            LocalLevel(10_000),
            SharedLevel(link, namespace),
            Lifetimes(),
        )
        responses = ResponseCache(bus)
        stop = asyncio.Event()
        instance = Instance(link, bus, model, responses, stop, asyncio.create_task(bus.run(stop)))
        started.append(instance)
        await _until(lambda: bus.connected)
        return instance

    yield start
    for instance in started:
        await instance.close()


async def _until(condition: Callable[[], bool]) -> None:
    """Wait (at most 5 s) for another task to make ``condition`` true."""
    async with asyncio.timeout(5.0):
        while not condition():  # noqa: ASYNC110 - the condition is another task's state
            await asyncio.sleep(0.01)


def _estate(truth: DemoEstate) -> FakeEstate:
    return FakeEstate.from_demo(truth)


async def test_an_instance_reads_what_another_fetched_without_asking_the_backends(
    truth: DemoEstate, instances: Callable[[FakeEstate], Coroutine[Any, Any, Instance]]
) -> None:
    # given instance A has listed a page and priced it
    estate = _estate(truth)
    a, b = await instances(estate), await instances(estate)
    page = await a.model.list_products(0, 8)
    skus = [variant.sku for product in page.items for variant in product.variants]
    await a.model.prices(skus)
    calls_before = (sum(estate.catalogue.calls.values()), estate.prices.calls["prices"])

    # when instance B, which has never seen them, asks for the same
    again = await b.model.list_products(0, 8)
    prices = await b.model.prices(skus)

    # then it answers the same from Redis, and no backend was asked again
    assert again == page
    assert sorted(prices) == sorted(skus)
    assert (sum(estate.catalogue.calls.values()), estate.prices.calls["prices"]) == calls_before


async def test_concurrent_misses_for_the_same_entities_make_one_backend_call(
    truth: DemoEstate, instances: Callable[[FakeEstate], Coroutine[Any, Any, Instance]]
) -> None:
    estate = _estate(truth)
    a = await instances(estate)
    skus = [variant.sku for variant in list(truth.skus)[:30]]

    answers = await asyncio.gather(*(a.model.prices(skus) for _ in range(20)))

    assert estate.prices.calls["prices"] == 1
    assert all(answer == answers[0] for answer in answers)


async def test_a_published_change_evicts_on_every_instance_and_the_next_read_is_fresh(
    truth: DemoEstate, instances: Callable[[FakeEstate], Coroutine[Any, Any, Instance]]
) -> None:
    # given both instances hold a price
    estate = _estate(truth)
    a, b = await instances(estate), await instances(estate)
    sku = next(iter(truth.skus)).sku
    old = (await a.model.prices([sku]))[sku]
    assert (await b.model.prices([sku]))[sku].current == old.current

    # when the pricing engine changes it and a follower tombstones and publishes the change
    estate.prices.set_price(replace(old, current=Money(Decimal("1.23"), "EUR"), read_at=None))
    seq = a.bus.seen("pricing") + 1
    shared = a.model.shared
    assert shared is not None
    assert await shared.tombstone_many([f"price:{sku}|BASE"], seq, 30)
    assert await a.bus.publish("pricing", [sku])
    await _until(lambda: b.bus.seen("pricing") == seq and a.bus.seen("pricing") == seq)

    # then both read the new price
    assert (await a.model.prices([sku]))[sku].current.amount == Decimal("1.23")
    assert (await b.model.prices([sku]))[sku].current.amount == Decimal("1.23")


async def test_a_fetch_that_began_before_a_change_does_not_write_over_its_tombstone(
    namespace: str,
) -> None:
    link = RedisLink.from_url(REDIS_TEST_URL, timeout=0.5)
    shared = SharedLevel(link, namespace)
    try:
        await shared.tombstone_many(["price:X|BASE"], seq=7, ttl=30)

        await shared.put_many([("price:X|BASE", b"old")], since=6, ttl=30)
        stale = await shared.get_many(["price:X|BASE"])
        await shared.put_many([("price:X|BASE", b"new")], since=7, ttl=30)
        fresh = await shared.get_many(["price:X|BASE"])
    finally:
        await link.aclose()

    assert stale == [None]
    assert fresh == [b"new"]


async def test_an_instance_that_missed_notices_drops_what_that_feed_may_have_changed(
    truth: DemoEstate, instances: Callable[[FakeEstate], Coroutine[Any, Any, Instance]]
) -> None:
    # given B holds products and then stops listening (a stall, a lost connection)
    estate = _estate(truth)
    a, b = await instances(estate), await instances(estate)
    codes = [product.code for product in truth.products[:5]]
    await b.model.products(codes)
    b.stop.set()
    await b.task
    held_before = len(b.model.local)

    # when A publishes a PIM change meanwhile, and B listens again
    await a.bus.publish("pim", ["some-other-product"])
    b.stop.clear()
    b.task = asyncio.create_task(b.bus.run(b.stop))
    await _until(lambda: a.bus.seen("pim") == b.bus.seen("pim") == 1)

    # then B has noticed the gap and dropped every product it held
    assert held_before >= len(codes)
    assert b.bus.gaps >= 1
    assert all(b.model.local.get(f"product:{code}") is None for code in codes)


async def test_redis_down_fails_no_lookup_and_entries_live_shorter(
    truth: DemoEstate, instances: Callable[..., Coroutine[Any, Any, Instance]]
) -> None:
    # given an instance whose Redis does not answer (nothing listens on that port)
    estate = _estate(truth)
    with contextlib.closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{probe.getsockname()[1]}/0"
    link = RedisLink.from_url(dead, timeout=0.2, pause=0.2)
    bus = ChangeBus(link, "unused", reconnect_delay=0.05)
    model = ReadModel(
        estate.catalogue,
        estate.prices,
        estate.promotions,
        bus,
        LocalLevel(100),
        SharedLevel(link, "unused"),
        Lifetimes(local=300, degraded=2),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(bus.run(stop))
    try:
        # when it is asked for products
        found = await model.products([truth.products[0].code])

        # then it answers from the backend, says Redis is down, and keeps entries briefly
        assert list(found) == [truth.products[0].code]
        assert not link.up
        assert model.local_ttl() == 2
    finally:
        stop.set()
        await task
        await link.aclose()


async def test_a_price_lookup_answered_in_part_keeps_the_answered_and_remembers_the_rest(
    truth: DemoEstate, instances: Callable[[FakeEstate], Coroutine[Any, Any, Instance]]
) -> None:
    # given a model that holds the price of one SKU, then evicts it
    estate = _estate(truth)
    a = await instances(estate)
    first, second, third = (p.variants[0].sku for p in truth.products[:3])
    held = await a.model.prices([second])
    a.model.local.evict([f"price:{second}|BASE"])
    third_price = (await estate.prices.prices([third]))[third]

    # when the engine answers a lookup of the three only for ``third``
    estate.prices.fail_with = PartialAnswer(
        "pricing", "one call of two failed", {third: third_price}, [first]
    )
    with pytest.raises(PartialAnswer) as raised:
        await a.model.prices([first, second, third])

    # then the held and the answered prices come back, by SKU, and only ``first`` is missing;
    # the evicted price is still known, for display
    assert set(raised.value.found) == {second, third}
    assert raised.value.found[third].current == third_price.current
    assert raised.value.unanswered == (first,)
    assert a.model.last_known([second]) == held


async def test_a_product_lookup_never_answers_in_part(
    truth: DemoEstate, instances: Callable[[FakeEstate], Coroutine[Any, Any, Instance]]
) -> None:
    estate = _estate(truth)
    a = await instances(estate)
    held, other = truth.products[0].code, truth.products[1].code
    await a.model.products([held])
    estate.catalogue.fail_with = BackendUnavailable("pim", "down")

    with pytest.raises(BackendUnavailable) as raised:
        await a.model.products([held, other])

    assert not isinstance(raised.value, PartialAnswer)
