"""The set of legacy backends the gateway talks to, one port each."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
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


Method = Callable[..., Awaitable[object]]


class WrappedPort:
    """A stand-in for a port whose coroutine methods (except ``aclose``) are replaced by
    ``wrap(name, method)``; anything else is read from the port.

    The methods are set on the instance, so protocol checks, which look attributes up
    statically on Python 3.12 and later, find them.
    """

    def __init__(self, port: object, wrap: Callable[[str, Method], Method]) -> None:
        self._port = port
        for name in dir(port):
            if name.startswith("_"):
                continue
            attribute = getattr(port, name)
            if name != "aclose" and inspect.iscoroutinefunction(attribute):
                setattr(self, name, wrap(name, attribute))
            elif callable(attribute):
                setattr(self, name, attribute)

    def __getattr__(self, name: str) -> object:
        # Only reached for what __init__ did not copy: the port's plain attributes.
        return getattr(self._port, name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._port!r})"
