"""Faults end to end: two gateway processes over one PostgreSQL database and the tiny estate's
simulators, each a process of its own. PostgreSQL cutting every connection mid-traffic, a
gateway SIGKILLed mid-burst and started again, and a gateway stopped with SIGTERM under load.

Every test is bounded: a fixed number of requests, and waits that give up after a deadline
(the assertion after the wait then reports what was seen). No assertion is about speed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from legacy.demo import DemoEstate
from tests.e2e.gateways import database_and_estate, gateway_config, running_fleet, write_toml
from tests.e2e.test_orders_e2e import (
    TOTAL_AVAILABLE,
    WAIT_SECONDS,
    Answer,
    Shop,
    _allocated,
    _carry_out,
    _db,
    _eventually,
    _fresh,
    _knob,
    _oms_orders,
    _order_ids,
    _place,
    _reserved,
    _send,
    _shipping_stores,
    _statuses,
    _stocked,
    _submitted,
    client,
    sku_pool,
)

pytestmark = pytest.mark.postgres

__all__ = ["_fresh", "client", "sku_pool"]  # fixtures shared with the orders' e2e tests

GATEWAYS = 2
DRAIN_SECONDS = 1.5


@pytest.fixture(scope="module")
def shop(truth: DemoEstate, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    root = tmp_path_factory.mktemp("faults-e2e")
    with contextlib.ExitStack() as stack:
        database, estate = database_and_estate(stack, truth, root, "cg_faults")
        config = gateway_config(
            estate,
            max_wait=WAIT_SECONDS,
            orders={"placement_lease": 2.0},
            shutdown={"drain": DRAIN_SECONDS, "grace": 20.0},
        )
        path = write_toml(config, root / "gateway.toml")
        fleet = stack.enter_context(running_fleet(GATEWAYS, path, database.url, root / "logs"))
        yield Shop(truth, estate, database, fleet)


async def _terminate_backends(shop: Shop) -> int:
    """End every connection to the gateways' database, as a failover or an operator would."""
    async with _db(shop) as db:
        ended: int = await db.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            shop.database.name,
        )
    return ended


def _errors(answer: Answer) -> list[object]:
    return [] if answer.body is None else list(answer.body.get("errors") or [])


async def _submitted_once(shop: Shop, client: httpx.AsyncClient, ids: list[str]) -> None:
    """Wait for every order of ``ids`` to be SUBMITTED; the OMS then holds each once (one
    submission), under the number the gateway recorded."""
    statuses = await _eventually(lambda: _statuses(shop, ids), _submitted)
    assert {status for status, _ in statuses.values()} == {"SUBMITTED"}
    received = [o for o in await _oms_orders(client, shop) if o["externalOrderId"] in ids]
    assert sorted((o["externalOrderId"], o["submissions"], o["omsOrderNo"]) for o in received) == (
        sorted((order_id, 1, number) for order_id, (_, number) in statuses.items())
    )


# --------------------------------------------------------------------------- PostgreSQL


async def test_reads_and_orders_answer_while_postgresql_cuts_every_connection(
    shop: Shop, client: httpx.AsyncClient, sku_pool: Iterator[str]
) -> None:
    # Given: a SKU in stock at one store, and both gateways holding pooled connections
    sku = next(sku_pool)
    store = _shipping_stores(shop.truth, sku, 1)[0].code
    assert (await _stocked(shop, client, sku, store, 60)) == {store: 60}
    urls = shop.fleet.urls

    async def traffic(round_number: int) -> list[Answer]:
        url = urls[round_number % GATEWAYS]
        reads = [_send(client, url, TOTAL_AVAILABLE, {"sku": sku}) for _ in range(4)]
        orders = [_place(client, url, _carry_out(sku, store)) for _ in range(3)]
        return list(await asyncio.gather(*reads, *orders))

    # When: PostgreSQL ends every connection of theirs three times while reads and orders run
    answers: list[Answer] = []
    ended = 0
    for round_number in range(3):
        running = asyncio.ensure_future(traffic(round_number))
        await asyncio.sleep(0.05)
        ended += await _terminate_backends(shop)
        answers += await running
        answers += await traffic(round_number + 1)  # on whatever connections are left

    # Then: every answer is a 200 without errors; every order placed is in the database once,
    # and the ledger holds exactly what the orders were allocated
    assert ended > 0
    assert [(a.status, _errors(a)) for a in answers if a.status != 200 or _errors(a)] == []
    placed = [a.payload["order"]["id"] for a in answers if "placeOrder" in a.body["data"]]
    assert len(placed) == len(set(placed)) == 18
    assert await _order_ids(shop, sku) == set(placed)
    assert await _reserved(shop, sku) == await _allocated(shop, sku) == {store: 18}


# --------------------------------------------------------------------------- crash


async def test_a_gateway_killed_mid_burst_leaves_every_key_placed_once_when_sent_again(
    shop: Shop, client: httpx.AsyncClient, sku_pool: Iterator[str]
) -> None:
    # Given: a SKU in stock, and a slow pricing engine so that orders are mid-way when it dies
    sku = next(sku_pool)
    store = _shipping_stores(shop.truth, sku, 1)[0].code
    assert (await _stocked(shop, client, sku, store, 40)) == {store: 40}
    await _knob(client, shop, "pricing", latency_ms=300)
    victim, survivor = shop.fleet.members[0], shop.fleet.members[1]
    orders = [_carry_out(sku, store) for _ in range(12)]

    # When: twelve orders go to one gateway, which is SIGKILLed once three are answered
    pending = {asyncio.ensure_future(_place(client, victim.url, order)) for order in orders}
    answered = 0
    while pending and answered < 3:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        answered += len(done)
    shop.fleet.kill(victim.index)
    await asyncio.gather(*pending)
    # ...and every order is sent again, once, under its key, to the other gateway at once
    again = await asyncio.gather(*(_place(client, survivor.url, order) for order in orders))
    shop.fleet.restart(victim.index)

    # Then: each resend is answered with an order (interrupted keys were taken over within
    # their lease, not left IN_PROGRESS), one order per key, and no unit held twice
    assert Counter(answer.outcome for answer in again) == {"placed": 12}
    ids = [answer.payload["order"]["id"] for answer in again]
    assert len(set(ids)) == 12
    assert await _order_ids(shop, sku) == set(ids)
    assert await _reserved(shop, sku) == await _allocated(shop, sku) == {store: 12}
    # and the OMS receives each order once, under the number the gateway recorded
    await _submitted_once(shop, client, ids)


# --------------------------------------------------------------------------- SIGTERM


async def test_sigterm_under_load_drains_readiness_first_and_finishes_what_is_in_flight(
    shop: Shop, client: httpx.AsyncClient, sku_pool: Iterator[str]
) -> None:
    # Given: a SKU in stock, a slow pricing engine, and orders in flight at one gateway
    sku = next(sku_pool)
    store = _shipping_stores(shop.truth, sku, 1)[0].code
    assert (await _stocked(shop, client, sku, store, 20)) == {store: 20}
    await _knob(client, shop, "pricing", latency_ms=800)
    member = shop.fleet.members[0]
    assert (await client.get(f"{member.url}/readyz")).status_code == 200
    in_flight = [
        asyncio.ensure_future(_place(client, member.url, _carry_out(sku, store))) for _ in range(6)
    ]
    await asyncio.sleep(0.3)

    # When: it is sent SIGTERM
    shop.fleet.terminate(member.index)

    # Then: readiness says 503 at once while the listener still serves new requests
    ready = await _eventually(
        lambda: client.get(f"{member.url}/readyz"), lambda r: r.status_code == 503, 5
    )
    assert (ready.status_code, ready.json()) == (503, {"status": "draining"})
    during_drain = await _place(client, member.url, _carry_out(sku, store))
    # ...every request in flight (and the one sent during the drain) completes with an order
    answers = [*await asyncio.gather(*in_flight), during_drain]
    assert Counter(answer.outcome for answer in answers) == {"placed": 7}
    # ...and the process then exits of its own accord, its outbox round finished
    assert member.process is not None
    await asyncio.to_thread(member.process.wait, WAIT_SECONDS)
    assert not member.running
    ids = [answer.payload["order"]["id"] for answer in answers]
    assert await _order_ids(shop, sku) == set(ids)
    await _submitted_once(shop, client, ids)
