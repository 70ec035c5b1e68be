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

from aiodataloader import DataLoader

from adapters.ports import LoyaltyAccount, Price, Product
from gateway.backends import Backends
from gateway.ledger import InventoryLedger, Position
from gateway.readmodel.model import ReadModel
from gateway.readmodel.responses import Provenance

PriceKey = tuple[str, str | None]
"""(SKU, store id or None for the base price zone)."""

PriceLookup = Callable[[Sequence[str], str | None], Awaitable[Mapping[str, Price]]]


@dataclass(frozen=True, slots=True)
class Loaders:
    product_by_code: DataLoader[str, Product | None]
    product_by_sku: DataLoader[str, Product | None]
    price_by_sku: DataLoader[PriceKey, Price | None]
    current_price_by_sku: DataLoader[PriceKey, Price | None]
    position_by_sku: DataLoader[str, Sequence[Position]]
    account_by_customer: DataLoader[str, LoyaltyAccount | None]
    account_by_card: DataLoader[str, LoyaltyAccount | None]

    def for_orders(self) -> Loaders:
        """These loaders with prices read from the pricing engine itself, never the read model:
        an order is priced on the engine's current price."""
        return replace(self, price_by_sku=self.current_price_by_sku)


def build_loaders(
    backends: Backends,
    ledger: InventoryLedger,
    reads: ReadModel,
    provenance: Provenance,
) -> Loaders:
    async def product_by_code(codes: Sequence[str]) -> list[Product | None]:
        found = await reads.products(codes)
        provenance.tag("product:", found)
        return [found.get(code) for code in codes]

    async def product_by_sku(skus: Sequence[str]) -> list[Product | None]:
        found = await reads.products_by_sku(skus)
        provenance.tag("product:", (product.code for product in found.values()))
        return [found.get(sku) for sku in skus]

    async def position_by_sku(skus: Sequence[str]) -> list[Sequence[Position]]:
        found = await ledger.positions(skus)
        provenance.tag("stock:", skus)
        provenance.stock_read_at = datetime.now(UTC)
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
        price_by_sku=DataLoader(_prices(reads.prices, provenance)),
        current_price_by_sku=DataLoader(_prices(_read_now(backends), provenance)),
        position_by_sku=DataLoader(position_by_sku),
        account_by_customer=DataLoader(account_by_customer),
        account_by_card=DataLoader(account_by_card),
    )


def _prices(
    lookup: PriceLookup, provenance: Provenance
) -> Callable[[list[PriceKey]], Coroutine[object, object, list[Price | None]]]:
    async def price_by_sku(keys: Sequence[PriceKey]) -> list[Price | None]:
        by_store: dict[str | None, list[str]] = defaultdict(list)
        for sku, store in keys:
            by_store[store].append(sku)
        stores = list(by_store)
        answers = await asyncio.gather(*(lookup(by_store[store], store) for store in stores))
        found = dict(zip(stores, answers, strict=True))
        provenance.tag("price:", (sku for sku, _ in keys))
        return [found[store].get(sku) for sku, store in keys]

    return price_by_sku


def _read_now(backends: Backends) -> PriceLookup:
    async def lookup(skus: Sequence[str], store: str | None) -> Mapping[str, Price]:
        found = await backends.prices.prices(skus, store)
        now = datetime.now(UTC)
        return {sku: replace(price, read_at=now) for sku, price in found.items()}

    return lookup
