"""The simulated PIM (product information management): a paged REST/JSON catalogue.

Quirks a client has to live with, as with real PIMs:

- every text is an attribute list of ``{"code", "value", "locale"}``; localisable attributes
  appear once per locale, others once with ``"locale": null``; numeric sizes come as numbers;
- a product's ``categories`` is its breadcrumb, root first, and category names in
  ``/api/v1/categories`` are ``{locale: label}`` maps instead of attribute lists;
- ``lastModified`` is in the server's clock, CET all year round (no daylight saving), while the
  change feed's ``changedAt`` is UTC;
- ``pageSize`` above 200 is silently cut to 200 (the response says so); batch lookups by
  ``codes`` or ``skus`` refuse more than 100 keys with HTTP 400; unknown keys are left out;
- store ranging is kept per SKU as named assortments (lists of store codes, DCs included);
  payloads name a product's assortment codes, never its stores, and a variant repeats
  ``assortments`` only where it differs from its product's; the codes are resolved with the
  master data of ``/api/v1/assortments``, and deleting an assortment leaves its code dangling on
  the products that named it.

Wire format: see ``create_app``. The data is the ``catalog.json`` export written by ``write_data``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import QueryParams
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from legacy.demo import DemoEstate, DemoProduct
from legacy.sim import HeldAnswers, SimSettings, SimulatedFailure, Simulator

JsonObject = dict[str, Any]

LOCALES = ("en_GB", "de_DE")
PAGE_SIZE_LIMIT = 200
BATCH_LIMIT = 100
FEED_LIMIT = 1000
SERVER_CLOCK = timezone(timedelta(hours=1))  # CET without daylight saving, as the PIM runs
EXPORT_FORMAT = "pim-export/2"


# --------------------------------------------------------------------------- export


def write_data(estate: DemoEstate, directory: Path) -> None:
    """Write ``directory/catalog.json``: categories, products and per-SKU store ranging."""
    directory.mkdir(parents=True, exist_ok=True)
    parents = {category.code: category.parent for category in estate.categories}
    assortments: dict[tuple[str, ...], str] = {}
    ranging: dict[str, str] = {}
    for product in estate.products:
        stores = tuple(loc.code for loc in estate.locations if estate.ranged(product, loc))
        assortment = assortments.setdefault(stores, f"ASM-{len(assortments) + 1:03d}")
        ranging.update((variant.sku, assortment) for variant in product.variants)
    catalog = {
        "format": EXPORT_FORMAT,
        "locales": list(LOCALES),
        "categories": [
            {"code": c.code, "parent": c.parent, "labels": {"en_GB": c.name_en, "de_DE": c.name_de}}
            for c in estate.categories
        ],
        "assortments": {name: list(stores) for stores, name in assortments.items()},
        "ranging": ranging,
        "products": [_export_product(product, parents) for product in estate.products],
    }
    (directory / "catalog.json").write_text(json.dumps(catalog, separators=(",", ":")))


def _export_product(product: DemoProduct, parents: dict[str, str | None]) -> JsonObject:
    return {
        "code": product.code,
        "status": "active",
        "brand": product.brand,
        "categories": _breadcrumb(product.category, parents),
        "attributes": [
            _attribute("name", product.name_en, "en_GB"),
            _attribute("name", product.name_de, "de_DE"),
            _attribute("description", product.description_en, "en_GB"),
            _attribute("description", product.description_de, "de_DE"),
            _attribute("material", product.material, None),
        ],
        "variants": [
            {
                "sku": variant.sku,
                "ean": variant.ean,
                "status": "active",
                "attributes": [
                    # The PIM stores numeric sizes as numbers, so they arrive as JSON numbers.
                    _attribute(
                        "size", int(variant.size) if variant.size.isdigit() else variant.size
                    ),
                    _attribute("color", variant.color_en, "en_GB"),
                    _attribute("color", variant.color_de, "de_DE"),
                ],
            }
            for variant in product.variants
        ],
        "lastModified": product.updated_at.astimezone(SERVER_CLOCK).isoformat(),
    }


def _attribute(code: str, value: object, locale: str | None = None) -> JsonObject:
    return {"code": code, "value": value, "locale": locale}


def _breadcrumb(leaf: str, parents: dict[str, str | None]) -> list[str]:
    path: list[str] = []
    code: str | None = leaf
    while code is not None:
        path.append(code)
        code = parents.get(code)
    return path[::-1]


# --------------------------------------------------------------------------- in-memory catalogue


class BadRequest(Exception):
    """A request the PIM refuses with HTTP 400 and an error ``code``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Catalogue:
    """The PIM's data in memory, indexed for paging, batch lookups, search and the change feed."""

    def __init__(self, document: JsonObject) -> None:
        self.categories: list[JsonObject] = document["categories"]
        self.products: dict[str, JsonObject] = {p["code"]: p for p in document["products"]}
        self.codes = sorted(self.products)
        self.owners = {v["sku"]: p["code"] for p in document["products"] for v in p["variants"]}
        self.assortments: dict[str, list[str]] = document["assortments"]
        self.ranging = {sku: [name] for sku, name in document["ranging"].items()}
        for product in self.products.values():
            _label_assortments(product, self.ranging)
        self.subtrees = _subtrees(self.categories)
        self.texts = {code: _search_text(product) for code, product in self.products.items()}
        history = sorted(self.products.values(), key=lambda p: (p["lastModified"], p["code"]))
        self.feed: list[JsonObject] = []
        for product in history:
            self._record(product["code"], datetime.fromisoformat(product["lastModified"]), [])

    @classmethod
    def load(cls, path: Path) -> Catalogue:
        document = json.loads(path.read_bytes())
        if document.get("format") != EXPORT_FORMAT:
            raise ValueError(f"{path}: not a {EXPORT_FORMAT} export")
        return cls(document)

    def matching(self, category: str | None, brand: str | None, text: str | None) -> list[str]:
        """Codes of the products matching every given filter, in code order."""
        codes: Iterable[str] = self.codes
        if category is not None:
            subtree = self.subtrees.get(category, frozenset())
            codes = [c for c in codes if subtree.intersection(self.products[c]["categories"])]
        if brand is not None:
            codes = [c for c in codes if self.products[c]["brand"].casefold() == brand.casefold()]
        if text is not None:
            terms = text.casefold().split()
            codes = [c for c in codes if all(term in self.texts[c] for term in terms)]
        return list(codes)

    def by_codes(self, codes: Iterable[str]) -> list[JsonObject]:
        return [self.products[code] for code in sorted(set(codes)) if code in self.products]

    def by_skus(self, skus: Iterable[str]) -> list[JsonObject]:
        return self.by_codes(self.owners[sku] for sku in skus if sku in self.owners)

    def stores(self, sku: str) -> list[str]:
        """The store codes of every assortment ranging ``sku``; a dangling code adds none."""
        codes = (self.assortments.get(name, []) for name in self.ranging.get(sku, []))
        return sorted({store for stores in codes for store in stores})

    def changes_after(self, since: int, limit: int) -> list[JsonObject]:
        # Sequence numbers are 1-based and contiguous, so the feed index is seq - 1.
        return self.feed[max(since, 0) : max(since, 0) + limit]

    def update(self, code: str, changes: JsonObject, now: datetime) -> JsonObject:
        """Apply a partial update (``name``, ``description``, ``brand``, ``status``, and
        ``assortments``, which ranges every variant) and append it to the change feed. Raises
        KeyError for an unknown product, BadRequest otherwise."""
        product = self.products[code]
        unknown = set(changes) - {"name", "description", "brand", "status", "locale", "assortments"}
        if unknown:
            raise BadRequest("UNKNOWN_FIELD", f"cannot update {sorted(unknown)}")
        if "assortments" in changes:
            self._assign(product, changes["assortments"])
        locale = changes.get("locale", "en_GB")
        for field in ("name", "description"):
            if field in changes:
                values = changes[field]
                for value_locale, value in (
                    values.items() if isinstance(values, dict) else [(locale, values)]
                ):
                    _set_attribute(product["attributes"], field, value_locale, str(value))
        for field in ("brand", "status"):
            if field in changes:
                product[field] = str(changes[field])
        product["lastModified"] = now.astimezone(SERVER_CLOCK).isoformat()
        self.texts[code] = _search_text(product)
        self._record(code, now, sorted(set(changes) - {"locale"}))
        return product

    def _assign(self, product: JsonObject, assortments: object) -> None:
        """Range every variant (a list of codes) or the variants named (``{sku: [codes]}``)."""
        skus = [variant["sku"] for variant in product["variants"]]
        wanted = assortments if isinstance(assortments, dict) else dict.fromkeys(skus, assortments)
        ranging: dict[str, list[str]] = {}
        for sku, names in wanted.items():
            if sku not in skus or not isinstance(names, list):
                raise BadRequest("INVALID_BODY", f"{sku}: expected a list of assortment codes")
            ranging[sku] = [str(name) for name in names]
            unknown = sorted(set(ranging[sku]) - set(self.assortments))
            if unknown:
                raise BadRequest("UNKNOWN_ASSORTMENT", f"no assortments {unknown}")
        self.ranging.update(ranging)
        _label_assortments(product, self.ranging)

    def _record(self, code: str, at: datetime, fields: list[str]) -> None:
        changed_at = at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        self.feed.append(
            {
                "seq": len(self.feed) + 1,
                "entity": "product",
                "code": code,
                "changedAt": changed_at,
                "fields": fields,
            }
        )


def _label_assortments(product: JsonObject, ranging: dict[str, list[str]]) -> None:
    """Name the product's assortments as the PIM exports them: the first variant's on the
    product, and on each variant only where its own differ."""
    names = [ranging.get(variant["sku"], []) for variant in product["variants"]]
    product["assortments"] = list(names[0]) if names else []
    for variant, own in zip(product["variants"], names, strict=True):
        if own != product["assortments"]:
            variant["assortments"] = list(own)
        else:
            variant.pop("assortments", None)


def _set_attribute(attributes: list[JsonObject], code: str, locale: str, value: str) -> None:
    for attribute in attributes:
        if attribute["code"] == code and attribute["locale"] == locale:
            attribute["value"] = value
            return
    attributes.append(_attribute(code, value, locale))


def _subtrees(categories: list[JsonObject]) -> dict[str, frozenset[str]]:
    """Each category code with the codes of all its descendants (itself included)."""
    children: dict[str | None, list[str]] = {}
    for category in categories:
        children.setdefault(category["parent"], []).append(category["code"])

    def collect(code: str) -> frozenset[str]:
        found = {code}
        for child in children.get(code, []):
            found |= collect(child)
        return frozenset(found)

    return {category["code"]: collect(category["code"]) for category in categories}


def _search_text(product: JsonObject) -> str:
    texts = [product["brand"]]
    texts += [
        str(a["value"]) for a in product["attributes"] if a["code"] in ("name", "description")
    ]
    return "\n".join(texts).casefold()


def _category_tree(categories: list[JsonObject]) -> list[JsonObject]:
    nodes = {
        c["code"]: {"code": c["code"], "labels": c["labels"], "children": []} for c in categories
    }
    roots: list[JsonObject] = []
    for category in categories:
        node = nodes[category["code"]]
        parent = category["parent"]
        (nodes[parent]["children"] if parent in nodes else roots).append(node)
    return roots


# --------------------------------------------------------------------------- HTTP API


def create_app(settings: SimSettings) -> Starlette:
    """The PIM's REST API over ``settings.data_dir / "pim" / "catalog.json"``:

    - ``GET /api/v1/products?page=1&pageSize=50[&category=&brand=&q=]`` -> ``{"page",
      "pageSize", "totalItems", "items": [product...]}`` in product code order;
    - ``GET /api/v1/products?codes=P000001,P000002`` or ``?skus=...`` (at most 100) -> same
      envelope holding the products found (the owners of the SKUs);
    - ``GET /api/v1/categories`` -> ``{"categories": [{"code", "labels", "children"}...]}``;
    - ``GET /api/v1/ranging?skus=...`` (at most 100) -> ``{"items": [{"sku", "stores"}...]}``;
    - ``GET /api/v1/assortments`` -> ``{"totalItems", "items": [{"code", "stores"}...]}``, every
      assortment in code order (products name these codes in ``"assortments"``);
    - ``GET /api/v1/changes?since=0&limit=100`` -> ``{"changes": [...], "lastSeq", "hasMore"}``;
    - ``POST /_sim/products/{code}`` with e.g. ``{"name": "..."}`` (simulation only) edits a
      product and appends to the change feed; ``{"assortments": ["ASM-001"]}`` re-ranges it
      (``{"assortments": {sku: [...]}}`` only the variants named);
    - ``POST /_sim/assortments/{code}`` with ``{"stores": [...]}`` creates or replaces an
      assortment, ``DELETE /_sim/assortments/{code}`` removes it (simulation only).

    Errors are ``{"error": {"code", "message"}}`` with 400, 404 or 503 (simulated failure).
    """
    catalogue = Catalogue.load(settings.data_dir / "pim" / "catalog.json")
    api = _PimApi(catalogue, Simulator("pim", settings.knobs, settings.seed))
    return Starlette(routes=api.routes(), middleware=[Middleware(HeldAnswers)])


Handler = Callable[[Request], JsonObject]


class _PimApi:
    def __init__(self, catalogue: Catalogue, sim: Simulator) -> None:
        self.catalogue = catalogue
        self.sim = sim

    def routes(self) -> list[Route]:
        return [
            Route("/api/v1/products", self.products, methods=["GET"]),
            Route("/api/v1/categories", self._serving("getCategories", self.categories)),
            Route("/api/v1/ranging", self._serving("getRanging", self.ranging)),
            Route("/api/v1/assortments", self._serving("getAssortments", self.assortments)),
            Route("/api/v1/changes", self._serving("getChanges", self.changes)),
            Route("/_sim/products/{code}", self.update, methods=["POST"]),
            Route("/_sim/assortments/{code}", self.edit_assortment, methods=["POST", "DELETE"]),
            *self.sim.routes(),
        ]

    async def products(self, request: Request) -> JSONResponse:
        if "codes" in request.query_params or "skus" in request.query_params:
            return await self._serve("getProducts", self.lookup, request)
        return await self._serve("listProducts", self.listing, request)

    def _serving(
        self, operation: str, handler: Handler
    ) -> Callable[[Request], Awaitable[JSONResponse]]:
        async def endpoint(request: Request) -> JSONResponse:
            return await self._serve(operation, handler, request)

        return endpoint

    async def _serve(self, operation: str, handler: Handler, request: Request) -> JSONResponse:
        try:
            await self.sim.call(operation)
            return JSONResponse(handler(request))
        except SimulatedFailure as exc:
            return _error(503, "SERVICE_UNAVAILABLE", f"PIM temporarily unavailable ({exc})")
        except BadRequest as exc:
            return _error(400, exc.code, exc.message)

    def listing(self, request: Request) -> JsonObject:
        params = request.query_params
        page = _integer(params, "page", 1, minimum=1)
        size = min(_integer(params, "pageSize", 50, minimum=1), PAGE_SIZE_LIMIT)
        codes = self.catalogue.matching(
            params.get("category"), params.get("brand"), params.get("q")
        )
        start = (page - 1) * size
        items = self.catalogue.by_codes(codes[start : start + size])
        return {"page": page, "pageSize": size, "totalItems": len(codes), "items": items}

    def lookup(self, request: Request) -> JsonObject:
        if "codes" in request.query_params and "skus" in request.query_params:
            raise BadRequest("INVALID_PARAMETER", "use either codes or skus, not both")
        if "codes" in request.query_params:
            items = self.catalogue.by_codes(_keys(request, "codes"))
        else:
            items = self.catalogue.by_skus(_keys(request, "skus"))
        return {"page": 1, "pageSize": len(items), "totalItems": len(items), "items": items}

    def categories(self, request: Request) -> JsonObject:
        return {"categories": _category_tree(self.catalogue.categories)}

    def ranging(self, request: Request) -> JsonObject:
        skus = sorted(set(_keys(request, "skus")))
        ranged = [sku for sku in skus if sku in self.catalogue.ranging]
        return {"items": [{"sku": sku, "stores": self.catalogue.stores(sku)} for sku in ranged]}

    def assortments(self, request: Request) -> JsonObject:
        table = self.catalogue.assortments
        items = [{"code": code, "stores": table[code]} for code in sorted(table)]
        return {"totalItems": len(items), "items": items}

    def changes(self, request: Request) -> JsonObject:
        since = _integer(request.query_params, "since", 0, minimum=0)
        limit = min(_integer(request.query_params, "limit", 100, minimum=1), FEED_LIMIT)
        changes = self.catalogue.changes_after(since, limit)
        head = len(self.catalogue.feed)
        last = changes[-1]["seq"] if changes else min(since, head)
        return {"changes": changes, "lastSeq": last, "hasMore": last < head}

    async def update(self, request: Request) -> JSONResponse:
        body = await request.json()
        code = request.path_params["code"]
        if not isinstance(body, dict):
            return _error(400, "INVALID_BODY", "expected a JSON object of fields")
        if code not in self.catalogue.products:
            return _error(404, "NOT_FOUND", f"no product {code}")
        try:
            product = self.catalogue.update(code, body, datetime.now(UTC).replace(microsecond=0))
        except BadRequest as exc:
            return _error(400, exc.code, exc.message)
        return JSONResponse(product)

    async def edit_assortment(self, request: Request) -> JSONResponse:
        code = request.path_params["code"]
        table = self.catalogue.assortments
        if request.method == "DELETE":
            found = table.pop(code, None)
            return JSONResponse({"code": code, "deleted": found is not None})
        body = await request.json()
        stores = body.get("stores") if isinstance(body, dict) else None
        if not isinstance(stores, list) or not all(isinstance(store, str) for store in stores):
            return _error(400, "INVALID_BODY", 'expected {"stores": [store codes]}')
        table[code] = list(stores)
        return JSONResponse({"code": code, "stores": table[code]})


def _keys(request: Request, name: str) -> list[str]:
    keys = [key.strip() for key in request.query_params[name].split(",") if key.strip()]
    if len(keys) > BATCH_LIMIT:
        raise BadRequest(
            "TOO_MANY_CODES", f"at most {BATCH_LIMIT} {name} per request, got {len(keys)}"
        )
    return keys


def _integer(params: QueryParams, name: str, default: int, minimum: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest("INVALID_PARAMETER", f"{name} must be an integer") from None
    if value < minimum:
        raise BadRequest("INVALID_PARAMETER", f"{name} must be at least {minimum}")
    return value


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)
