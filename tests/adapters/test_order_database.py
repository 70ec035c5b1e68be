"""What ``placeOrder`` asks of the gateway's PostgreSQL: the statements of one order, and
orders after the server cut the gateway's connections. Over real HTTP, on the shared estate."""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from sqlalchemy import Connection, event, make_url
from sqlalchemy.engine import Engine

from legacy.demo import DemoEstate
from legacy.launcher import RunningEstate
from tests.adapters.test_gateway_db import _terminate_connections_to
from tests.api.test_orders import (
    PLACE,
    _available,
    _carry_out,
    _place,
    _stocked,
    _store,
    _token,
)
from tests.support import ServedGateway, serve_gateway

pytestmark = pytest.mark.postgres


@dataclass(frozen=True)
class Served:
    gateway: ServedGateway
    database_url: str


@pytest.fixture(scope="module")
def served(estate: RunningEstate, pg_databases: Callable[[], str]) -> Iterator[Served]:
    """A gateway of its own over the shared estate, on a PostgreSQL database of its own."""
    database_url = pg_databases()
    gateway = serve_gateway(estate, database_url)
    yield Served(gateway, database_url)
    gateway.stop()


@dataclass(frozen=True)
class Sent:
    """One statement: what it does to which table, whether it ran in autocommit mode (a
    transaction of its own), and the transaction it ran in otherwise."""

    action: str
    autocommit: bool
    transaction: object
    statement: str


@contextmanager
def statements_to(database_url: str) -> Iterator[dict[object, list[Sent]]]:
    """The statements sent to the database at ``database_url`` meanwhile, by the asyncio task
    that sent them (a request's are all sent by its task)."""
    database = make_url(database_url).database
    sent: dict[object, list[Sent]] = defaultdict(list)

    def record(connection: Connection, cursor: object, statement: str, *_: object) -> None:
        if connection.engine.url.database == database:
            isolation = connection.get_execution_options().get("isolation_level")
            action = _action(statement)
            sent[asyncio.current_task()].append(
                Sent(action, isolation == "AUTOCOMMIT", connection.get_transaction(), statement)
            )

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(Engine, "before_cursor_execute", record)


def _action(statement: str) -> str:
    """``INSERT orders``, ``UPDATE inventory_positions``, ``SELECT inventory_positions``...;
    every write of a statement that writes several tables, in order."""
    writes = re.findall(
        r"\b(INSERT INTO|UPDATE|DELETE FROM)\s+(?!OF\b)(\w+)", statement, re.IGNORECASE
    )
    if writes:
        return ", ".join(f"{verb.split()[0].upper()} {table}" for verb, table in writes)
    table = re.search(r"\bFROM\s+(\w+)", statement, re.IGNORECASE)
    return f"SELECT {table.group(1) if table else '?'}"


def _last_unit_sold(
    served: Served, truth: DemoEstate, key: str, token: str | None = None, **more: object
) -> tuple[dict[str, Any], list[Sent], int]:
    """A store's one unit of a SKU sold through ``key`` (with ``more`` in the order): the
    payload, the statements of the request that wrote the order, and the units the position
    holds now beyond what it held before (read from the gateway's database: the shared ERP's
    on hand may move meanwhile, what orders hold may not)."""
    store = _store(truth)
    sku = _stocked(served.gateway, truth, store, 1)
    before = asyncio.run(_reserved(served.database_url, store, sku))
    with statements_to(served.database_url) as sent:
        placed = _place(served.gateway, _carry_out(sku, store, 1, **more), key=key, token=token)
    held = asyncio.run(_reserved(served.database_url, store, sku)) - before
    requests = [task for task in sent.values() if any("INSERT orders" in s.action for s in task)]
    return placed, requests[0] if requests else [], held


async def _reserved(database_url: str, store: str, sku: str) -> int:
    connection = await asyncpg.connect(database_url.replace("+asyncpg", "", 1))
    try:
        query = "SELECT reserved FROM inventory_positions WHERE location_id = $1 AND sku = $2"
        return int(await connection.fetchval(query, store, sku))
    finally:
        await connection.close()


def test_a_till_sale_is_two_statements_each_its_own_transaction(
    served: Served, truth: DemoEstate
) -> None:
    # given a unit on the shelf of a store; when a till sells it, while the statements to
    # the gateway's database are watched
    placed, request, held = _last_unit_sold(served, truth, key="demo-pos")

    # then the request claimed its key and read the positions in one statement, and then
    # reserved and wrote the whole order (its outbox message and its key's completion with it)
    # in another: two statements in autocommit mode, no BEGIN and no COMMIT of a block
    assert placed["order"] is not None
    assert [(s.action, s.autocommit) for s in request] == [
        ("INSERT idempotency_keys", True),
        (
            "UPDATE inventory_positions, INSERT orders, INSERT order_lines,"
            " INSERT order_allocations, INSERT outbox, UPDATE idempotency_keys",
            True,
        ),
    ]
    assert "inventory_positions" in request[0].statement
    assert held == 1


def test_an_order_with_a_coupon_reserves_counts_and_writes_in_one_transaction(
    served: Served, truth: DemoEstate
) -> None:
    # given a unit on the shelf of a store; when a customer who has not used WELCOME10 yet
    # buys it with the coupon
    placed, request, _ = _last_unit_sold(
        served, truth, key="demo-web", token=_token("C0041"), couponCodes=["WELCOME10"]
    )

    # then the holds, the coupon's count and the order went in one transaction together
    assert placed["order"] is not None
    (order_transaction,) = [s.transaction for s in request if "INSERT orders" in s.action]
    assert not any("INSERT orders" in s.action and s.autocommit for s in request)
    writes = [s.action for s in request if s.transaction is order_transaction]
    assert writes[0] == "UPDATE inventory_positions"
    assert any("coupon_uses" in action for action in writes)


def test_after_the_server_cut_the_connections_an_order_fails_whole_at_most_and_its_retry_works(
    served: Served, truth: DemoEstate
) -> None:
    # given a store selling a SKU, and an order placed through pooled connections
    gateway = served.gateway
    store = _store(truth)
    sku = _stocked(gateway, truth, store, 2)
    before = _available(gateway, sku, store)
    assert _place(gateway, _carry_out(sku, store))["order"] is not None

    # when PostgreSQL ends every connection of the gateway, and an order comes, and comes
    # again with the same idempotency key (as a client retries)
    asyncio.run(_terminate_connections_to(served.database_url))
    order = _carry_out(sku, store)
    first = gateway.graphql(PLACE, {"input": order}, key="demo-pos").json()
    retried = _place(gateway, order)

    # then the first try is placed or fails as a whole with an internal error, the retry
    # gives the order, and the shelf lost the units of exactly two orders
    if first.get("errors"):
        assert first["data"] is None
        assert [e["extensions"]["code"] for e in first["errors"]] == ["INTERNAL_SERVER_ERROR"]
    else:
        assert retried["order"]["id"] == first["data"]["placeOrder"]["order"]["id"]
    assert retried["order"] is not None
    assert _available(gateway, sku, store) == before - 2
