"""Fresh prices for orders: the orders of one price zone that ask at about the same time
share one call to the pricing engine.

An order is priced on the engine's current prices, never the read model's (docs/orders.md),
so every order used to cost the engine a call of its own, and the gateway the CPU of a SOAP
round trip. ``SharedPriceReads`` puts the lookups of a zone (a store, or the base zone) into
batches: a lookup never takes the answer of a call that was already on its way when it asked
(that answer may be older than the order), it joins the batch that goes next. A batch goes at
the next turn of the event loop when fewer than ``calls_per_zone`` calls of its zone are out,
otherwise as soon as one comes back. An order alone goes at once; under load an order waits
for at most one call to come back before its own goes, and the engine sees at most
``calls_per_zone`` calls per zone from a process however many orders come.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

from adapters.ports import PartialAnswer, Price
from gateway.loaders import PriceLookup


@dataclass(slots=True)
class _Batch:
    """The lookups that go together: every SKU asked, and each lookup's SKUs and future."""

    skus: dict[str, None] = field(default_factory=dict)
    waiting: list[tuple[Sequence[str], asyncio.Future[Mapping[str, Price]]]] = field(
        default_factory=list
    )

    def join(self, skus: Sequence[str]) -> asyncio.Future[Mapping[str, Price]]:
        self.skus.update(dict.fromkeys(skus))
        future: asyncio.Future[Mapping[str, Price]] = asyncio.get_running_loop().create_future()
        self.waiting.append((skus, future))
        return future


@dataclass(slots=True)
class _Zone:
    out: int = 0  # calls on their way
    forming: _Batch | None = None  # the batch that goes next


class SharedPriceReads:
    """A ``PriceLookup`` over ``lookup`` whose concurrent lookups of a zone share calls (see
    the module docstring). Each lookup gets the prices of its own SKUs, or the failure of the
    call it went with: a ``PartialAnswer`` only when some of its own SKUs went unanswered."""

    def __init__(self, lookup: PriceLookup, *, calls_per_zone: int = 1) -> None:
        if calls_per_zone < 1:
            raise ValueError("a zone needs at least one call at a time")
        self._lookup = lookup
        self._calls = calls_per_zone
        self._zones: dict[str | None, _Zone] = {}
        self._running: set[asyncio.Task[None]] = set()
        self.calls = 0  # calls made, for tests and metrics

    async def __call__(self, skus: Sequence[str], store: str | None) -> Mapping[str, Price]:
        zone = self._zones.setdefault(store, _Zone())
        batch = zone.forming
        if batch is None:
            batch = zone.forming = _Batch()
            if zone.out < self._calls:
                asyncio.get_running_loop().call_soon(self._go, store, zone)
        # A lookup given up on (its request cancelled) leaves the batch to the others.
        return await batch.join(skus)

    async def aclose(self) -> None:
        """Cancel the calls on their way (their lookups are cancelled with them)."""
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)

    def _go(self, store: str | None, zone: _Zone) -> None:
        batch = zone.forming
        if batch is None or zone.out >= self._calls:
            return  # gone with an earlier turn, or it waits for a call to come back
        zone.forming = None
        zone.out += 1
        self.calls += 1
        task = asyncio.create_task(self._call(store, zone, batch))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _call(self, store: str | None, zone: _Zone, batch: _Batch) -> None:
        try:
            found = await self._lookup(list(batch.skus), store)
        except asyncio.CancelledError:
            for _, future in batch.waiting:
                future.cancel()
            raise
        except Exception as exc:  # each lookup raises it, as its own call would have
            for skus, future in batch.waiting:
                if not future.done():
                    _fail(future, skus, exc)
        else:
            for skus, future in batch.waiting:
                if not future.done():
                    future.set_result({sku: found[sku] for sku in skus if sku in found})
        finally:
            zone.out -= 1
            if zone.forming is not None:
                self._go(store, zone)


def _fail(
    future: asyncio.Future[Mapping[str, Price]], skus: Sequence[str], error: Exception
) -> None:
    """Fail one lookup with the call's ``error``, narrowed to its own SKUs when the call was
    answered in part: a lookup whose SKUs were all answered gets its prices."""
    if not isinstance(error, PartialAnswer):
        future.set_exception(error)
        return
    answered = cast(Mapping[str, Price], error.found)
    found = {sku: answered[sku] for sku in skus if sku in answered}
    unanswered = set(error.unanswered)
    missing = [sku for sku in skus if sku in unanswered]
    if not missing:
        future.set_result(found)
        return
    future.set_exception(PartialAnswer(error.backend, error.detail, found, missing))
