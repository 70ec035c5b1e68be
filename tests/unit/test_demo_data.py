"""The demo estate's ground truth: scale, realism and determinism."""

from __future__ import annotations

from collections import Counter

from legacy.demo import generate


def test_default_scale_has_the_promised_size() -> None:
    estate = generate(42, "default")

    kinds = Counter(location.kind for location in estate.locations)
    assert len(estate.products) >= 2000
    assert sum(1 for _ in estate.skus) >= 8000
    assert kinds == {"STORE": 60, "DC": 2}
    assert len(estate.customers) == 1000
    assert len(estate.promotions) >= 30


def test_every_promotion_rule_kind_is_present_ungated_and_gated() -> None:
    promotions = generate(42, "default").promotions

    kinds = {p.kind for p in promotions}
    assert kinds == {
        "PERCENT_OFF", "AMOUNT_OFF", "FIXED_PRICE", "MULTI_BUY", "BUY_X_GET_Y",
        "BUNDLE_PRICE", "BASKET_THRESHOLD",
    }  # fmt: skip
    assert any(p.coupon_code for p in promotions)
    assert any(p.tiers for p in promotions)
    assert any(p.customer_id for p in promotions)
    assert any(p.exclusive for p in promotions)


def test_stock_is_sparse_with_zeros_and_last_units() -> None:
    estate = generate(42, "tiny")

    rows = list(estate.stock_rows())
    pairs = {(row.location_code, row.sku) for row in rows}
    skus = sum(1 for _ in estate.skus)
    quantities = Counter(row.on_hand for row in rows)
    assert len(pairs) == len(rows)
    assert len(pairs) < skus * len(estate.locations)
    assert quantities[0] > 0
    assert quantities[1] > 0


def test_stores_lie_around_munich_with_several_loyalty_tiers() -> None:
    estate = generate(42, "default")

    for location in estate.locations:
        assert 47.8 < location.lat < 48.6
        assert 11.0 < location.lon < 12.2
    tiers = Counter(customer.tier for customer in estate.customers)
    assert set(tiers) == {"BRONZE", "SILVER", "GOLD", "PLATINUM"}
    assert estate.customers[0].id == "C0001"
    assert estate.customers[0].card_number == "LC0001"


def test_the_same_seed_gives_the_same_estate_and_another_seed_does_not() -> None:
    first, again, other = generate(7, "tiny"), generate(7, "tiny"), generate(8, "tiny")

    assert first.products == again.products
    assert first.customers == again.customers
    assert list(first.stock_rows()) == list(again.stock_rows())
    assert first.products != other.products
