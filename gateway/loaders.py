"""Per-request data loaders: each batches the keys asked in one tick into one port call.

Loaders only load (no pricing, no writes). They are built for every request, so their caches
never outlive it.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from aiodataloader import DataLoader

from adapters.ports import LoyaltyAccount, Price, Product
from gateway.backends import Backends
from gateway.ledger import InventoryLedger, Position

PriceKey = tuple[str, str | None]
"""(SKU, store id or None for the base price zone)."""


@dataclass(frozen=True, slots=True)
class Loaders:
    product_by_code: DataLoader[str, Product | None]
    product_by_sku: DataLoader[str, Product | None]
    price_by_sku: DataLoader[PriceKey, Price | None]
    position_by_sku: DataLoader[str, Sequence[Position]]
    account_by_customer: DataLoader[str, LoyaltyAccount | None]
    account_by_card: DataLoader[str, LoyaltyAccount | None]


def build_loaders(backends: Backends, ledger: InventoryLedger) -> Loaders:
    async def product_by_code(codes: Sequence[str]) -> list[Product | None]:
        found = await backends.catalogue.products(codes)
        return [found.get(code) for code in codes]

    async def product_by_sku(skus: Sequence[str]) -> list[Product | None]:
        found = await backends.catalogue.products_by_sku(skus)
        return [found.get(sku) for sku in skus]

    async def price_by_sku(keys: Sequence[PriceKey]) -> list[Price | None]:
        by_store: dict[str | None, list[str]] = defaultdict(list)
        for sku, store in keys:
            by_store[store].append(sku)
        stores = list(by_store)
        answers = await asyncio.gather(
            *(backends.prices.prices(by_store[store], store) for store in stores)
        )
        found = dict(zip(stores, answers, strict=True))
        return [found[store].get(sku) for sku, store in keys]

    async def position_by_sku(skus: Sequence[str]) -> list[Sequence[Position]]:
        found = await ledger.positions(skus)
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
        price_by_sku=DataLoader(price_by_sku),
        position_by_sku=DataLoader(position_by_sku),
        account_by_customer=DataLoader(account_by_customer),
        account_by_card=DataLoader(account_by_card),
    )
