"""The live hub and its mailboxes: what a subscriber is given, and when it is let go."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from gateway.ledger import Position
from gateway.live import LiveHub, Mailbox, TooSlow
from gateway.readmodel.bus import ChangeBus


async def test_a_lagging_consumer_gets_the_latest_value_per_key_oldest_first() -> None:
    mailbox: Mailbox[str, int] = Mailbox(max_lag=60)

    for key, value in [("a", 1), ("b", 2), ("a", 3), ("c", 4), ("a", 5)]:
        mailbox.put(key, value)

    assert await mailbox.take() == [5, 2, 4]
    assert len(mailbox) == 0


async def test_a_consumer_past_the_lag_limit_is_let_go_once_and_told_so() -> None:
    calls: list[str] = []
    mailbox: Mailbox[str, int] = Mailbox(max_lag=0.01, too_slow=lambda: calls.append("slow"))
    mailbox.put("a", 1)
    await asyncio.sleep(0.02)

    mailbox.put("b", 2)
    mailbox.put("c", 3)

    assert calls == ["slow"]
    assert len(mailbox) == 0
    with pytest.raises(TooSlow):
        await mailbox.take()


class Positions:
    """The ledger's positions, as a test sets them."""

    def __init__(self) -> None:
        self.held: dict[str, list[Position]] = {}

    async def positions(self, skus: Sequence[str]) -> dict[str, list[Position]]:
        return {sku: self.held[sku] for sku in skus if sku in self.held}


async def _no_prices(skus: list[str], store: str | None) -> dict[str, object]:
    return {}


async def test_a_notice_gives_subscribers_only_the_positions_it_names_that_changed() -> None:
    # given a subscriber on SKUs A and B at location L, with their initial numbers
    ledger, bus, stop = Positions(), ChangeBus(None), asyncio.Event()
    ledger.held = {"A": [Position("A", "L", 5, 0, 1)], "B": [Position("B", "L", 7, 0, 1)]}
    hub = LiveHub(bus, ledger, _no_prices)  # type: ignore[arg-type]
    worker = asyncio.create_task(hub.run(stop))
    updates = hub.stock(["A", "B"], ["L"], initial=True)
    first = await anext(updates)

    # when both move in the ledger but a notice names only A
    ledger.held = {"A": [Position("A", "L", 5, 2, 1)], "B": [Position("B", "L", 9, 0, 1)]}
    bus.deliver_here("ledger", ["A"])
    second = await asyncio.wait_for(anext(updates), 5)
    stop.set()
    await updates.aclose()
    await worker

    # then only A's new numbers come, as available to promise shows them
    assert sorted((e.sku, e.available) for e in first) == [("A", 4), ("B", 6)]
    assert [(e.sku, e.available, e.reserved) for e in second] == [("A", 2, 2)]
    assert hub.subscriptions == 0
