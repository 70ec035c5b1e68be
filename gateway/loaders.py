"""Per-request data loaders: each batches the keys asked in one tick into one port call.

Loaders only load (no pricing, no writes). They are built for every request, so their caches
never outlive it. Catalogue and prices come through the read model; each loader tags the
request's ``Provenance`` with the entities it returned, for the response cache.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import cast

from aiodataloader import DataLoader

from adapters.ports import (
    BackendUnavailable,
    LoyaltyAccount,
    PartialAnswer,
    Price,
    Product,
)
from gateway.backends import Backends
from gateway.degraded import PriceGap, Reason
from gateway.ledger import InventoryLedger, Position
from gateway.readmodel.model import ReadModel
from gateway.readmodel.responses import Provenance
from gateway.readmodel.stock import StockPositions
from gateway.resilience import CircuitOpen

PriceKey = tuple[str, str | None]
"""(SKU, store id or None for the base price zone)."""

PriceLookup = Callable[[Sequence[str], str | None], Awaitable[Mapping[str, Price]]]
LastKnown = Callable[[Sequence[str], str | None], Mapping[str, Price]]
PriceFound = Price | PriceGap | None
"""A price; or why there is none now (with the last known one, for display); or None: the
engine does not price that SKU."""


@dataclass(frozen=True, slots=True)
class Loaders:
    product_by_code: DataLoader[str, Product | None]
    product_by_sku: DataLoader[str, Product | None]
    price_by_sku: DataLoader[PriceKey, PriceFound]
    current_price_by_sku: DataLoader[PriceKey, PriceFound]
    position_by_sku: DataLoader[str, Sequence[Position]]
    current_position_by_sku: DataLoader[str, Sequence[Position]]
    account_by_customer: DataLoader[str, LoyaltyAccount | None]
    account_by_card: DataLoader[str, LoyaltyAccount | None]

    def for_orders(self) -> Loaders:
        """These loaders with prices read from the pricing engine itself, never the read model,
        and never a last known price: an order is priced on the engine's current price. Its
        stock is the ledger's, never positions held for reads."""
        return replace(
            self,
            price_by_sku=self.current_price_by_sku,
            position_by_sku=self.current_position_by_sku,
        )


def build_loaders(
    backends: Backends,
    ledger: InventoryLedger,
    reads: ReadModel,
    provenance: Provenance,
    fresh_prices: PriceLookup,
    stock: StockPositions | None = None,
) -> Loaders:
    """The loaders of one request. Orders' prices are read by ``fresh_prices`` (the
    process's ``SharedPriceReads``), from the engine itself."""

    async def product_by_code(codes: Sequence[str]) -> list[Product | None]:
        found = await reads.products(codes)
        provenance.tag("product:", found)
        return [found.get(code) for code in codes]

    async def product_by_sku(skus: Sequence[str]) -> list[Product | None]:
        found = await reads.products_by_sku(skus)
        provenance.tag("product:", (product.code for product in found.values()))
        return [found.get(sku) for sku in skus]

    async def current_position_by_sku(skus: Sequence[str]) -> list[Sequence[Position]]:
        found = await ledger.positions(skus)
        provenance.tag("stock:", skus)
        provenance.stock_read_at = datetime.now(UTC)
        return [found.get(sku, ()) for sku in skus]

    async def held_position_by_sku(skus: Sequence[str]) -> list[Sequence[Position]]:
        assert stock is not None
        found, read_at = await stock.positions(skus)
        provenance.tag("stock:", skus)
        provenance.stock_read_at = read_at
        return [found.get(sku, ()) for sku in skus]

    async def account_by_customer(ids: Sequence[str]) -> list[LoyaltyAccount | None]:
        found = await backends.loyalty.accounts(ids)
        return [found.get(customer) for customer in ids]

    async def account_by_card(cards: Sequence[str]) -> list[LoyaltyAccount | None]:
        found = await backends.loyalty.accounts_by_card(cards)
        return [found.get(card) for card in cards]

    return Loaders(
        product_by_code=DataLoader(product_by_code),
        product_by_sku=DataLoader(product_by_sku),
        price_by_sku=DataLoader(_prices(reads.prices, provenance, reads.last_known)),
        current_price_by_sku=DataLoader(_prices(_read_now(fresh_prices), provenance)),
        position_by_sku=DataLoader(
            current_position_by_sku if stock is None else held_position_by_sku
        ),
        current_position_by_sku=DataLoader(current_position_by_sku),
        account_by_customer=DataLoader(account_by_customer),
        account_by_card=DataLoader(account_by_card),
    )


def _prices(
    lookup: PriceLookup, provenance: Provenance, last_known: LastKnown | None = None
) -> Callable[[list[PriceKey]], Coroutine[object, object, list[PriceFound]]]:
    """Prices by (SKU, store), one lookup per store. A SKU the engine could not answer for
    (it failed, timed out, its breaker is open) gets a ``PriceGap``, with the last known price
    when ``last_known`` is given; a refusal (an unknown store) fails the keys of that store."""

    async def by_store(skus: list[str], store: str | None) -> Mapping[str, PriceFound]:
        try:
            return await lookup(skus, store)
        except BackendUnavailable as exc:
            found: dict[str, PriceFound] = {}
            unanswered: Sequence[str] = skus
            if isinstance(exc, PartialAnswer):
                found.update(cast(Mapping[str, Price], exc.found))
                unanswered = exc.unanswered
            known = {} if last_known is None else last_known(unanswered, store)
            reason = Reason.of(exc)
            wait = exc.retry_after if isinstance(exc, CircuitOpen) else None
            for sku in unanswered:
                found[sku] = PriceGap(exc.backend, reason, known.get(sku), wait)
            return found

    async def price_by_sku(keys: Sequence[PriceKey]) -> list[PriceFound | BaseException]:
        skus_by_store: dict[str | None, list[str]] = defaultdict(list)
        for sku, store in keys:
            skus_by_store[store].append(sku)
        stores = list(skus_by_store)
        answers = await asyncio.gather(
            *(by_store(skus_by_store[store], store) for store in stores), return_exceptions=True
        )
        found = dict(zip(stores, answers, strict=True))
        provenance.tag("price:", (sku for sku, _ in keys))
        # A store whose lookup raised (a refusal: an unknown store) fails its keys only.
        return [
            answer if isinstance(answer := found[store], BaseException) else answer.get(sku)
            for sku, store in keys
        ]

    return price_by_sku  # type: ignore[return-value]


def _read_now(read: PriceLookup) -> PriceLookup:
    async def lookup(skus: Sequence[str], store: str | None) -> Mapping[str, Price]:
        found = await read(skus, store)
        now = datetime.now(UTC)
        return {sku: replace(price, read_at=now) for sku, price in found.items()}

    return lookup
