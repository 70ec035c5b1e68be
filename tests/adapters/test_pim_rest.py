"""RestPimCatalogue against the running PIM simulator, checked against the demo ground truth."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from adapters.pim_rest import RestPimCatalogue, plan_pages
from adapters.ports import (
    Attribute,
    BackendRejected,
    BackendTimedOut,
    BackendUnavailable,
    CataloguePort,
    Category,
    Product,
    ProductFilter,
    Variant,
)
from legacy.demo import DemoEstate, DemoProduct
from tests.support import start_systems, write_systems

# --------------------------------------------------------------------------- fixtures


def _start_pim(truth: DemoEstate, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("pim")
    write_systems(truth, data_dir, ["pim"])
    estate = start_systems(data_dir, ("pim",))
    yield estate.urls["pim"]
    estate.stop()


@pytest.fixture(scope="module")
def pim_url(truth: DemoEstate, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PIM whose data is never edited, so every product equals the ground truth."""
    yield from _start_pim(truth, tmp_path_factory)


@pytest.fixture(scope="module")
def editable_pim_url(truth: DemoEstate, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second PIM for tests that edit products through ``POST /_sim/products``."""
    yield from _start_pim(truth, tmp_path_factory)


@pytest.fixture(scope="module")
def ranging_pim_url(truth: DemoEstate, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A third PIM for tests that edit assortments; each test edits its own product."""
    yield from _start_pim(truth, tmp_path_factory)


@pytest.fixture
async def fresh_pim(pim_url: str) -> str:
    await _post(pim_url, "/_sim/reset", {})
    return pim_url


@pytest.fixture
async def catalogue(fresh_pim: str) -> AsyncIterator[RestPimCatalogue]:
    adapter = RestPimCatalogue(fresh_pim)
    yield adapter
    await adapter.aclose()


async def _post(url: str, path: str, body: dict[str, object]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, timeout=5.0) as client:
        response = await client.post(path, json=body)
    response.raise_for_status()
    return response


async def _delete(url: str, path: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=5.0) as client:
        (await client.delete(path)).raise_for_status()


async def _calls(url: str) -> dict[str, int]:
    async with httpx.AsyncClient(base_url=url, timeout=5.0) as client:
        stats = (await client.get("/_sim/stats")).json()
    return dict(stats["calls"])


# --------------------------------------------------------------------------- ground truth


def _ancestry(truth: DemoEstate, leaf: str) -> tuple[str, ...]:
    parents = {category.code: category.parent for category in truth.categories}
    chain: list[str] = []
    code: str | None = leaf
    while code is not None:
        chain.append(code)
        code = parents[code]
    return tuple(chain)


def _expected(truth: DemoEstate, product: DemoProduct, german: bool = False) -> Product:
    return Product(
        code=product.code,
        name=product.name_de if german else product.name_en,
        brand=product.brand,
        description=product.description_de if german else product.description_en,
        categories=_ancestry(truth, product.category),
        variants=tuple(
            Variant(
                sku=variant.sku,
                product_code=product.code,
                attributes=(
                    Attribute("color", variant.color_de if german else variant.color_en),
                    Attribute("size", variant.size),
                ),
                ean=variant.ean,
                ranged_at=_ranged_at(truth, product),
            )
            for variant in product.variants
        ),
        updated_at=product.updated_at,
    )


def _ranged_at(truth: DemoEstate, product: DemoProduct) -> frozenset[str]:
    return frozenset(
        location.code for location in truth.locations if truth.ranged(product, location)
    )


def _codes(truth: DemoEstate) -> list[str]:
    return sorted(product.code for product in truth.products)


# --------------------------------------------------------------------------- lookups


async def test_the_adapter_implements_the_catalogue_port(catalogue: RestPimCatalogue) -> None:
    assert isinstance(catalogue, CataloguePort)


async def test_products_by_code_equal_the_ground_truth_in_english(
    catalogue: RestPimCatalogue, truth: DemoEstate
) -> None:
    # given every product code of the estate
    codes = [product.code for product in truth.products]

    # when
    found = await catalogue.products(codes)

    # then
    assert found == {product.code: _expected(truth, product) for product in truth.products}


async def test_a_german_adapter_returns_german_names_and_colours(
    fresh_pim: str, truth: DemoEstate
) -> None:
    # given an adapter for de_DE, and one for a locale the PIM lacks, falling back to de_DE
    german = RestPimCatalogue(fresh_pim, locale="de_DE", fallback_locale="en_GB")
    french = RestPimCatalogue(fresh_pim, locale="fr-FR", fallback_locale="de_DE")
    product = truth.products[0]

    # when
    in_german = await german.products([product.code])
    in_french = await french.products([product.code])
    await german.aclose()
    await french.aclose()

    # then
    assert in_german == {product.code: _expected(truth, product, german=True)}
    assert in_french == in_german


async def test_unknown_codes_and_skus_are_absent(
    catalogue: RestPimCatalogue, truth: DemoEstate
) -> None:
    # given one known product and SKU among unknown ones
    product = truth.products[1]
    sku = product.variants[0].sku

    # when
    by_code = await catalogue.products(["P999999", product.code, "nonsense", product.code])
    by_sku = await catalogue.products_by_sku(["999999999", sku])

    # then
    assert by_code == {product.code: _expected(truth, product)}
    assert by_sku == {sku: _expected(truth, product)}
    assert await catalogue.products([]) == {}


async def test_products_by_sku_map_every_sku_to_its_owner(
    catalogue: RestPimCatalogue, truth: DemoEstate
) -> None:
    # given every SKU of three products
    products = truth.products[5:8]
    skus = [variant.sku for product in products for variant in product.variants]

    # when
    found = await catalogue.products_by_sku(skus)

    # then
    expected = {v.sku: _expected(truth, p) for p in products for v in p.variants}
    assert found == expected


async def test_230_codes_take_exactly_three_concurrent_lookups(
    catalogue: RestPimCatalogue, fresh_pim: str, truth: DemoEstate
) -> None:
    # given 230 distinct codes, of which the estate's 60 are known
    known = _codes(truth)
    codes = known + [f"X{number:06d}" for number in range(230 - len(known))]

    # when
    found = await catalogue.products(codes)

    # then
    assert sorted(found) == known
    assert await _calls(fresh_pim) == {"getProducts": 3, "getAssortments": 1}


async def test_the_pim_itself_refuses_more_than_100_codes(
    fresh_pim: str, truth: DemoEstate
) -> None:
    # given 101 codes in one raw request
    codes = ",".join(f"P{number:06d}" for number in range(1, 102))

    # when
    async with httpx.AsyncClient(base_url=fresh_pim, timeout=5.0) as client:
        response = await client.get("/api/v1/products", params={"codes": codes})

    # then
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "TOO_MANY_CODES"


# --------------------------------------------------------------------------- listing


async def test_listing_pages_cover_every_product_exactly_once_in_code_order(
    catalogue: RestPimCatalogue, truth: DemoEstate
) -> None:
    # given pages of 7 over 60 products
    seen: list[str] = []
    offset, total = 0, 1

    # when
    while offset < total:
        page = await catalogue.list_products(offset, 7)
        assert page.offset == offset
        seen += [product.code for product in page.items]
        offset, total = offset + 7, page.total

    # then
    assert seen == _codes(truth)
    assert total == len(truth.products)


async def test_an_unaligned_window_is_read_in_one_request(
    catalogue: RestPimCatalogue, fresh_pim: str, truth: DemoEstate
) -> None:
    # given a window that straddles any page size dividing its offset
    codes = _codes(truth)

    # when
    page = await catalogue.list_products(13, 25)
    tail = await catalogue.list_products(55, 20)
    empty = await catalogue.list_products(60, 10)

    # then
    assert [product.code for product in page.items] == codes[13:38]
    assert [product.code for product in tail.items] == codes[55:]
    assert (empty.items, empty.offset, empty.total) == ((), 60, 60)
    assert await _calls(fresh_pim) == {"listProducts": 3, "getAssortments": 1}


def test_page_plans_cover_the_window_with_the_fewest_pages() -> None:
    # given windows within and beyond the PIM's 200-item page limit
    for offset, limit, fewest in [
        (0, 50, 1),
        (195, 10, 1),
        (150, 100, 1),
        (1, 200, 2),
        (10, 450, 3),
        (7, 1, 1),
    ]:
        # when
        size, pages = plan_pages(offset, limit, 200)

        # then
        assert size <= 200
        assert len(pages) == fewest
        assert pages == list(range(pages[0], pages[-1] + 1))
        assert (pages[0] - 1) * size <= offset
        assert pages[-1] * size >= offset + limit


async def test_category_brand_and_search_filters_match_the_ground_truth(
    catalogue: RestPimCatalogue, truth: DemoEstate
) -> None:
    # given the products the ground truth puts under each filter
    brand = truth.products[0].brand
    in_footwear = [p.code for p in truth.products if "footwear" in _ancestry(truth, p.category)]
    of_brand = [p.code for p in truth.products if p.brand == brand]
    texts = {
        p.code: " ".join([p.name_en, p.name_de, p.description_en, p.description_de, p.brand])
        for p in truth.products
    }
    with_schwarz = [code for code, text in texts.items() if "schwarz" in text.lower()]
    assert in_footwear
    assert of_brand
    assert with_schwarz

    # when
    footwear = await catalogue.list_products(0, 100, ProductFilter(category="footwear"))
    branded = await catalogue.list_products(0, 100, ProductFilter(brand=brand))
    searched = await catalogue.list_products(0, 100, ProductFilter(search="SCHWARZ"))
    nothing = await catalogue.list_products(0, 100, ProductFilter(category="no-such-category"))

    # then
    assert [p.code for p in footwear.items] == sorted(in_footwear)
    assert footwear.total == len(in_footwear)
    assert [p.code for p in branded.items] == sorted(of_brand)
    assert [p.code for p in searched.items] == sorted(with_schwarz)
    assert (nothing.items, nothing.total) == ((), 0)


async def test_a_filtered_listing_pages_like_an_unfiltered_one(
    catalogue: RestPimCatalogue, truth: DemoEstate
) -> None:
    # given the apparel products, read two at a time
    query = ProductFilter(category="apparel")
    expected = [p.code for p in truth.products if "apparel" in _ancestry(truth, p.category)]
    seen: list[str] = []

    # when
    for offset in range(0, len(expected), 2):
        page = await catalogue.list_products(offset, 2, query)
        seen += [product.code for product in page.items]

    # then
    assert seen == sorted(expected)


# --------------------------------------------------------------------------- categories, ranging


async def test_categories_equal_the_ground_truth_parents_first(
    catalogue: RestPimCatalogue, truth: DemoEstate
) -> None:
    # when
    categories = await catalogue.categories()

    # then
    expected = {Category(c.code, c.name_en, c.parent) for c in truth.categories}
    assert set(categories) == expected
    assert len(categories) == len(expected)
    position = {category.code: index for index, category in enumerate(categories)}
    for category in categories:
        if category.parent is not None:
            assert position[category.parent] < position[category.code]


async def test_ranging_matches_the_estate_for_every_sku(
    catalogue: RestPimCatalogue, fresh_pim: str, truth: DemoEstate
) -> None:
    # given every SKU of the estate (240) and an unknown one
    expected = {
        variant.sku: _ranged_at(truth, product)
        for product in truth.products
        for variant in product.variants
    }

    # when
    ranging = await catalogue.ranging([*expected, "000000000"])

    # then it is read with the products owning the SKUs, 100 SKUs per request
    assert ranging == expected
    assert await _calls(fresh_pim) == {"getProducts": 3, "getAssortments": 1}


async def test_the_pim_still_answers_ranging_per_sku(fresh_pim: str, truth: DemoEstate) -> None:
    # given two SKUs of different products, and an unknown one
    first, last = truth.products[0], truth.products[-1]
    skus = [first.variants[0].sku, last.variants[-1].sku, "000000000"]

    # when
    async with httpx.AsyncClient(base_url=fresh_pim, timeout=5.0) as client:
        response = await client.get("/api/v1/ranging", params={"skus": ",".join(skus)})

    # then
    assert response.json() == {
        "items": [
            {"sku": skus[0], "stores": sorted(_ranged_at(truth, first))},
            {"sku": skus[1], "stores": sorted(_ranged_at(truth, last))},
        ]
    }


# --------------------------------------------------------------------------- ranging with products


async def test_listed_variants_are_ranged_where_the_ground_truth_says(
    catalogue: RestPimCatalogue, truth: DemoEstate
) -> None:
    # when
    page = await catalogue.list_products(0, 100)

    # then
    expected = sorted(truth.products, key=lambda product: product.code)
    assert page.items == tuple(_expected(truth, product) for product in expected)


@pytest.mark.parametrize("size", [24, 48])
async def test_after_warm_up_a_listing_page_is_one_pim_call(
    catalogue: RestPimCatalogue, fresh_pim: str, truth: DemoEstate, size: int
) -> None:
    # given an adapter warmed up at start, and the PIM's counters reset after it
    await catalogue.warm_up()
    await _post(fresh_pim, "/_sim/reset", {})

    # when
    page = await catalogue.list_products(0, size)

    # then every variant of the page is ranged, from one request
    expected = sorted(truth.products, key=lambda product: product.code)[:size]
    assert page.items == tuple(_expected(truth, product) for product in expected)
    assert await _calls(fresh_pim) == {"listProducts": 1}


async def test_after_warm_up_a_lookup_of_100_codes_is_one_pim_call(
    catalogue: RestPimCatalogue, fresh_pim: str, truth: DemoEstate
) -> None:
    # given a warmed-up adapter and 100 codes, 60 of them known
    await catalogue.warm_up()
    await _post(fresh_pim, "/_sim/reset", {})
    codes = _codes(truth) + [f"X{number:06d}" for number in range(40)]

    # when
    found = await catalogue.products(codes)

    # then
    assert found == {product.code: _expected(truth, product) for product in truth.products}
    assert await _calls(fresh_pim) == {"getProducts": 1}


async def test_concurrent_first_lookups_read_the_assortments_once(
    catalogue: RestPimCatalogue, fresh_pim: str, truth: DemoEstate
) -> None:
    # given an adapter that was not warmed up, and eight products
    products = truth.products[:8]

    # when they are looked up concurrently
    found = await asyncio.gather(*(catalogue.products([p.code]) for p in products))

    # then
    assert found == [{p.code: _expected(truth, p)} for p in products]
    assert await _calls(fresh_pim) == {"getProducts": 8, "getAssortments": 1}


async def test_a_product_moved_to_a_new_assortment_is_ranged_by_it(
    ranging_pim_url: str, truth: DemoEstate
) -> None:
    # given a warmed-up adapter, then an assortment it has not seen, given to a product
    adapter = RestPimCatalogue(ranging_pim_url)
    await adapter.warm_up()
    await _post(ranging_pim_url, "/_sim/assortments/ASM-NEW", {"stores": ["0002", "9002"]})
    await _post(ranging_pim_url, "/_sim/products/P000004", {"assortments": ["ASM-NEW"]})
    await _post(ranging_pim_url, "/_sim/reset", {})
    skus = [variant.sku for variant in truth.products[3].variants]

    # when
    product = (await adapter.products(["P000004"]))["P000004"]
    ranging = await adapter.ranging(skus)
    await adapter.aclose()

    # then the table is read again once, for the code it lacked
    assert {variant.ranged_at for variant in product.variants} == {frozenset({"0002", "9002"})}
    assert ranging == dict.fromkeys(skus, frozenset({"0002", "9002"}))
    assert await _calls(ranging_pim_url) == {"getProducts": 2, "getAssortments": 1}


async def test_a_variant_ranged_apart_from_its_product_keeps_its_own_stores(
    ranging_pim_url: str, truth: DemoEstate
) -> None:
    # given one variant of a product moved to a second assortment
    product = truth.products[6]
    moved, *others = [variant.sku for variant in product.variants]
    await _post(ranging_pim_url, "/_sim/assortments/ASM-EXTRA", {"stores": ["0004", "0001"]})
    await _post(
        ranging_pim_url,
        f"/_sim/products/{product.code}",
        {"assortments": {moved: ["ASM-EXTRA"]}},
    )
    adapter = RestPimCatalogue(ranging_pim_url)

    # when
    found = (await adapter.products([product.code]))[product.code]
    ranging = await adapter.ranging([moved, *others])
    await adapter.aclose()

    # then
    expected = {
        moved: frozenset({"0001", "0004"}),
        **dict.fromkeys(others, _ranged_at(truth, product)),
    }
    assert {variant.sku: variant.ranged_at for variant in found.variants} == expected
    assert ranging == expected


async def test_a_deleted_assortment_ranges_nothing_and_is_asked_for_once(
    ranging_pim_url: str, truth: DemoEstate
) -> None:
    # given a product whose only assortment was deleted from the PIM's master data
    await _post(ranging_pim_url, "/_sim/assortments/ASM-GONE", {"stores": ["0003"]})
    await _post(ranging_pim_url, "/_sim/products/P000005", {"assortments": ["ASM-GONE"]})
    await _delete(ranging_pim_url, "/_sim/assortments/ASM-GONE")
    adapter = RestPimCatalogue(ranging_pim_url)
    await adapter.warm_up()
    await _post(ranging_pim_url, "/_sim/reset", {})

    # when it is looked up twice
    first = (await adapter.products(["P000005"]))["P000005"]
    second = (await adapter.products(["P000005"]))["P000005"]
    await adapter.aclose()

    # then
    assert {variant.ranged_at for variant in first.variants} == {frozenset()}
    assert second == first
    assert await _calls(ranging_pim_url) == {"getProducts": 2, "getAssortments": 1}


async def test_changed_assortment_stores_show_once_the_table_expires(
    ranging_pim_url: str, truth: DemoEstate
) -> None:
    # given two warmed-up adapters, one keeping the table for 300 s and one not at all
    await _post(ranging_pim_url, "/_sim/assortments/ASM-TTL", {"stores": ["0001"]})
    await _post(ranging_pim_url, "/_sim/products/P000006", {"assortments": ["ASM-TTL"]})
    keeping = RestPimCatalogue(ranging_pim_url)
    expiring = RestPimCatalogue(ranging_pim_url, assortment_ttl=0)
    await keeping.warm_up()
    await expiring.warm_up()

    # when the assortment gains a store
    await _post(ranging_pim_url, "/_sim/assortments/ASM-TTL", {"stores": ["0001", "0006"]})
    await _post(ranging_pim_url, "/_sim/reset", {})
    kept = (await keeping.products(["P000006"]))["P000006"]
    renewed = (await expiring.products(["P000006"]))["P000006"]
    await keeping.aclose()
    await expiring.aclose()

    # then
    assert {variant.ranged_at for variant in kept.variants} == {frozenset({"0001"})}
    assert {variant.ranged_at for variant in renewed.variants} == {frozenset({"0001", "0006"})}
    assert await _calls(ranging_pim_url) == {"getProducts": 2, "getAssortments": 1}


async def test_a_product_re_ranged_in_the_pim_appears_in_the_change_feed(
    ranging_pim_url: str,
) -> None:
    # given a reader at the end of the feed
    adapter = RestPimCatalogue(ranging_pim_url)
    cursor = (await adapter.changes(None)).cursor

    # when a product is moved to another existing assortment
    await _post(ranging_pim_url, "/_sim/products/P000009", {"assortments": ["ASM-001"]})
    batch = await adapter.changes(cursor)
    await adapter.aclose()

    # then
    assert [(change.entity, change.key) for change in batch.changes] == [("product", "P000009")]


# --------------------------------------------------------------------------- failures


async def test_an_outage_raises_backend_unavailable(
    catalogue: RestPimCatalogue, fresh_pim: str
) -> None:
    # given
    await _post(fresh_pim, "/_sim/knobs", {"outage": True})

    # when
    with pytest.raises(BackendUnavailable) as raised:
        await catalogue.products(["P000001"])

    # then
    assert not isinstance(raised.value, BackendTimedOut)
    assert raised.value.backend == "pim"


async def test_a_pim_slower_than_the_timeout_raises_backend_timed_out(fresh_pim: str) -> None:
    # given a PIM answering after 1 s and an adapter waiting 0.2 s
    await _post(fresh_pim, "/_sim/knobs", {"latency_ms": 1000})
    impatient = RestPimCatalogue(fresh_pim, timeout=0.2)

    # when
    with pytest.raises(BackendTimedOut) as raised:
        await impatient.list_products(0, 10)
    await impatient.aclose()

    # then
    assert isinstance(raised.value.__cause__, httpx.TimeoutException)


async def test_an_unreachable_pim_raises_backend_unavailable() -> None:
    # given nothing listening on the port
    adapter = RestPimCatalogue("http://127.0.0.1:9", timeout=1.0)

    # when
    with pytest.raises(BackendUnavailable) as raised:
        await adapter.categories()
    await adapter.aclose()

    # then
    assert isinstance(raised.value.__cause__, httpx.TransportError)


async def test_a_refused_request_raises_backend_rejected_with_the_pim_code(
    catalogue: RestPimCatalogue,
) -> None:
    # when a cursor the PIM cannot read is passed
    with pytest.raises(BackendRejected) as raised:
        await catalogue.changes("not-a-cursor")

    # then
    assert raised.value.code == "INVALID_PARAMETER"


# --------------------------------------------------------------------------- change feed


async def test_an_edited_product_appears_in_the_change_feed_after_the_cursor(
    editable_pim_url: str, truth: DemoEstate
) -> None:
    # given a reader at the end of the feed, which starts with every product once
    adapter = RestPimCatalogue(editable_pim_url)
    history = await adapter.changes(None)
    assert sorted(change.key for change in history.changes) == _codes(truth)
    assert [change.at for change in history.changes] == sorted(p.updated_at for p in truth.products)
    assert history.cursor == history.changes[-1].cursor

    # when a product is renamed in the PIM
    await _post(editable_pim_url, "/_sim/products/P000003", {"name": "Renamed Parka"})
    batch = await adapter.changes(history.cursor)
    after = await adapter.changes(batch.cursor)
    product = (await adapter.products(["P000003"]))["P000003"]
    await adapter.aclose()

    # then
    assert [(change.entity, change.key) for change in batch.changes] == [("product", "P000003")]
    assert batch.cursor == batch.changes[0].cursor == str(int(history.cursor) + 1)
    assert (after.changes, after.cursor) == ((), batch.cursor)
    assert product.name == "Renamed Parka"
    assert product.updated_at == batch.changes[0].at
