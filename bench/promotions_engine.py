"""The promotions engine benchmark: a 50-line basket priced against 500 active rules.

Builds the rules from the ``large`` demo estate (the 30 active demo promotions of every kind
plus 470 SKU deals: 500 rules active at the moment priced), indexes them once, then prices
many different 50-line baskets, one at a time on one core, for a gold member with three
coupon codes and points to redeem. Reports the median and p99 time per basket and writes
them into its section of ``docs/benchmarks.md``.

    .venv/bin/python -m bench.promotions_engine [--baskets 200] [--rounds 10]
"""

from __future__ import annotations

import argparse
import platform
import random
import re
import statistics
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Final

from adapters.ports import Money, PromotionRule
from bench.report import markers, write_section
from gateway.promotions import Basket, BasketLine, LoyaltyProgram, RuleBook, Shopper, price_basket
from legacy.demo import DemoProduct, generate
from tests.fakes import rule_from_demo

ROOT: Final = Path(__file__).resolve().parents[1]
SECTION: Final = "promotions_engine"
NOW: Final = datetime(2026, 6, 1, 12, tzinfo=UTC)
LINES: Final = 50
TARGET_MS: Final = 5.0
COMMAND: Final = ".venv/bin/python -m bench.promotions_engine"
SHOPPER: Final = Shopper("C0001", "GOLD", ("WELCOME10", "SOCKS5", "SAVE20"), points_balance=5_000)
LOYALTY: Final = LoyaltyProgram(
    Decimal(1), Money(Decimal("0.01"), "EUR"), {"GOLD": Decimal("1.5"), "PLATINUM": Decimal(2)}
)


def basket_line(product: DemoProduct, variant_index: int, quantity: int) -> BasketLine:
    variant = product.variants[variant_index % len(product.variants)]
    parts = product.category.split("/")
    categories = tuple("/".join(parts[:end]) for end in range(len(parts), 0, -1))
    return BasketLine(
        variant.sku, quantity, Money(variant.base_price, "EUR"), categories, product.brand
    )


def make_baskets(products: Sequence[DemoProduct], rules: Sequence[PromotionRule], count: int,
                 seed: int = 7) -> list[Basket]:  # fmt: skip
    """Baskets of 50 distinct SKUs: half from products some rule targets by SKU, half from the
    catalogue at large, 1 to 4 units each. Every other basket also holds a SKU of each
    exclusive rule, so the engine has to choose among them."""
    rng = random.Random(seed)
    targeted_skus = {sku for rule in rules for sku in (*rule.target.skus, *rule.bundle_skus)}
    targeted = [p for p in products if any(v.sku in targeted_skus for v in p.variants)]
    contested = _exclusive_lines(products, rules)
    baskets = []
    for number in range(count):
        lines = {line.sku: line for line in (contested if number % 2 else [])}
        for product in rng.sample(targeted, LINES // 2) + rng.sample(products, LINES):
            candidate = basket_line(product, rng.randrange(4), rng.randint(1, 4))
            lines.setdefault(candidate.sku, candidate)
        baskets.append(Basket("EUR", tuple(list(lines.values())[:LINES])))
    return baskets


def _exclusive_lines(
    products: Sequence[DemoProduct], rules: Sequence[PromotionRule]
) -> list[BasketLine]:
    wanted = {
        min(rule.target.skus) if rule.target.skus else sku
        for rule in rules
        if rule.exclusive and (rule.target.skus or rule.bundle_skus)
        for sku in (rule.bundle_skus or (None,))
    }
    return [
        basket_line(product, index, 2)
        for product in products
        for index, variant in enumerate(product.variants)
        if variant.sku in wanted
    ]


def measure(book: RuleBook, baskets: Sequence[Basket], rounds: int) -> list[float]:
    """Seconds per basket, each basket priced once per round."""
    timings = []
    for _ in range(rounds):
        for basket in baskets:
            started = time.perf_counter()
            price_basket(basket, book, SHOPPER, NOW, LOYALTY, redeem_points=1_000)
            timings.append(time.perf_counter() - started)
    return timings


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def section(rules: int, build_ms: float, timings: Sequence[float], applied: float,
            baskets: int, rounds: int) -> str:  # fmt: skip
    median_ms = statistics.median(timings) * 1000
    p99_ms = percentile(timings, 0.99) * 1000
    verdicts = ["met" if ms < TARGET_MS else "not met" for ms in (median_ms, p99_ms)]
    return f"""## Promotions engine: one basket against 500 rules

`price_basket` (`gateway/promotions`) on one core, in one process, no I/O: {baskets} different
baskets of {LINES} lines (half from SKUs that rules target, 1 to 4 units each; every other basket
also holds a SKU of each exclusive rule), each priced {rounds} times, for a GOLD member with
three coupon codes (WELCOME10, SOCKS5, SAVE20) and 1,000 points to redeem. The rules are the
`large` demo estate's promotions active at {NOW:%Y-%m-%d}:
{rules} rules of every kind (percent, amount, fixed price, multi-buy, buy-x-get-y, bundles,
thresholds; coupon-, tier- and customer-gated; exclusive and grouped). Indexing them into a
`RuleBook` (once per rule-set version) took {build_ms:.1f} ms.

| baskets priced | median ms/basket | p99 ms/basket | promotions applied/basket |
|---:|---:|---:|---:|
| {len(timings)} | {median_ms:.3f} | {p99_ms:.3f} | {applied:.1f} |

- Target, under {TARGET_MS:.0f} ms per basket on one core: median {verdicts[0]}, p99 {verdicts[1]}.
  The slow baskets are the contested ones: each combination of the exclusive rules they hold
  is priced (lines no exclusive rule can reach are worked out once and copied).

- Machine: {_machine()}.
- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.
- Command: `{COMMAND}`
"""


def _machine() -> str:
    cpu = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.MULTILINE)
        cpu = found.group(1).strip() if found else cpu
    return (
        f"{cpu}, {platform.machine()}, {platform.system()} {platform.release()}; "
        f"CPython {platform.python_version()}"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baskets", type=int, default=200, help="different baskets")
    parser.add_argument("--rounds", type=int, default=10, help="times each basket is priced")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    options = parser.parse_args(argv)
    estate = generate(42, "large")
    rules = [r for r in map(rule_from_demo, estate.promotions) if r.is_active(NOW)]
    started = time.perf_counter()
    book = RuleBook.from_rules(rules)
    build_ms = (time.perf_counter() - started) * 1000
    baskets = make_baskets(estate.products, rules, options.baskets)
    measure(book, baskets[:20], 1)  # warm up
    timings = measure(book, baskets, options.rounds)
    applied = statistics.mean(
        len(price_basket(b, book, SHOPPER, NOW, LOYALTY).applied_promotions) for b in baskets
    )
    body = section(len(rules), build_ms, timings, applied, len(baskets), options.rounds)
    start, end = markers(SECTION)
    write_section(options.output, SECTION, f"{start}\n{body}{end}\n")
    print(body)


if __name__ == "__main__":
    main()
