"""The contract of ``CataloguePort``."""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence

import pytest

from adapters.ports import (
    Attribute,
    CataloguePort,
    Category,
    Product,
    ProductFilter,
    ProductPage,
    Variant,
)
from adapters.testing.checks import (
    assert_aware,
    assert_exact_type,
    assert_followable,
    assert_hashable,
    assert_text,
    check_concurrent,
    check_duplicates,
    check_empty,
    check_large_batch,
    check_unknown_absent,
    lookup_known,
    walk_feed,
)
from adapters.testing.sample import ConformanceSample, require

PAGES_PER_WALK = 12
"""A listing is walked in about this many pages, whatever its size."""


class CatalogueContract:
    """What every ``CataloguePort`` must do. Subclass it as ``Test...`` and provide two
    fixtures: ``catalogue`` (the implementation, closed after the test) and ``sample`` (a
    ``ConformanceSample`` with ``product_codes`` and ``skus``)."""

    pytestmark = pytest.mark.asyncio

    async def test_is_a_catalogue_port(self, catalogue: CataloguePort) -> None:
        assert isinstance(catalogue, CataloguePort)

    async def test_products_answers_known_codes_with_products(
        self, catalogue: CataloguePort, sample: ConformanceSample
    ) -> None:
        codes = _codes(sample)
        found = await lookup_known(catalogue.products, codes, "products")
        for code, product in found.items():
            assert_product(product, f"products[{code!r}]")
            assert product.code == code, f"products[{code!r}] is product {product.code!r}"

    async def test_products_leaves_unknown_codes_out(
        self, catalogue: CataloguePort, sample: ConformanceSample
    ) -> None:
        codes = _codes(sample)
        unknown = sample.unknown_keys(codes[0], len(codes) + 2)
        await check_unknown_absent(catalogue.products, codes, unknown, "products")

    async def test_products_handles_duplicates_and_nothing(
        self, catalogue: CataloguePort, sample: ConformanceSample
    ) -> None:
        await check_duplicates(catalogue.products, _codes(sample), "products")
        await check_empty(catalogue.products, "products")

    async def test_products_in_a_large_batch_equal_products_asked_alone(
        self, catalogue: CataloguePort, sample: ConformanceSample
    ) -> None:
        codes = _codes(sample)
        unknown = sample.unknown_keys(codes[0], 250)
        await check_large_batch(catalogue.products, codes, unknown, "products")

    async def test_products_answer_concurrent_lookups(
        self, catalogue: CataloguePort, sample: ConformanceSample
    ) -> None:
        await check_concurrent(catalogue.products, _codes(sample), "products")

    async def test_products_by_sku_answers_the_owning_product(
        self, catalogue: CataloguePort, sample: ConformanceSample
    ) -> None:
        skus = _skus(sample)
        found = await lookup_known(catalogue.products_by_sku, skus, "products_by_sku")
        owners = await catalogue.products(sorted({product.code for product in found.values()}))
        for sku, product in found.items():
            assert_product(product, f"products_by_sku[{sku!r}]")
            assert sku in {variant.sku for variant in product.variants}, f"{sku!r} not a variant"
            assert owners[product.code] == product, f"{sku!r}: differs from products()"

    async def test_products_by_sku_leaves_unknown_skus_out(
        self, catalogue: CataloguePort, sample: ConformanceSample
    ) -> None:
        skus = _skus(sample)
        unknown = sample.unknown_keys(skus[0], len(skus) + 2)
        await check_unknown_absent(catalogue.products_by_sku, skus, unknown, "products_by_sku")
        await check_duplicates(catalogue.products_by_sku, skus, "products_by_sku")
        await check_empty(catalogue.products_by_sku, "products_by_sku")

    async def test_products_by_sku_in_a_large_batch_equal_asked_alone(
        self, catalogue: CataloguePort, sample: ConformanceSample
    ) -> None:
        skus = _skus(sample)
        unknown = sample.unknown_keys(skus[0], 250)
        await check_large_batch(catalogue.products_by_sku, skus, unknown, "products_by_sku")

    async def test_listing_pages_cover_every_product_once_in_code_order(
        self, catalogue: CataloguePort, sample: ConformanceSample
    ) -> None:
        listed = await walk_listing(catalogue, ProductFilter())
        codes = [product.code for product in listed]
        assert codes == sorted(set(codes)), "listing is not in code order, or repeats products"
        assert set(_codes(sample)) <= set(codes), "sample products missing from the listing"
        found = await catalogue.products(codes[:50])
        assert [found[code] for code in codes[:50]] == listed[:50], "listing differs from lookup"

    async def test_listing_pages_at_any_offset_are_stable(self, catalogue: CataloguePort) -> None:
        first = await catalogue.list_products(0, 30)
        assert_page(first, 0, "list_products(0, 30)")
        shifted = await catalogue.list_products(7, 11)
        assert_page(shifted, 7, "list_products(7, 11)")
        assert shifted.total == first.total, "total changed between pages"
        assert shifted.items == first.items[7:18], "the page at offset 7 differs"
        assert await catalogue.list_products(0, 30) == first, "same page asked twice differs"
        beyond = await catalogue.list_products(first.total + 5, 10)
        assert beyond.items == (), "a page past the end has items"
        assert beyond.total == first.total, "a page past the end changed the total"

    async def test_listing_filters_by_brand(
        self, catalogue: CataloguePort, sample: ConformanceSample
    ) -> None:
        product = await _first_product(catalogue, sample)
        listed = await walk_listing(catalogue, ProductFilter(brand=product.brand))
        assert product in listed, f"{product.code} missing when filtering by its brand"
        assert {item.brand for item in listed} == {product.brand}, "other brands listed"

    async def test_listing_filters_by_category_and_its_descendants(
        self, catalogue: CataloguePort, sample: ConformanceSample
    ) -> None:
        product = await _first_product(catalogue, sample)
        tree = await catalogue.categories()
        for category in product.categories:
            listed = await walk_listing(catalogue, ProductFilter(category=category))
            assert product in listed, f"{product.code} missing when filtering by {category!r}"
            within = descendants(tree, category)
            for item in listed:
                assert within & set(item.categories), f"{item.code} is not in {category!r}"

    async def test_listing_finds_a_product_by_its_name(
        self, catalogue: CataloguePort, sample: ConformanceSample
    ) -> None:
        product = await _first_product(catalogue, sample)
        listed = await walk_listing(catalogue, ProductFilter(search=product.name))
        assert product in listed, f"searching {product.name!r} did not find {product.code}"

    async def test_listing_matching_nothing_is_empty(self, catalogue: CataloguePort) -> None:
        brand = f"no such brand {uuid.uuid4().hex}"
        page = await catalogue.list_products(0, 10, ProductFilter(brand=brand))
        assert page == ProductPage(items=(), offset=0, total=0)

    async def test_categories_list_parents_before_children(
        self, catalogue: CataloguePort, sample: ConformanceSample
    ) -> None:
        tree = await catalogue.categories()
        seen: set[str] = set()
        for category in tree:
            assert_exact_type(category, Category, "category")
            assert_text(category.code, "category code")
            assert_text(category.name, f"category {category.code!r} name")
            assert category.code not in seen, f"category {category.code!r} listed twice"
            assert category.parent is None or category.parent in seen, f"{category} too early"
            seen.add(category.code)
        found = await catalogue.products(_codes(sample))
        used = {code for product in found.values() for code in product.categories}
        assert used <= seen, f"products use categories not in the tree: {sorted(used - seen)}"

    async def test_ranging_answers_store_ids_as_frozensets(
        self, catalogue: CataloguePort, sample: ConformanceSample
    ) -> None:
        skus = _skus(sample)
        found = await lookup_known(catalogue.ranging, skus, "ranging")
        for sku, stores in found.items():
            assert type(stores) is frozenset, f"ranging[{sku!r}] is not a frozenset"
            for store in stores:
                assert_text(store, f"ranging[{sku!r}] store id")

    async def test_ranging_leaves_unknown_skus_out_and_batches(
        self, catalogue: CataloguePort, sample: ConformanceSample
    ) -> None:
        skus = _skus(sample)
        unknown = sample.unknown_keys(skus[0], 250)
        await check_unknown_absent(catalogue.ranging, skus, unknown[:5], "ranging")
        await check_duplicates(catalogue.ranging, skus, "ranging")
        await check_empty(catalogue.ranging, "ranging")
        await check_large_batch(catalogue.ranging, skus, unknown, "ranging")

    async def test_variants_carry_the_ranging_of_their_sku(
        self, catalogue: CataloguePort, sample: ConformanceSample
    ) -> None:
        by_code = await catalogue.products(_codes(sample))
        by_sku = await catalogue.products_by_sku(_skus(sample))
        page = await catalogue.list_products(0, 30)
        products = [*by_code.values(), *by_sku.values(), *page.items]
        skus = sorted({variant.sku for product in products for variant in product.variants})
        ranging = await catalogue.ranging(skus)
        for product in products:
            for variant in product.variants:
                assert variant.sku in ranging, f"ranging() leaves out {variant.sku!r}"
                assert variant.ranged_at == ranging[variant.sku], (
                    f"{variant.sku}: ranged_at {sorted(variant.ranged_at)} differs from "
                    f"ranging() {sorted(ranging[variant.sku])}"
                )

    async def test_changes_move_forward_from_the_start(self, catalogue: CataloguePort) -> None:
        changes = await walk_feed(catalogue.changes, "catalogue changes")
        if len(changes) >= 2:
            middle = len(changes) // 2
            after = await catalogue.changes(changes[middle - 1].cursor)
            assert after.changes[0] == changes[middle], "reading from an entry's cursor"

    async def test_changes_can_be_followed(self, catalogue: CataloguePort) -> None:
        await assert_followable(catalogue.changes, catalogue.products, "catalogue changes")

    async def test_aclose_can_be_called(self, catalogue: CataloguePort) -> None:
        await catalogue.aclose()


def assert_product(product: object, what: str) -> None:
    """A ``Product`` with its variants, frozen all the way down."""
    assert_exact_type(product, Product, what)
    assert isinstance(product, Product)
    assert_hashable(product, what)
    assert_text(product.code, f"{what} code")
    assert type(product.name) is str, f"{what} name"
    assert type(product.brand) is str, f"{what} brand"
    assert type(product.description) is str, f"{what} description"
    assert_aware(product.updated_at, f"{what} updated_at")
    assert type(product.categories) is tuple, f"{what} categories"
    assert product.variants, f"{what} has no variants"
    for variant in product.variants:
        assert_exact_type(variant, Variant, f"{what} variant")
        assert_text(variant.sku, f"{what} variant sku")
        assert variant.product_code == product.code, f"{what}: {variant.sku} of another product"
        for attribute in variant.attributes:
            assert_exact_type(attribute, Attribute, f"{what} {variant.sku} attribute")
        assert type(variant.ranged_at) is frozenset, f"{what} {variant.sku} ranged_at"
        for location in variant.ranged_at:
            assert_text(location, f"{what} {variant.sku} ranged_at location id")
    skus = [variant.sku for variant in product.variants]
    assert len(set(skus)) == len(skus), f"{what}: a SKU is listed twice"


def assert_page(page: object, offset: int, what: str) -> None:
    assert_exact_type(page, ProductPage, what)
    assert isinstance(page, ProductPage)
    assert page.offset == offset, f"{what}: offset {page.offset}, asked {offset}"
    assert type(page.items) is tuple, f"{what}: items is not a tuple"
    for product in page.items:
        assert_product(product, f"{what} item")


async def walk_listing(catalogue: CataloguePort, query: ProductFilter) -> list[Product]:
    """Every product matching ``query``, walked page by page; checks the pages add up."""
    first = await catalogue.list_products(0, 1, query)
    limit = max(3, math.ceil(first.total / PAGES_PER_WALK))
    listed: list[Product] = []
    for offset in range(0, first.total, limit):
        page = await catalogue.list_products(offset, limit, query)
        assert_page(page, offset, f"list_products({offset}, {limit}, {query})")
        assert page.total == first.total, f"{query}: total moved from {first.total}"
        assert len(page.items) == min(limit, first.total - offset), f"short page at {offset}"
        listed.extend(page.items)
    assert len({product.code for product in listed}) == first.total, f"{query}: not all once"
    return listed


def descendants(tree: Sequence[Category], root: str) -> set[str]:
    """``root`` and every category below it."""
    children: dict[str | None, list[str]] = {}
    for category in tree:
        children.setdefault(category.parent, []).append(category.code)
    found, pending = {root}, [root]
    while pending:
        for child in children.get(pending.pop(), []):
            found.add(child)
            pending.append(child)
    return found


async def _first_product(catalogue: CataloguePort, sample: ConformanceSample) -> Product:
    code = _codes(sample)[0]
    return (await catalogue.products([code]))[code]


def _codes(sample: ConformanceSample) -> Sequence[str]:
    return require(sample.product_codes, "product_codes", "CatalogueContract")


def _skus(sample: ConformanceSample) -> Sequence[str]:
    return require(sample.skus, "skus", "CatalogueContract")
