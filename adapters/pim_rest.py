"""The catalogue from the PIM's REST/JSON API (``/api/v1``), normalised into ports' types.

The PIM pages listings (at most 200 per page), caps batch lookups at 100 keys, keeps texts as
``{"code", "value", "locale"}`` attribute lists, reports categories as a root-first breadcrumb,
stamps ``lastModified`` in its own clock, names each product's assortments by code and
publishes a sequence-numbered change feed. This adapter resolves attributes to one locale (with a
fallback) and assortment codes to store ids (with a cached copy of the assortment master data),
chunks and parallelises lookups, maps any offset/limit onto the fewest pages, and converts every
timestamp to UTC.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx

from adapters.http import Answer, backend_client
from adapters.ports import (
    Attribute,
    BackendError,
    BackendRejected,
    BackendTimedOut,
    BackendUnavailable,
    Category,
    Change,
    ChangeBatch,
    Product,
    ProductFilter,
    ProductPage,
    Variant,
)

BACKEND = "pim"
BATCH_LIMIT = 100  # the PIM answers 400 above this many codes or SKUs per request
PAGE_SIZE_LIMIT = 200  # the PIM silently cuts larger pages to this size
FEED_LIMIT = 1000  # the most change-feed entries the PIM returns per call
ATTEMPTS = 2  # a GET is safe to repeat once after a 5xx, a 429 or a failed connection
RETRY_DELAY = 0.05  # seconds, unless the PIM says Retry-After (capped at MAX_RETRY_DELAY)
MAX_RETRY_DELAY = 1.0

EVERY_PRODUCT = ProductFilter()

JsonObject = dict[str, Any]
T = TypeVar("T")


class RestPimCatalogue:
    """``CataloguePort`` over the PIM's REST API at ``base_url``.

    Texts (name, description, variant attributes) are resolved to ``locale``, else
    ``fallback_locale``, else the locale-independent value. Lookups take any number of keys:
    they are split into requests of 100, run concurrently on at most ``max_connections``
    pooled connections. Every request has ``timeout`` seconds. Failures raise
    ``BackendTimedOut``, ``BackendUnavailable`` (after one retry) or ``BackendRejected``.

    Each variant's ``ranged_at`` comes from the assortment codes in the product payload, resolved
    with the PIM's assortment table. The table is read whole (one request), kept for
    ``assortment_ttl`` seconds, and read again sooner when a product names a code it lacks; an
    assortment the PIM no longer has ranges nothing. Call ``warm_up`` once at start: from then
    on a listing page, or a lookup of up to 100 keys, is one request to the PIM.
    """

    def __init__(
        self,
        base_url: str,
        *,
        locale: str = "en_GB",
        fallback_locale: str = "de_DE",
        timeout: float = 5.0,
        max_connections: int = 32,
        assortment_ttl: float = 300.0,
    ) -> None:
        self._assortments = _AssortmentTable(self._read_assortments, assortment_ttl)
        self._locales = (_locale_code(locale), _locale_code(fallback_locale))
        self._requests = asyncio.Semaphore(max_connections)
        self._client = backend_client(
            base_url=base_url.rstrip("/"),
            timeout=timeout,
            max_connections=max_connections,
            headers={"Accept": "application/json"},
        )

    async def products(self, codes: Sequence[str]) -> Mapping[str, Product]:
        """Products by code. Unknown codes are absent. Any number of codes."""
        found = await self._lookup("codes", codes)
        return {product.code: product for product in found}

    async def products_by_sku(self, skus: Sequence[str]) -> Mapping[str, Product]:
        """The product owning each SKU. Unknown SKUs are absent. Any number of SKUs."""
        owners = {
            variant.sku: p for p in await self._lookup("skus", skus) for variant in p.variants
        }
        return {sku: owners[sku] for sku in skus if sku in owners}

    async def list_products(
        self, offset: int, limit: int, query: ProductFilter = EVERY_PRODUCT
    ) -> ProductPage:
        """Products ``offset`` to ``offset + limit`` of those matching ``query``, in code order,
        read with the fewest PIM pages that cover that window."""
        if offset < 0 or limit < 0:
            raise ValueError("offset and limit must not be negative")
        page_size, pages = plan_pages(offset, max(limit, 1), PAGE_SIZE_LIMIT)
        filters = _filter_params(query)
        bodies = await self._bounded(
            self._get("/api/v1/products", {**filters, "page": page, "pageSize": page_size})
            for page in pages
        )
        rows = self._parse(lambda: [row for body in bodies for row in body["items"]])
        start = offset - (pages[0] - 1) * page_size
        items = await self._products(rows[start:][:limit])
        total = self._parse(lambda: int(bodies[0]["totalItems"]))
        return ProductPage(items=tuple(items), offset=offset, total=total)

    async def categories(self) -> Sequence[Category]:
        """The whole category tree, parents before children (depth first, in the PIM's order)."""
        body = await self._get("/api/v1/categories", {})
        return self._parse(lambda: list(self._flatten(body["categories"], None)))

    async def ranging(self, skus: Sequence[str]) -> Mapping[str, frozenset[str]]:
        """The store codes (DCs included) ranging each SKU. Unknown SKUs are absent. Read from
        the products owning the SKUs, so it always agrees with their variants' ``ranged_at``."""
        variants = {
            variant.sku: variant
            for product in (await self.products_by_sku(skus)).values()
            for variant in product.variants
        }
        return {sku: variants[sku].ranged_at for sku in skus if sku in variants}

    async def warm_up(self) -> None:
        """Read the PIM's assortment table now, so that later lookups need no extra request.
        Raises like any lookup when the PIM fails."""
        await self._assortments.reload()

    async def changes(self, since: str | None) -> ChangeBatch:
        """Up to 1000 product changes after ``since`` (None: from the start of the feed), oldest
        first. The batch's ``cursor`` is the feed's last sequence number read; an empty batch
        means the caller is up to date."""
        params: dict[str, str | int] = {"since": since or "0", "limit": FEED_LIMIT}
        body = await self._get("/api/v1/changes", params)
        return self._parse(lambda: _change_batch(body))

    async def aclose(self) -> None:
        await self._client.aclose()

    # ----------------------------------------------------------------------- transport

    async def _lookup(self, key: str, values: Sequence[str]) -> list[Product]:
        bodies = await self._bounded(
            self._get("/api/v1/products", {key: ",".join(chunk)}) for chunk in _chunks(values)
        )
        return await self._products(
            self._parse(lambda: [row for body in bodies for row in body["items"]])
        )

    async def _products(self, rows: list[JsonObject]) -> list[Product]:
        """Products from payload rows, with their assortment codes resolved to store ids."""
        if not rows:
            return []
        codes = self._parse(lambda: _assortment_codes(rows))
        stores = await self._assortments.covering(codes)
        return self._parse(lambda: [self._product(row, stores) for row in rows])

    async def _read_assortments(self) -> dict[str, frozenset[str]]:
        body = await self._get("/api/v1/assortments", {})
        return self._parse(
            lambda: {str(row["code"]): frozenset(map(str, row["stores"])) for row in body["items"]}
        )

    async def _bounded(self, requests: Iterable[Awaitable[T]]) -> list[T]:
        """Run ``requests`` concurrently, at most ``max_connections`` at a time, so that a large
        batch queues here rather than timing out in the connection pool."""

        async def limited(request: Awaitable[T]) -> T:
            async with self._requests:
                return await request

        tasks = [asyncio.ensure_future(limited(request)) for request in requests]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            # One failed request fails the whole lookup: stop the others instead of leaving
            # them running unobserved.
            for task in tasks:
                task.cancel()
            raise

    async def _get(self, path: str, params: Mapping[str, str | int]) -> JsonObject:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                response = await self._client.get(path, params=params)
            except httpx.TimeoutException as exc:
                raise BackendTimedOut(BACKEND, f"GET {path}: {exc!r}") from exc
            except httpx.TransportError as exc:
                if attempt == ATTEMPTS:
                    raise BackendUnavailable(BACKEND, f"GET {path}: {exc!r}") from exc
                await asyncio.sleep(RETRY_DELAY)
                continue
            if _retryable(response) and attempt < ATTEMPTS:
                await asyncio.sleep(_retry_delay(response))
                continue
            return _json_body(path, response)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _parse(self, build: Callable[[], T]) -> T:
        """Build domain values from a PIM payload; a payload of an unexpected shape is the
        PIM's failure, not ours."""
        try:
            return build()
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BackendError(BACKEND, f"malformed response: {exc!r}") from exc

    # ----------------------------------------------------------------------- parsing

    def _product(self, row: JsonObject, stores: Mapping[str, frozenset[str]]) -> Product:
        code = str(row["code"])
        assortments = _strings(row["assortments"])
        attributes = row["attributes"]
        breadcrumb = [str(category) for category in row["categories"]]
        return Product(
            code=code,
            name=self._text(attributes, "name") or "",
            brand=str(row["brand"]),
            description=self._text(attributes, "description") or "",
            # The PIM lists the breadcrumb root first; ours starts at the most specific category.
            categories=tuple(dict.fromkeys(reversed(breadcrumb))),
            variants=tuple(
                self._variant(code, variant, _ranged_at(variant, assortments, stores))
                for variant in row["variants"]
            ),
            updated_at=_timestamp(row["lastModified"]),
        )

    def _variant(self, product_code: str, row: JsonObject, ranged_at: frozenset[str]) -> Variant:
        codes = sorted({str(attribute["code"]) for attribute in row["attributes"]})
        resolved = ((code, self._text(row["attributes"], code)) for code in codes)
        ean = row.get("ean")
        return Variant(
            sku=str(row["sku"]),
            product_code=product_code,
            attributes=tuple(
                Attribute(code, value) for code, value in resolved if value is not None
            ),
            ean=str(ean) if ean else None,
            ranged_at=ranged_at,
        )

    def _text(self, attributes: list[JsonObject], code: str) -> str | None:
        """The value of attribute ``code`` in the first locale of: ours, the fallback,
        locale-independent, any."""
        values = {a["locale"]: a["value"] for a in attributes if a["code"] == code}
        for locale in (*self._locales, None):
            if values.get(locale) is not None:
                return str(values[locale])
        return next((str(value) for value in values.values() if value is not None), None)

    def _flatten(self, nodes: list[JsonObject], parent: str | None) -> Iterable[Category]:
        for node in nodes:
            code = str(node["code"])
            labels: Mapping[str | None, str] = node.get("labels") or {}
            name = next((labels[loc] for loc in self._locales if labels.get(loc)), None)
            yield Category(code=code, name=name or next(iter(labels.values()), code), parent=parent)
            yield from self._flatten(node.get("children") or [], code)


class _AssortmentTable:
    """The PIM's assortments (code -> store ids), read whole by ``read`` and kept for ``ttl``
    seconds. ``covering`` reads it again before then for a code it lacks, but only once per
    such code: a code the PIM itself does not know waits for the next expiry. One read at a
    time; callers arriving meanwhile share its result."""

    def __init__(
        self, read: Callable[[], Awaitable[dict[str, frozenset[str]]]], ttl: float
    ) -> None:
        self._read = read
        self._ttl = ttl
        self._stores: dict[str, frozenset[str]] = {}
        self._missing: set[str] = set()  # codes asked for and still unknown after a read
        self._read_at: float | None = None
        self._lock = asyncio.Lock()

    async def covering(self, codes: Iterable[str]) -> Mapping[str, frozenset[str]]:
        """The table, read first when it has expired or lacks one of ``codes``."""
        wanted = set(codes)
        if self._stale(wanted):
            async with self._lock:
                # Another caller may have read it while this one waited for the lock.
                if self._stale(wanted):
                    await self._reload(wanted)
        return self._stores

    async def reload(self) -> None:
        """Read the table now."""
        async with self._lock:
            await self._reload(set())

    def _stale(self, wanted: set[str]) -> bool:
        return self._expired() or not wanted <= self._stores.keys() | self._missing

    def _expired(self) -> bool:
        return self._read_at is None or time.monotonic() - self._read_at >= self._ttl

    async def _reload(self, wanted: set[str]) -> None:
        if self._expired():
            self._missing.clear()
        self._stores = await self._read()
        self._missing = (self._missing | wanted) - self._stores.keys()
        self._read_at = time.monotonic()


def plan_pages(offset: int, limit: int, page_limit: int) -> tuple[int, list[int]]:
    """The page size (at most ``page_limit``) and the 1-based page numbers that cover items
    ``offset`` to ``offset + limit - 1`` in the fewest pages, then with the fewest items read."""
    last = offset + limit - 1
    best: tuple[int, int, int] | None = None
    for size in range(1, page_limit + 1):
        count = last // size - offset // size + 1
        if best is None or (count, count * size) < (best[0], best[1]):
            best = (count, count * size, size)
    assert best is not None  # page_limit >= 1
    size = best[2]
    return size, list(range(offset // size + 1, last // size + 2))


def _assortment_codes(rows: Iterable[JsonObject]) -> set[str]:
    """Every assortment code the product rows name, on products or on variants."""
    codes = {code for row in rows for code in _strings(row["assortments"])}
    for row in rows:
        for variant in row["variants"]:
            codes.update(_strings(variant.get("assortments") or []))
    return codes


def _ranged_at(
    variant: JsonObject, inherited: list[str], stores: Mapping[str, frozenset[str]]
) -> frozenset[str]:
    """The stores of the variant's own assortments, else of its product's (the PIM repeats
    them on a variant only where they differ)."""
    own = variant.get("assortments")
    codes = inherited if own is None else _strings(own)
    return frozenset().union(*(stores.get(code, frozenset()) for code in codes))


def _strings(values: object) -> list[str]:
    if not isinstance(values, list):
        raise TypeError(f"expected a list of codes, got {values!r}")
    return [str(value) for value in values]


def _chunks(keys: Sequence[str]) -> list[list[str]]:
    unique = list(dict.fromkeys(key for key in keys if key))
    return [unique[start : start + BATCH_LIMIT] for start in range(0, len(unique), BATCH_LIMIT)]


def _filter_params(query: ProductFilter) -> dict[str, str]:
    params = {"category": query.category, "brand": query.brand, "q": query.search}
    return {name: value for name, value in params.items() if value}


def _change_batch(body: JsonObject) -> ChangeBatch:
    changes = tuple(
        Change(
            entity=str(row["entity"]),
            key=str(row["code"]),
            at=_timestamp(row["changedAt"]),
            cursor=str(row["seq"]),
        )
        for row in body["changes"]
    )
    return ChangeBatch(changes=changes, cursor=str(body["lastSeq"]))


def _timestamp(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp without a UTC offset: {value!r}")
    return parsed.astimezone(UTC)


def _locale_code(locale: str) -> str:
    """``en-GB`` and ``en_GB`` both mean the PIM's ``en_GB``."""
    return locale.replace("-", "_")


def _retryable(response: Answer) -> bool:
    return response.status_code == 429 or response.status_code >= 500


def _retry_delay(response: Answer) -> float:
    try:
        return min(float(response.headers.get("Retry-After", RETRY_DELAY)), MAX_RETRY_DELAY)
    except ValueError:  # an HTTP date instead of seconds: not worth parsing for one retry
        return RETRY_DELAY


def _json_body(path: str, response: Answer) -> JsonObject:
    """The decoded body of a successful response; error statuses become ports' errors."""
    status = response.status_code
    if _retryable(response):
        raise BackendUnavailable(BACKEND, f"GET {path}: HTTP {status} {_error_message(response)}")
    if status >= 400:
        code = _error_code(response) or f"HTTP_{status}"
        detail = f"GET {path}: HTTP {status} {_error_message(response)}"
        raise BackendRejected(BACKEND, detail, code=code)
    try:
        body = response.json()
    except ValueError as exc:
        raise BackendError(BACKEND, f"GET {path}: body is not JSON") from exc
    if not isinstance(body, dict):
        raise BackendError(BACKEND, f"GET {path}: expected a JSON object")
    return body


def _error_body(response: Answer) -> JsonObject:
    try:
        body = response.json()
    except ValueError:
        return {}
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def _error_code(response: Answer) -> str | None:
    code = _error_body(response).get("code")
    return str(code).upper().replace("-", "_").replace(" ", "_") if code else None


def _error_message(response: Answer) -> str:
    return str(_error_body(response).get("message") or response.reason_phrase)
