"""A listing page's prices and stock, fetched in one round before its variants resolve.

Every variant of a page asks for its price and stock; the loaders batch those asks into one
call each anyway, but each ask would still be an awaitable field that GraphQL schedules on its
own. Fetching the page's prices and stock up front, when the query selects them, lets each
variant field answer at once from the loaders' cache (``now_or_later``).
"""

from __future__ import annotations

import asyncio
from asyncio import Future
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TypeVar, cast

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
    """Load the prices (base zone) and stock of every variant of ``products`` that the query
    selects, in one concurrent round. Failures stay in the loaders, to surface per field."""
    fields = _variant_fields(info)
    skus = [variant.sku for product in products for variant in product.variants]
    loaders = info.context.loaders
    waits: list[Awaitable[object]] = []
    if "availability" in fields or "totalAvailable" in fields:
        waits.append(loaders.position_by_sku.load_many(skus))
    if any(field.arguments.get("storeId") is None for field in fields.get("price", [])):
        waits.append(loaders.price_by_sku.load_many([(sku, None) for sku in skus]))
    if waits:
        await asyncio.gather(*waits, return_exceptions=True)


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
