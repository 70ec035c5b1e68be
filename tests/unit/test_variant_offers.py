"""The promotions a variant has on its own, as a product page shows them."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from adapters.ports import ValueType
from gateway.promotions import BasketLine, RuleBook, Shopper, variant_offers
from tests.unit.test_promotions_rules import NOW, Kind, eur, rule

SOCKS = BasketLine("SOCK-1", 1, eur("4.99"), ("apparel/socks",), "Woolly")


ANYONE = Shopper()


def _ids(book: RuleBook, shopper: Shopper = ANYONE) -> list[str]:
    return [offer.rule.id for offer in variant_offers(SOCKS, book, shopper, NOW)]


def test_a_multi_buy_is_priced_on_one_whole_set() -> None:
    book = RuleBook.from_rules(
        [rule("R1", Kind.MULTI_BUY, categories=["apparel"], buy_quantity=3, pay_quantity=2,
              title="3 for 2 on socks")]
    )  # fmt: skip

    (offer,) = variant_offers(SOCKS, book, Shopper(), NOW)

    assert (offer.quantity, offer.discount) == (3, eur("4.99"))
    assert offer.explanation == "3 for 2 on socks: -4.99"


def test_a_percentage_is_priced_on_one_unit() -> None:
    book = RuleBook.from_rules([rule("R1", Kind.PERCENT_OFF, "10", brands=["Woolly"])])

    (offer,) = variant_offers(SOCKS, book, Shopper(), NOW)

    assert (offer.quantity, offer.discount) == (1, eur("0.50"))


def test_thresholds_bundles_and_coupons_are_left_to_the_cart() -> None:
    book = RuleBook.from_rules(
        [
            rule("THRESHOLD", Kind.BASKET_THRESHOLD, "5", ValueType.AMOUNT,
                 threshold=eur("50.00")),
            rule("BUNDLE", Kind.BUNDLE_PRICE, "9.99", ValueType.AMOUNT,
                 bundle_skus=("SOCK-1", "SHOE-1")),
            rule("COUPON", Kind.PERCENT_OFF, "10", skus=["SOCK-1"], coupon_code="SOCKS10"),
            rule("PLAIN", Kind.AMOUNT_OFF, "1", ValueType.AMOUNT, skus=["SOCK-1"]),
        ]
    )  # fmt: skip

    assert _ids(book, Shopper(coupon_codes=("SOCKS10",))) == ["PLAIN"]


def test_gated_and_inactive_rules_show_only_to_whom_and_when_they_apply() -> None:
    book = RuleBook.from_rules(
        [
            rule("GOLD", Kind.PERCENT_OFF, "5", skus=["SOCK-1"], tiers=frozenset({"GOLD"})),
            rule("MINE", Kind.PERCENT_OFF, "5", skus=["SOCK-1"], customer_id="C1"),
            rule("LATER", Kind.PERCENT_OFF, "5", skus=["SOCK-1"],
                 valid_from=NOW + timedelta(days=1)),
        ]
    )  # fmt: skip

    assert _ids(book) == []
    assert sorted(_ids(book, Shopper(customer_id="C1", tier="gold"))) == ["GOLD", "MINE"]


def test_each_offer_is_priced_alone_not_stacked_on_the_others() -> None:
    book = RuleBook.from_rules(
        [
            rule("HALF", Kind.PERCENT_OFF, "50", skus=["SOCK-1"], exclusive=True),
            rule("TENTH", Kind.PERCENT_OFF, "10", skus=["SOCK-1"]),
        ]
    )

    offers = {o.rule.id: o.discount.amount for o in variant_offers(SOCKS, book, Shopper(), NOW)}

    assert offers == {"HALF": Decimal("2.50"), "TENTH": Decimal("0.50")}
