"""A listing page's prices and stock, asked for in one round before its variants resolve.

Every variant of a page asks for its price and stock; the loaders batch those asks into one
call each anyway, but each ask would still be an awaitable field that GraphQL schedules on its
own. Asking for the page's prices and stock up front, when the query selects them, lets each
variant field answer from the loaders' cache (``now_or_later``).

The stock comes from the gateway's own ledger and is awaited: it is back within a few
milliseconds. Prices the read model holds in this process are awaited too: they are back
within a few turns of the event loop, and every price field then answers at once instead of
being scheduled as a task of its own. Other prices come from the pricing system, a network
round away, and are only sent for: while they travel, GraphQL builds the rest of the page
(names, attributes, stock), and only the price fields wait for them. The page's CPU and the
pricing round overlap instead of adding up.
"""

from __future__ import annotations

import asyncio
import contextlib
from asyncio import Future
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar, cast

from strawberry.types.nodes import FragmentSpread, InlineFragment, SelectedField, Selection

from adapters.ports import Product
from gateway.context import Info

Value = TypeVar("Value")
Result = TypeVar("Result")

VARIANT_PATH = ("edges", "node", "variants")


def now_or_later(future: Future[Value], then: Callable[[Value], Result]) -> Result:
    """``then(value)`` at once when ``future`` is already resolved; otherwise an awaitable of
    it, which GraphQL awaits (typed as the result, as GraphQL treats both alike)."""
    if future.done():
        return then(future.result())

    async def later() -> Result:
        return then(await future)

    return cast(Result, later())


async def prefetch_page(info: Info, products: Sequence[Product]) -> None:
    """Ask for the prices (base zone) and stock of every variant of ``products`` that the query
    selects, in one concurrent round; wait for the stock only. Failures stay in the loaders, to
    surface per field."""
    fields = _variant_fields(info)
    skus = [variant.sku for product in products for variant in product.variants]
    loaders = info.context.loaders
    prices: Future[Any] | None = None
    if any(field.arguments.get("storeId") is None for field in fields.get("price", [])):
        prices = loaders.price_by_sku.load_many([(sku, None) for sku in skus])
        # The price fields await each price; this only marks the batch's failure as seen.
        prices.add_done_callback(_consume)
    if "availability" in fields or "totalAvailable" in fields:
        with contextlib.suppress(Exception):
            await loaders.position_by_sku.load_many(skus)
    if prices is not None and info.context.runtime.reads.holds_prices(skus):
        await asyncio.wait([prices])


def _consume(future: Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _variant_fields(info: Info) -> dict[str, list[SelectedField]]:
    level = _named(_flatten([info.selected_fields]), info.field_name)
    for name in VARIANT_PATH:
        level = _named(_flatten(field.selections for field in level), name)
    found: dict[str, list[SelectedField]] = {}
    for field in _flatten(field.selections for field in level):
        found.setdefault(field.name, []).append(field)
    return found


def _named(fields: Iterable[SelectedField], name: str) -> list[SelectedField]:
    return [field for field in fields if field.name == name]


def _flatten(groups: Iterable[Iterable[Selection]]) -> list[SelectedField]:
    fields: list[SelectedField] = []
    for group in groups:
        for selection in group:
            if isinstance(selection, SelectedField):
                fields.append(selection)
            elif isinstance(selection, FragmentSpread | InlineFragment):
                fields += _flatten([selection.selections])
    return fields
