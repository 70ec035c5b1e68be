"""The demo estate's promotions: at least one of every rule kind, gated and ungated."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from legacy.demo import DemoProduct


@dataclass(frozen=True, slots=True)
class DemoPromotion:
    """A promotion in neutral form; ``legacy.promotions`` writes it as the tool's CSV.

    ``kind`` is one of PERCENT_OFF, AMOUNT_OFF, FIXED_PRICE, MULTI_BUY, BUY_X_GET_Y,
    BUNDLE_PRICE, BASKET_THRESHOLD. ``value_type`` is PERCENT or AMOUNT (for thresholds and
    BUY_X_GET_Y's discount on the free items; 100 percent means free).
    """

    id: str
    title: str
    kind: str
    value: Decimal
    value_type: str
    skus: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    brands: tuple[str, ...] = ()
    valid_from: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    valid_until: datetime = datetime(2031, 1, 1, tzinfo=UTC)
    priority: int = 0
    exclusive: bool = False
    stacking_group: str | None = None
    buy_quantity: int = 0
    pay_quantity: int = 0
    get_quantity: int = 0
    bundle_skus: tuple[str, ...] = ()
    threshold: Decimal | None = None
    coupon_code: str | None = None
    coupon_max_uses: int | None = None
    coupon_max_uses_per_customer: int | None = None
    tiers: tuple[str, ...] = ()
    customer_id: str | None = None
    extra_points: int = 0


def build_promotions(
    rng: random.Random, products: Sequence[DemoProduct], extra: int
) -> list[DemoPromotion]:
    """At least one promotion of every rule kind, gated and ungated, plus filler at scale."""
    socks = [p for p in products if p.category == "apparel/socks"] or products[:3]
    sneakers = [p for p in products if p.category == "footwear/sneakers"] or products[3:6]
    jackets = [p for p in products if p.category == "outdoor/jackets"] or products[6:9]
    kitchen = [p for p in products if p.category == "home/kitchen"] or products[9:12]

    def skus(group: Sequence[DemoProduct], count: int) -> tuple[str, ...]:
        chosen = group[:count]
        return tuple(v.sku for p in chosen for v in p.variants)

    d = Decimal
    brand_a, brand_b = products[0].brand, products[1].brand
    expired = datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 12, 31, tzinfo=UTC)
    future = datetime(2031, 1, 1, tzinfo=UTC), datetime(2032, 1, 1, tzinfo=UTC)
    bundle = (sneakers[0].variants[0].sku, socks[0].variants[0].sku)
    promotions = [
        DemoPromotion(
            "PR001",
            "20% off outdoor jackets",
            "PERCENT_OFF",
            d(20),
            "PERCENT",
            categories=("outdoor/jackets",),
            priority=10,
            stacking_group="CATEGORY",
        ),
        DemoPromotion(
            "PR002",
            f"15% off {brand_a}",
            "PERCENT_OFF",
            d(15),
            "PERCENT",
            brands=(brand_a,),
            priority=5,
            stacking_group="BRAND",
        ),
        DemoPromotion(
            "PR003",
            "10% off selected sneakers",
            "PERCENT_OFF",
            d(10),
            "PERCENT",
            skus=skus(sneakers, 3),
            priority=8,
        ),
        DemoPromotion(
            "PR004",
            "5.00 off kitchen",
            "AMOUNT_OFF",
            d("5.00"),
            "AMOUNT",
            categories=("home/kitchen",),
            priority=6,
        ),
        DemoPromotion(
            "PR005",
            f"3.00 off {brand_b}",
            "AMOUNT_OFF",
            d("3.00"),
            "AMOUNT",
            brands=(brand_b,),
            priority=4,
            stacking_group="BRAND",
        ),
        DemoPromotion(
            "PR006",
            "Jacket price hit 99.00",
            "FIXED_PRICE",
            d("99.00"),
            "AMOUNT",
            skus=skus(jackets, 2),
            priority=20,
            exclusive=True,
        ),
        DemoPromotion(
            "PR007",
            "Kitchen basics 7.99",
            "FIXED_PRICE",
            d("7.99"),
            "AMOUNT",
            skus=skus(kitchen, 1),
            priority=12,
        ),
        DemoPromotion(
            "PR008",
            "3 for 2 on socks",
            "MULTI_BUY",
            d(0),
            "PERCENT",
            categories=("apparel/socks",),
            buy_quantity=3,
            pay_quantity=2,
            priority=15,
            stacking_group="MULTI",
        ),
        DemoPromotion(
            "PR009",
            "5 for 3 on kids basics",
            "MULTI_BUY",
            d(0),
            "PERCENT",
            categories=("apparel/kids/basics",),
            buy_quantity=5,
            pay_quantity=3,
            priority=15,
            stacking_group="MULTI",
        ),
        DemoPromotion(
            "PR010",
            "Buy 2 tops, get 1 free",
            "BUY_X_GET_Y",
            d(100),
            "PERCENT",
            categories=("apparel/women/tops",),
            buy_quantity=2,
            get_quantity=1,
            priority=14,
            stacking_group="MULTI",
        ),
        DemoPromotion(
            "PR011",
            "Buy 1 shirt, get the 2nd half price",
            "BUY_X_GET_Y",
            d(50),
            "PERCENT",
            categories=("apparel/men/shirts",),
            buy_quantity=1,
            get_quantity=1,
            priority=14,
            stacking_group="MULTI",
        ),
        DemoPromotion(
            "PR012",
            "Sneaker + socks bundle 79.00",
            "BUNDLE_PRICE",
            d("79.00"),
            "AMOUNT",
            bundle_skus=bundle,
            priority=18,
            exclusive=True,
        ),
        DemoPromotion(
            "PR013",
            "Trek set: backpack + boots 199.00",
            "BUNDLE_PRICE",
            d("199.00"),
            "AMOUNT",
            bundle_skus=_bundle_pair(products, "outdoor/backpacks", "footwear/boots"),
            priority=18,
        ),
        DemoPromotion(
            "PR014",
            "Spend 100, save 10",
            "BASKET_THRESHOLD",
            d("10.00"),
            "AMOUNT",
            threshold=d("100.00"),
            priority=1,
            stacking_group="BASKET",
        ),
        DemoPromotion(
            "PR015",
            "Spend 250, save 15%",
            "BASKET_THRESHOLD",
            d(15),
            "PERCENT",
            threshold=d("250.00"),
            priority=2,
            stacking_group="BASKET",
        ),
        DemoPromotion(
            "PR016",
            "Spend 50, save 5",
            "BASKET_THRESHOLD",
            d("5.00"),
            "AMOUNT",
            threshold=d("50.00"),
            priority=1,
            stacking_group="BASKET",
        ),
        DemoPromotion(
            "PR017",
            "Coupon WELCOME10: 10% off everything",
            "PERCENT_OFF",
            d(10),
            "PERCENT",
            coupon_code="WELCOME10",
            coupon_max_uses=10_000,
            coupon_max_uses_per_customer=1,
            priority=3,
            stacking_group="COUPON",
        ),
        DemoPromotion(
            "PR018",
            "Coupon SOCKS5: 5.00 off socks",
            "AMOUNT_OFF",
            d("5.00"),
            "AMOUNT",
            categories=("apparel/socks",),
            coupon_code="SOCKS5",
            coupon_max_uses=500,
            priority=3,
            stacking_group="COUPON",
        ),
        DemoPromotion(
            "PR019",
            "Coupon SAVE20 on 150",
            "BASKET_THRESHOLD",
            d("20.00"),
            "AMOUNT",
            threshold=d("150.00"),
            coupon_code="SAVE20",
            coupon_max_uses=100,
            coupon_max_uses_per_customer=2,
            priority=2,
            stacking_group="COUPON",
        ),
        DemoPromotion(
            "PR020",
            "Coupon SHOES3FOR2",
            "MULTI_BUY",
            d(0),
            "PERCENT",
            categories=("footwear",),
            buy_quantity=3,
            pay_quantity=2,
            coupon_code="SHOES3FOR2",
            coupon_max_uses=50,
            priority=16,
        ),
        DemoPromotion(
            "PR021",
            "Coupon BUNDLE49: trail bundle",
            "BUNDLE_PRICE",
            d("49.00"),
            "AMOUNT",
            bundle_skus=_bundle_pair(products, "apparel/socks", "outdoor/backpacks"),
            coupon_code="BUNDLE49",
            priority=17,
        ),
        DemoPromotion(
            "PR022",
            "Coupon JACKET99",
            "FIXED_PRICE",
            d("99.00"),
            "AMOUNT",
            categories=("outdoor/jackets",),
            coupon_code="JACKET99",
            priority=19,
            exclusive=True,
        ),
        DemoPromotion(
            "PR023",
            "Gold & Platinum: 10% off footwear",
            "PERCENT_OFF",
            d(10),
            "PERCENT",
            categories=("footwear",),
            tiers=("GOLD", "PLATINUM"),
            priority=7,
            stacking_group="TIER",
        ),
        DemoPromotion(
            "PR024",
            "Platinum: spend 200, save 30",
            "BASKET_THRESHOLD",
            d("30.00"),
            "AMOUNT",
            threshold=d("200.00"),
            tiers=("PLATINUM",),
            priority=2,
            stacking_group="TIER",
        ),
        DemoPromotion(
            "PR025",
            "Silver and up: 2.00 off home",
            "AMOUNT_OFF",
            d("2.00"),
            "AMOUNT",
            categories=("home",),
            tiers=("SILVER", "GOLD", "PLATINUM"),
            priority=4,
            stacking_group="TIER",
        ),
        DemoPromotion(
            "PR026",
            "Gold: buy 2 socks get 1 free",
            "BUY_X_GET_Y",
            d(100),
            "PERCENT",
            categories=("apparel/socks",),
            buy_quantity=2,
            get_quantity=1,
            tiers=("GOLD", "PLATINUM"),
            priority=15,
            stacking_group="MULTI",
        ),
        DemoPromotion(
            "PR027",
            "Personal offer: 25% off boots",
            "PERCENT_OFF",
            d(25),
            "PERCENT",
            categories=("footwear/boots",),
            customer_id="C0001",
            priority=9,
            stacking_group="PERSONAL",
        ),
        DemoPromotion(
            "PR028",
            "Personal offer: 10.00 off",
            "AMOUNT_OFF",
            d("10.00"),
            "AMOUNT",
            skus=skus(jackets, 1),
            customer_id="C0002",
            priority=9,
            stacking_group="PERSONAL",
        ),
        DemoPromotion(
            "PR029",
            "Double points on outdoor",
            "PERCENT_OFF",
            d(0),
            "PERCENT",
            categories=("outdoor",),
            extra_points=100,
            priority=0,
        ),
        DemoPromotion(
            "PR030",
            "Winter sale 2025 (ended)",
            "PERCENT_OFF",
            d(30),
            "PERCENT",
            categories=("outdoor",),
            valid_from=expired[0],
            valid_until=expired[1],
            priority=10,
        ),
        DemoPromotion(
            "PR031",
            "Summer 2031 preview",
            "PERCENT_OFF",
            d(20),
            "PERCENT",
            categories=("apparel",),
            valid_from=future[0],
            valid_until=future[1],
            priority=10,
        ),
        DemoPromotion(
            "PR032",
            "Everything 40% off (exclusive)",
            "PERCENT_OFF",
            d(40),
            "PERCENT",
            skus=skus(socks, 1),
            priority=30,
            exclusive=True,
        ),
    ]
    for number in range(extra):
        product = rng.choice(products)
        kind = rng.choice(["PERCENT_OFF", "AMOUNT_OFF"])
        promotions.append(
            DemoPromotion(
                f"PX{number + 1:04d}",
                f"{product.brand} deal {number + 1}",
                kind,
                d(rng.choice([5, 10, 15])),
                "PERCENT" if kind == "PERCENT_OFF" else "AMOUNT",
                skus=tuple(v.sku for v in product.variants),
                priority=rng.randrange(0, 10),
                stacking_group="FILLER",
            )
        )
    return promotions


def _bundle_pair(products: Sequence[DemoProduct], first: str, second: str) -> tuple[str, str]:
    one = next((p for p in products if p.category == first), products[0])
    two = next((p for p in products if p.category == second), products[-1])
    return one.variants[0].sku, two.variants[0].sku
