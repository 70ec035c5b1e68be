"""Types and helpers shared by every domain of the graph."""

from __future__ import annotations

import datetime
from collections.abc import Collection
from decimal import Decimal

import strawberry
from graphql import GraphQLError
from strawberry.relay import GlobalID

from adapters.ports import GeoPoint, Money


def user_error(message: str, code: str = "BAD_USER_INPUT") -> GraphQLError:
    """An error the client caused and can fix; shown as is, with ``extensions.code``."""
    return GraphQLError(message, extensions={"code": code})


@strawberry.type(name="Money", description="An amount in a currency (ISO 4217).")
class MoneyType:
    amount: Decimal
    currency: str

    @classmethod
    def from_domain(cls, money: Money) -> MoneyType:
        return cls(amount=money.amount, currency=money.currency)


@strawberry.type(name="GeoPoint")
class GeoPointType:
    lat: float
    lon: float

    @classmethod
    def from_domain(cls, point: GeoPoint) -> GeoPointType:
        return cls(lat=point.lat, lon=point.lon)


@strawberry.input(description="A point on earth, WGS 84 degrees.")
class GeoPointInput:
    lat: float
    lon: float

    def to_domain(self) -> GeoPoint:
        if not (-90 <= self.lat <= 90 and -180 <= self.lon <= 180):
            raise user_error("lat must be within [-90, 90] and lon within [-180, 180]")
        return GeoPoint(self.lat, self.lon)


def check_first(first: int, maximum: int = 100) -> int:
    if not 1 <= first <= maximum:
        raise user_error(f"first must be between 1 and {maximum}")
    return first


def check_radius(radius_km: float | None) -> float | None:
    if radius_km is not None and radius_km <= 0:
        raise user_error("radiusKm must be positive")
    return radius_km


def store_code(store_id: strawberry.ID | str) -> str:
    """A store's code from either its global id (``Store:0001`` encoded) or its code."""
    try:
        global_id = GlobalID.from_id(str(store_id))
    except (ValueError, TypeError):
        return str(store_id)
    if global_id.type_name != "Store":
        raise user_error(f"{store_id} is not a store id")
    return global_id.node_id


def check_known_stores(codes: Collection[str], known: Collection[str]) -> None:
    unknown = sorted(set(codes) - set(known))
    if unknown:
        raise user_error(f"unknown store: {', '.join(unknown)}", code="UNKNOWN_STORE")


def utc(moment: datetime.datetime) -> datetime.datetime:
    return moment.astimezone(datetime.UTC)
