"""The set of legacy backends the gateway talks to, one port each."""

from __future__ import annotations

from dataclasses import dataclass

from adapters.ports import (
    CataloguePort,
    InventoryPort,
    LoyaltyPort,
    OrderIntakePort,
    PricesPort,
    PromotionsPort,
)


@dataclass(frozen=True, slots=True)
class Backends:
    """One implementation per port, built by the composition root (``gateway.app``)."""

    catalogue: CataloguePort
    prices: PricesPort
    promotions: PromotionsPort
    inventory: InventoryPort
    loyalty: LoyaltyPort
    orders: OrderIntakePort

    async def aclose(self) -> None:
        for port in (
            self.catalogue,
            self.prices,
            self.promotions,
            self.inventory,
            self.loyalty,
            self.orders,
        ):
            await port.aclose()
