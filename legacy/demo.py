"""The demo estate's ground truth: one retailer around Munich, generated from a seed.

This module produces plain, system-neutral data (``DemoEstate``). Each simulated system then
writes its own share of it in its own legacy format (``legacy.pim.write_data`` and friends), so
that the systems disagree on format exactly as real ones do, but never on facts.

Everything is derived from ``random.Random(seed)`` and fixed anchor dates: the same seed and
scale give byte-identical files.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from legacy.demo_promotions import DemoPromotion, build_promotions
from legacy.demo_vocabulary import (
    ADJECTIVES,
    BRANDS,
    CATEGORY_TREE,
    COLORS,
    DCS,
    DISTRICTS,
    FIRST,
    HOURS_DC,
    HOURS_SMALL,
    HOURS_STORE,
    LAST,
    LEAVES,
    MATERIALS,
    TIERS,
)

ANCHOR = datetime(2026, 1, 1, tzinfo=UTC)
"""Stock and catalogue timestamps are spread over the days after this instant."""

CURRENCY = "EUR"
METRO_CENTER = (48.1374, 11.5755)  # Munich, Marienplatz


@dataclass(frozen=True, slots=True)
class Scale:
    name: str
    products: int
    variants_per_product: int
    stores: int
    distribution_centers: int
    customers: int
    extra_promotions: int


SCALES: dict[str, Scale] = {
    "tiny": Scale("tiny", 60, 4, 10, 2, 1000, 0),
    "default": Scale("default", 2000, 4, 60, 2, 1000, 10),
    "large": Scale("large", 12_500, 4, 298, 2, 1000, 470),
}


@dataclass(frozen=True, slots=True)
class DemoCategory:
    code: str
    name_en: str
    name_de: str
    parent: str | None


@dataclass(frozen=True, slots=True)
class DemoVariant:
    sku: str
    product_code: str
    size: str
    color_en: str
    color_de: str
    ean: str
    base_price: Decimal
    compare_at: Decimal | None


@dataclass(frozen=True, slots=True)
class DemoProduct:
    code: str
    name_en: str
    name_de: str
    description_en: str
    description_de: str
    brand: str
    category: str  # leaf category code; the PIM also lists its ancestors
    material: str
    clusters: frozenset[str]  # store clusters the product is ranged in
    variants: tuple[DemoVariant, ...]
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class DemoLocation:
    code: str  # "0001"...; the ERP pads it to CHAR(8)
    name: str
    kind: str  # "STORE" or "DC"
    lat: float
    lon: float
    postal_code: str
    capabilities: frozenset[str]  # SHIP_FROM_STORE, PICKUP, DELIVERY, CARRY_OUT, SHIP
    daily_capacity: int
    opening_hours: tuple[tuple[int, str, str], ...]  # (ISO weekday, "09:00", "20:00")
    cluster: str  # "A" large, "B" medium, "C" small, "DC"
    price_zone: str  # "BASE", "CITY" or "OUTLET"


@dataclass(frozen=True, slots=True)
class DemoHistoryEntry:
    entry_id: str
    at: datetime
    points: int
    reason: str
    reference: str | None


@dataclass(frozen=True, slots=True)
class DemoCustomer:
    id: str  # C0001
    card_number: str  # LC0001
    first_name: str
    last_name: str
    email: str
    tier: str  # BRONZE, SILVER, GOLD, PLATINUM
    points: int
    history: tuple[DemoHistoryEntry, ...]


@dataclass(frozen=True, slots=True)
class StockRow:
    location_code: str
    sku: str
    on_hand: int  # a few are negative, as in real ERPs (sold before the receipt was booked)
    updated_at: datetime


@dataclass(slots=True)
class DemoEstate:
    seed: int
    scale: Scale
    categories: list[DemoCategory]
    products: list[DemoProduct]
    locations: list[DemoLocation]
    customers: list[DemoCustomer]
    promotions: list[DemoPromotion]
    zone_overrides: dict[str, dict[str, Decimal]] = field(default_factory=dict)
    """Zone -> SKU -> price that replaces the base price in that zone."""

    @property
    def skus(self) -> Iterator[DemoVariant]:
        for product in self.products:
            yield from product.variants

    def ranged(self, product: DemoProduct, location: DemoLocation) -> bool:
        return location.kind == "DC" or location.cluster in product.clusters

    def stock_rows(self) -> Iterator[StockRow]:
        """The ERP's STOCK_LEVELS, generated lazily (millions of rows at the large scale)."""
        rng = random.Random(self.seed * 7919 + 1)
        for product in self.products:
            for variant in product.variants:
                for location in self.locations:
                    row = _stock_row(rng, self, product, variant, location)
                    if row is not None:
                        yield row

    def stock_row_estimate(self) -> int:
        variants = self.scale.products * self.scale.variants_per_product
        return int(variants * len(self.locations) * 0.5)


# --------------------------------------------------------------------------- generator


def generate(seed: int = 42, scale: str | Scale = "default") -> DemoEstate:
    """Build the whole estate in memory (stock excepted: see ``DemoEstate.stock_rows``)."""
    size = SCALES[scale] if isinstance(scale, str) else scale
    rng = random.Random(seed)
    categories = _categories()
    products = [_product(rng, number, size) for number in range(1, size.products + 1)]
    locations = _locations(rng, size)
    customers = [_customer(rng, number) for number in range(1, size.customers + 1)]
    estate = DemoEstate(seed, size, categories, products, locations, customers, [])
    estate.zone_overrides = _zone_overrides(rng, products)
    estate.promotions = build_promotions(rng, products, size.extra_promotions)
    return estate


def _categories() -> list[DemoCategory]:
    tree = [DemoCategory(code, en, de, parent) for code, en, de, parent in CATEGORY_TREE]
    tree += [DemoCategory(leaf[0], leaf[1], leaf[2], leaf[3]) for leaf in LEAVES]
    return tree


def _product(rng: random.Random, number: int, size: Scale) -> DemoProduct:
    leaf, _, _, _, nouns, sizes, price_points = rng.choice(LEAVES)
    brand = rng.choice(BRANDS)
    noun = rng.choice(nouns)
    adjective = rng.choice(ADJECTIVES)
    color_en, color_de = rng.choice(COLORS)
    material = rng.choice(MATERIALS)
    code = f"P{number:06d}"
    base = Decimal(rng.choice(price_points))
    on_sale = rng.random() < 0.12
    start = rng.randrange(0, max(1, len(sizes) - size.variants_per_product + 1))
    variants = []
    for index, variant_size in enumerate(sizes[start : start + size.variants_per_product]):
        sku = f"{100_000_000 + number * 10 + index}"
        variants.append(
            DemoVariant(
                sku=sku,
                product_code=code,
                size=variant_size,
                color_en=color_en,
                color_de=color_de,
                ean=_ean13(f"400{int(sku):09d}"),
                base_price=base,
                compare_at=(base * Decimal("1.25")).quantize(Decimal("1")) - Decimal("0.01")
                if on_sale
                else None,
            )
        )
    roll = rng.random()
    clusters = frozenset("A") if roll < 0.3 else frozenset("AB") if roll < 0.7 else frozenset("ABC")
    return DemoProduct(
        code=code,
        name_en=f"{brand} {adjective} {noun}",
        name_de=f"{brand} {adjective} {noun} ({color_de})",
        description_en=f"{adjective} {noun.lower()} by {brand} in {color_en} {material}.",
        description_de=f"{noun} von {brand} aus {material}, Farbe {color_de}.",
        brand=brand,
        category=leaf,
        material=material,
        clusters=clusters,
        variants=tuple(variants),
        updated_at=ANCHOR + timedelta(minutes=rng.randrange(0, 60 * 24 * 30)),
    )


def _ean13(twelve: str) -> str:
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(twelve))
    return twelve + str((10 - total % 10) % 10)


def _locations(rng: random.Random, size: Scale) -> list[DemoLocation]:
    locations = []
    for number in range(1, size.stores + 1):
        district, lat, lon, postal = DISTRICTS[(number - 1) % len(DISTRICTS)]
        round_ = (number - 1) // len(DISTRICTS)
        name = district if round_ == 0 else f"{district} {_roman(round_ + 1)}"
        lat, lon = _jitter(rng, lat, lon, 0.6 + round_ * 1.5)
        cluster = "A" if number % 5 == 1 else "B" if number % 5 in (2, 3) else "C"
        capabilities = {"CARRY_OUT", "PICKUP"}
        if cluster in "AB":
            capabilities.add("SHIP_FROM_STORE")
        if rng.random() < 0.6:
            capabilities.add("DELIVERY")
        zone = "CITY" if postal.startswith("80") and number % 3 == 0 else "BASE"
        if number % 11 == 0:
            zone = "OUTLET"
        locations.append(
            DemoLocation(
                code=f"{number:04d}",
                name=f"Munich {name}" if postal.startswith("8") and lat > 48.05 else name,
                kind="STORE",
                lat=lat,
                lon=lon,
                postal_code=postal,
                capabilities=frozenset(capabilities),
                daily_capacity={"A": 400, "B": 200, "C": 80}[cluster],
                opening_hours=HOURS_SMALL if cluster == "C" else HOURS_STORE,
                cluster=cluster,
                price_zone=zone,
            )
        )
    for index in range(size.distribution_centers):
        name, lat, lon, postal = DCS[index % len(DCS)]
        locations.append(
            DemoLocation(
                code=f"{9001 + index:04d}",
                name=name,
                kind="DC",
                lat=lat,
                lon=lon,
                postal_code=postal,
                capabilities=frozenset({"SHIP"}),
                daily_capacity=5000,
                opening_hours=HOURS_DC,
                cluster="DC",
                price_zone="BASE",
            )
        )
    return locations


def _roman(number: int) -> str:
    return ["I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X", "XI", "XII"][number - 1]


def _jitter(rng: random.Random, lat: float, lon: float, km: float) -> tuple[float, float]:
    distance = km * math.sqrt(rng.random())
    bearing = rng.random() * 2 * math.pi
    dlat = distance * math.cos(bearing) / 111.32
    dlon = distance * math.sin(bearing) / (111.32 * math.cos(math.radians(lat)))
    return round(lat + dlat, 5), round(lon + dlon, 5)


def _customer(rng: random.Random, number: int) -> DemoCustomer:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    roll, tier = rng.random(), "BRONZE"
    for name, share in TIERS:
        if roll < share:
            tier = name
            break
        roll -= share
    history = []
    balance = 0
    for entry in range(rng.randrange(0, 8)):
        points = rng.choice([120, 250, 480, 75, 900, -500, -1000]) if balance >= 1000 else 300
        balance += points
        history.append(
            DemoHistoryEntry(
                entry_id=f"H{number:04d}-{entry + 1:02d}",
                at=ANCHOR - timedelta(days=300 - entry * 30, minutes=rng.randrange(0, 600)),
                points=points,
                reason="PURCHASE" if points > 0 else "REDEMPTION",
                reference=f"R{rng.randrange(10**7, 10**8)}",
            )
        )
    opening = rng.randrange(0, 20_000)
    return DemoCustomer(
        id=f"C{number:04d}",
        card_number=f"LC{number:04d}",
        first_name=first,
        last_name=last,
        email=f"{first.lower()}.{last.lower()}{number}@example.com",
        tier=tier,
        points=opening + balance if number != 1 else 2500 + balance,
        history=tuple(history),
    )


def _zone_overrides(
    rng: random.Random, products: list[DemoProduct]
) -> dict[str, dict[str, Decimal]]:
    overrides: dict[str, dict[str, Decimal]] = {"CITY": {}, "OUTLET": {}}
    for product in products:
        roll = rng.random()
        for variant in product.variants:
            if roll < 0.15:
                overrides["CITY"][variant.sku] = variant.base_price + Decimal("2.00")
            elif roll > 0.9:
                overrides["OUTLET"][variant.sku] = (variant.base_price * Decimal("0.8")).quantize(
                    Decimal("0.01")
                )
    return overrides


def _stock_row(
    rng: random.Random,
    estate: DemoEstate,
    product: DemoProduct,
    variant: DemoVariant,
    location: DemoLocation,
) -> StockRow | None:
    roll = rng.random()
    when = ANCHOR + timedelta(seconds=rng.randrange(0, 60 * 60 * 24 * 20))
    if location.kind == "DC":
        if roll > 0.95:
            return None
        return StockRow(location.code, variant.sku, rng.randrange(0, 400), when)
    if not estate.ranged(product, location):
        # Stray stock in a store that does not range the item (returns, mis-deliveries).
        return StockRow(location.code, variant.sku, 1, when) if roll < 0.01 else None
    if roll > 0.7:
        return None
    quantity = rng.random()
    if quantity < 0.08:
        on_hand = 0
    elif quantity < 0.14:
        on_hand = 1
    elif quantity < 0.142:
        on_hand = -rng.randrange(1, 3)
    else:
        on_hand = 2 + int(rng.expovariate(1 / 8))
    return StockRow(location.code, variant.sku, on_hand, when)
