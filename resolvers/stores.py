"""Stores and distribution centres: the location directory as the graph shows it."""

from __future__ import annotations

import datetime
import enum
from collections.abc import Iterable
from typing import Annotated, Final

import strawberry
from strawberry import relay

from adapters.ports import Location, Money, OpeningHours
from gateway.context import Info
from resolvers.common import (
    GeoPointInput,
    GeoPointType,
    MoneyType,
    check_first,
    check_radius,
    user_error,
)

SALES_SCOPE = "sales:read"


@strawberry.enum(name="LocationKind")
class LocationKindType(enum.Enum):
    STORE = "STORE"
    DISTRIBUTION_CENTER = "DISTRIBUTION_CENTER"


@strawberry.enum(description="What a location can do for an order.")
class Capability(enum.Enum):
    CARRY_OUT = "CARRY_OUT"
    PICKUP = "PICKUP"
    SHIP_FROM_STORE = "SHIP_FROM_STORE"
    DELIVERY = "DELIVERY"
    SHIP = "SHIP"


@strawberry.type(name="OpeningHours")
class OpeningHoursType:
    weekday: int = strawberry.field(description="ISO weekday: 1 is Monday, 7 is Sunday.")
    opens: str = strawberry.field(description="Local time, HH:MM.")
    closes: str = strawberry.field(description="Local time, HH:MM.")

    @classmethod
    def from_domain(cls, hours: OpeningHours) -> OpeningHoursType:
        return cls(
            weekday=hours.weekday,
            opens=hours.opens.strftime("%H:%M"),
            closes=hours.closes.strftime("%H:%M"),
        )


SHOWN_MEMORY: Final = 10_000  # (store, distance) pairs: stores near the points asked about
_SHOWN: dict[tuple[str, float | None], StoreType] = {}


@strawberry.type(
    name="Store", description="A store or a distribution centre (kind DISTRIBUTION_CENTER)."
)
class StoreType(relay.Node):
    # Listings show a store per variant and line, usually just its code or name: everything
    # else is resolved only when asked for.
    code: str
    name: str
    distance_km: float | None = strawberry.field(
        description="Distance from the point asked about, when one was given."
    )
    domain: strawberry.Private[Location]

    @classmethod
    def from_domain(cls, location: Location, distance_km: float | None = None) -> StoreType:
        distance = None if distance_km is None else round(distance_km, 3)
        return cls(code=location.id, name=location.name, distance_km=distance, domain=location)

    @classmethod
    def shown(cls, location: Location, distance_km: float | None = None) -> StoreType:
        """``from_domain``, remembered: a listing shows the same few stores near a point once
        per variant, hundreds of times. An entry is made again when the store master was
        reloaded (another ``Location`` object)."""
        key = (location.id, distance_km)
        found = _SHOWN.get(key)
        if found is None or found.domain is not location:
            if len(_SHOWN) >= SHOWN_MEMORY:
                _SHOWN.clear()
            found = _SHOWN[key] = cls.from_domain(location, distance_km)
        return found

    @classmethod
    def resolve_id(cls, root: StoreType, *, info: Info) -> str:
        return root.code

    @strawberry.field
    def kind(self) -> LocationKindType:
        return LocationKindType(self.domain.kind.value)

    @strawberry.field
    def location(self) -> GeoPointType:
        return GeoPointType.from_domain(self.domain.point)

    @strawberry.field
    def postal_code(self) -> str:
        return self.domain.postal_code

    @strawberry.field
    def capabilities(self) -> list[Capability]:
        return [Capability(capability) for capability in sorted(self.domain.capabilities)]

    @strawberry.field
    def opening_hours(self) -> list[OpeningHoursType]:
        return [OpeningHoursType.from_domain(hours) for hours in self.domain.opening_hours]

    @strawberry.field(
        description="Orders credited to this store (placed at its till, picked up there, or "
        "delivered nearest to it) in [from, to), less refunds; needs the sales:read scope."
    )
    async def attributed_sales(
        self,
        info: Info,
        from_: Annotated[datetime.datetime, strawberry.argument(name="from")],
        to: datetime.datetime,
    ) -> AttributedSales:
        if not info.context.channel.allows(SALES_SCOPE):
            raise user_error("this channel may not read sales figures", code="FORBIDDEN")
        if from_.tzinfo is None or to.tzinfo is None or from_ >= to:
            raise user_error("from and to need a time zone, and from must come before to")
        info.context.provenance.shareable = False  # orders move these figures: no feed says so
        reader = info.context.runtime.orders.reader
        found = await reader.attributed_sales([self.code], from_, to)
        count, amount, currency = found[self.code]
        shop = info.context.runtime.point_value.currency
        return AttributedSales(
            orders=count, total=MoneyType.from_domain(Money(amount, currency or shop))
        )

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[StoreType | None]:
        directory = await info.context.runtime.locations.by_id()
        found = [directory.get(code) for code in node_ids]
        return [None if loc is None else cls.from_domain(loc) for loc in found]


@strawberry.type
class AttributedSales:
    orders: int
    total: MoneyType


@strawberry.type
class StoreQuery:
    @strawberry.field(description="Stores and distribution centres, nearest first when `near`.")
    async def stores(
        self,
        info: Info,
        near: GeoPointInput | None = None,
        radius_km: float | None = None,
        capability: Capability | None = None,
        first: int = 50,
    ) -> list[StoreType]:
        check_first(first, maximum=500)
        wanted = None if capability is None else capability.value
        directory = info.context.runtime.locations
        if near is None:
            every = await directory.all()
            chosen = [loc for loc in every if wanted is None or wanted in loc.capabilities]
            return [StoreType.from_domain(loc) for loc in chosen[:first]]
        found = await directory.near(near.to_domain(), check_radius(radius_km), wanted)
        return [StoreType.from_domain(loc, distance) for loc, distance in found[:first]]
