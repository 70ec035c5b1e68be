"""The pricing engine: a SOAP 1.1 service (document/literal) over a zoned price book.

It behaves like the engine it stands in for, quirks included:

- amounts are German-formatted decimal strings ("14,99", "1.234,50");
- ``GetPrices`` takes at most 50 items; items the engine does not know are answered with
  ``<Status>NOT_FOUND</Status>`` instead of being left out;
- a store belongs to one price zone (BASE, CITY, OUTLET); a zone overrides the base price of some
  items only, and the answer names the zone of the store whether or not it overrides the item;
- every error is a SOAP fault with HTTP 500 (``soap:Client`` for the caller's mistakes, with a
  ``PricingFault`` code in the detail, ``soap:Server`` for its own), except a full outage, where
  the load balancer in front of it answers a plain HTTP 503;
- every price change is journalled with a sequence number, read back with ``GetPriceChanges``.

The WSDL is at ``GET /PricingService?wsdl``. ``POST /_sim/prices`` (simulation only) changes a
price: ``{"sku": "100000010", "zone": "BASE", "price": "12.99"}``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path

from lxml import etree
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from legacy.demo import ANCHOR, CURRENCY, DemoEstate
from legacy.sim import HeldAnswers, SimSettings, SimulatedFailure, Simulator

NAMESPACE = "http://pricing.example.com/2012/PricingService"
SOAP_ENVELOPE = "http://schemas.xmlsoap.org/soap/envelope/"
WSDL_SOAP = "http://schemas.xmlsoap.org/wsdl/soap/"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
BASE_ZONE = "BASE"
MAX_ITEMS = 50
DEFAULT_CHANGE_ROWS = 500
MAX_CHANGE_ROWS = 1000
MAX_REQUEST_BYTES = 1_000_000
DATA_FILE = "prices.json"
XML_CONTENT_TYPE = "text/xml; charset=utf-8"

# The engine never resolves entities, loads DTDs or touches the network while parsing.
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
_NSMAP = {"soap": SOAP_ENVELOPE, "xsi": XSI, "ns2": NAMESPACE}


def write_data(estate: DemoEstate, directory: Path) -> None:
    """Write the engine's price book for ``estate`` to ``directory/prices.json``."""
    directory.mkdir(parents=True, exist_ok=True)
    document = {
        "currency": CURRENCY,
        "valid_from": ANCHOR.isoformat(),
        "items": {
            variant.sku: {
                "price": str(variant.base_price),
                "compare_at": None if variant.compare_at is None else str(variant.compare_at),
            }
            for variant in estate.skus
        },
        "stores": {location.code: location.price_zone for location in estate.locations},
        "zones": {
            zone: {sku: str(price) for sku, price in prices.items()}
            for zone, prices in sorted(estate.zone_overrides.items())
        },
    }
    (directory / DATA_FILE).write_text(json.dumps(document, separators=(",", ":")) + "\n")


# --------------------------------------------------------------------------- price book


@dataclass(frozen=True, slots=True)
class PriceChange:
    sequence: int
    sku: str
    zone: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Quote:
    price: Decimal
    compare_at: Decimal | None
    zone: str
    valid_from: datetime


class PriceBook:
    """Base prices, zone overrides, the zone of each store, and the change journal."""

    def __init__(
        self,
        currency: str,
        valid_from: datetime,
        items: dict[str, tuple[Decimal, Decimal | None]],
        stores: dict[str, str],
        overrides: dict[str, dict[str, Decimal]],
    ) -> None:
        self.currency = currency
        self.valid_from = valid_from
        self.items = items
        self.stores = stores
        self.overrides = overrides
        self.zones = {BASE_ZONE, *stores.values(), *overrides}
        self.journal: list[PriceChange] = []
        self._changed_at: dict[tuple[str, str], datetime] = {}

    @classmethod
    def load(cls, path: Path) -> PriceBook:
        document = json.loads(path.read_text())
        items = {
            sku: (
                Decimal(row["price"]),
                None if row["compare_at"] is None else Decimal(row["compare_at"]),
            )
            for sku, row in document["items"].items()
        }
        overrides = {
            zone: {sku: Decimal(price) for sku, price in prices.items()}
            for zone, prices in document["zones"].items()
        }
        valid_from = datetime.fromisoformat(document["valid_from"])
        return cls(document["currency"], valid_from, items, dict(document["stores"]), overrides)

    def quote(self, sku: str, zone: str) -> Quote | None:
        """The price of ``sku`` in ``zone``: the zone's override, else the base price."""
        item = self.items.get(sku)
        if item is None:
            return None
        base, compare_at = item
        override = self.overrides.get(zone, {}).get(sku)
        source = BASE_ZONE if override is None else zone
        valid_from = self._changed_at.get((source, sku), self.valid_from)
        return Quote(base if override is None else override, compare_at, zone, valid_from)

    def set_price(self, sku: str, zone: str, price: Decimal, at: datetime) -> PriceChange:
        """Change the base price (zone BASE) or a zone's override, and journal it."""
        if zone == BASE_ZONE:
            self.items[sku] = (price, self.items[sku][1])
        else:
            self.overrides.setdefault(zone, {})[sku] = price
        self._changed_at[(zone, sku)] = at
        change = PriceChange(len(self.journal) + 1, sku, zone, at)
        self.journal.append(change)
        return change

    def changes_after(self, since: int, rows: int) -> tuple[list[PriceChange], bool]:
        """Up to ``rows`` journal entries after sequence ``since``, and whether more follow."""
        # Sequence numbers are dense from 1, so entry n sits at index n - 1.
        start = min(since, len(self.journal))
        return self.journal[start : start + rows], start + rows < len(self.journal)


# --------------------------------------------------------------------------- SOAP plumbing


class SoapFault(Exception):
    """A SOAP 1.1 fault: ``side`` is the faultcode (Client, Server, VersionMismatch)."""

    def __init__(self, side: str, code: str, message: str) -> None:
        super().__init__(message)
        self.side = side
        self.code = code
        self.message = message


def _qualified(name: str) -> str:
    return f"{{{NAMESPACE}}}{name}"


def _add(parent: etree._Element, name: str, text: str | None = None) -> etree._Element:
    child = etree.SubElement(parent, _qualified(name))
    child.text = text
    return child


def _text(element: etree._Element | None) -> str | None:
    if element is None or element.text is None:
        return None
    return element.text.strip()


def format_amount(amount: Decimal) -> str:
    """``Decimal("1234.5")`` -> ``"1.234,50"``: the engine's German number format."""
    return f"{amount:,.2f}".translate(str.maketrans(",.", ".,"))


def format_instant(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _envelope(payload: etree._Element) -> bytes:
    envelope = etree.Element(f"{{{SOAP_ENVELOPE}}}Envelope", nsmap=_NSMAP)
    etree.SubElement(envelope, f"{{{SOAP_ENVELOPE}}}Body").append(payload)
    return etree.tostring(envelope, xml_declaration=True, encoding="utf-8")


def _fault_response(fault: SoapFault) -> Response:
    element = etree.Element(f"{{{SOAP_ENVELOPE}}}Fault", nsmap=_NSMAP)
    etree.SubElement(element, "faultcode").text = f"soap:{fault.side}"
    etree.SubElement(element, "faultstring").text = fault.message
    detail = etree.SubElement(etree.SubElement(element, "detail"), _qualified("PricingFault"))
    _add(detail, "Code", fault.code)
    _add(detail, "Message", fault.message)
    # SOAP 1.1 over HTTP: every fault is a 500, whoever is to blame.
    return Response(_envelope(element), status_code=500, media_type=XML_CONTENT_TYPE)


def _read_request(data: bytes, soap_action: str | None) -> tuple[str, etree._Element]:
    """The operation named by the Body's element and that element, or a Client fault."""
    if len(data) > MAX_REQUEST_BYTES:
        raise SoapFault("Client", "REQUEST_TOO_LARGE", "request exceeds 1 MB")
    try:
        root = etree.fromstring(data, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise SoapFault("Client", "MALFORMED_REQUEST", f"not well-formed XML: {exc}") from exc
    if root.getroottree().docinfo.internalDTD is not None:
        raise SoapFault("Client", "MALFORMED_REQUEST", "a DOCTYPE is not allowed")
    if root.tag != f"{{{SOAP_ENVELOPE}}}Envelope":
        raise SoapFault("VersionMismatch", "VERSION_MISMATCH", "expected a SOAP 1.1 Envelope")
    body = root.find(f"{{{SOAP_ENVELOPE}}}Body")
    payloads = [] if body is None else [child for child in body if isinstance(child.tag, str)]
    if len(payloads) != 1:
        raise SoapFault("Client", "MALFORMED_REQUEST", "the Body must hold one request element")
    name = etree.QName(payloads[0])
    if name.namespace != NAMESPACE or name.localname not in _OPERATIONS:
        raise SoapFault("Client", "UNKNOWN_OPERATION", f"no operation {name.text}")
    if soap_action is None:
        raise SoapFault("Client", "MISSING_SOAPACTION", "the SOAPAction header is required")
    action = soap_action.strip().strip('"')
    if action and action != f"{NAMESPACE}/{name.localname}":
        raise SoapFault("Client", "SOAPACTION_MISMATCH", f"SOAPAction {action} does not match")
    return name.localname, payloads[0]


# --------------------------------------------------------------------------- operations


def _get_prices(book: PriceBook, request: etree._Element) -> etree._Element:
    store = _text(request.find(_qualified("StoreNo")))
    items = request.find(_qualified("Items"))
    skus = [] if items is None else [_text(e) or "" for e in items.findall(_qualified("ItemNo"))]
    if not skus:
        raise SoapFault("Client", "MALFORMED_REQUEST", "Items must hold at least one ItemNo")
    if len(skus) > MAX_ITEMS:
        message = f"{len(skus)} items requested; at most {MAX_ITEMS} per request"
        raise SoapFault("Client", "TOO_MANY_ITEMS", message)
    zone = book.stores.get(store) if store else BASE_ZONE
    if zone is None:
        raise SoapFault("Client", "UNKNOWN_STORE", f"store {store} has no price zone")
    response = etree.Element(_qualified("GetPricesResponse"), nsmap=_NSMAP)
    price_list = _add(response, "PriceList")
    for sku in skus:
        _add_item(price_list, sku, book.quote(sku, zone), book.currency)
    return response


def _add_item(price_list: etree._Element, sku: str, quote: Quote | None, currency: str) -> None:
    item = _add(price_list, "Item")
    _add(item, "ItemNo", sku)
    _add(item, "Status", "NOT_FOUND" if quote is None else "OK")
    if quote is None:
        return
    _add(item, "Price", format_amount(quote.price))
    if quote.compare_at is None:
        _add(item, "CompareAtPrice").set(f"{{{XSI}}}nil", "true")
    else:
        _add(item, "CompareAtPrice", format_amount(quote.compare_at))
    _add(item, "Currency", currency)
    _add(item, "Zone", quote.zone)
    _add(item, "ValidFrom", format_instant(quote.valid_from))


def _get_price_changes(book: PriceBook, request: etree._Element) -> etree._Element:
    since = _whole_number(request, "Since", None)
    rows = min(_whole_number(request, "MaxRows", DEFAULT_CHANGE_ROWS), MAX_CHANGE_ROWS)
    changes, more = book.changes_after(since, max(rows, 1))
    response = etree.Element(_qualified("GetPriceChangesResponse"), nsmap=_NSMAP)
    journal = _add(response, "Changes")
    for change in changes:
        entry = _add(journal, "Change")
        _add(entry, "Sequence", str(change.sequence))
        _add(entry, "ItemNo", change.sku)
        _add(entry, "Zone", change.zone)
        _add(entry, "ChangedAt", format_instant(change.at))
    _add(response, "LastSequence", str(changes[-1].sequence if changes else since))
    _add(response, "MoreAvailable", "true" if more else "false")
    return response


def _whole_number(request: etree._Element, name: str, default: int | None) -> int:
    text = _text(request.find(_qualified(name)))
    if text is None and default is not None:
        return default
    if text is None or not text.isdigit():
        raise SoapFault("Client", f"INVALID_{name.upper()}", f"{name} must be a whole number")
    return int(text)


_OPERATIONS: dict[str, Callable[[PriceBook, etree._Element], etree._Element]] = {
    "GetPrices": _get_prices,
    "GetPriceChanges": _get_price_changes,
}


# --------------------------------------------------------------------------- HTTP


class PricingService:
    """The HTTP face of the engine: the SOAP endpoint, its WSDL and the price-change hook."""

    def __init__(self, book: PriceBook, simulator: Simulator, wsdl: etree._Element) -> None:
        self.book = book
        self.simulator = simulator
        self._wsdl = wsdl
        self._address = wsdl.find(f".//{{{WSDL_SOAP}}}address")

    async def endpoint(self, request: Request) -> Response:
        if request.method == "GET":
            return self._describe(request)
        if not request.headers.get("content-type", "").startswith("text/xml"):
            return PlainTextResponse("SOAP 1.1 requests are text/xml", status_code=415)
        try:
            operation, payload = _read_request(
                await request.body(), request.headers.get("soapaction")
            )
            await self.simulator.call(operation)
            answer = _OPERATIONS[operation](self.book, payload)
        except SimulatedFailure as failure:
            if failure.outage:
                return PlainTextResponse("Service Unavailable", status_code=503)
            return _fault_response(SoapFault("Server", "INTERNAL_ERROR", "pricing kernel error"))
        except SoapFault as fault:
            return _fault_response(fault)
        return Response(_envelope(answer), media_type=XML_CONTENT_TYPE)

    def _describe(self, request: Request) -> Response:
        if "wsdl" not in {key.lower() for key in request.query_params}:
            return PlainTextResponse("PricingService: see ?wsdl", status_code=400)
        if self._address is not None:
            self._address.set(
                "location", f"{request.url.scheme}://{request.url.netloc}/PricingService"
            )
        document = etree.tostring(self._wsdl, xml_declaration=True, encoding="utf-8")
        return Response(document, media_type=XML_CONTENT_TYPE)

    async def set_price(self, request: Request) -> JSONResponse:
        """Simulation only: change one price as a price manager would, journalling it."""
        try:
            body = await request.json()
            sku, zone = str(body["sku"]), str(body.get("zone", BASE_ZONE))
            price = _positive_cents(body["price"])
        except (ValueError, KeyError, TypeError, AttributeError):
            message = 'expected {"sku": ..., "zone": ..., "price": "12.99"} with a positive price'
            return JSONResponse({"error": message}, status_code=400)
        if sku not in self.book.items or zone not in self.book.zones:
            return JSONResponse({"error": f"unknown sku {sku} or zone {zone}"}, status_code=404)
        change = self.book.set_price(sku, zone, price, datetime.now(UTC))
        return JSONResponse(
            {
                "sku": sku,
                "zone": zone,
                "price": str(price),
                "sequence": change.sequence,
                "changed_at": format_instant(change.at),
            }
        )


def _positive_cents(value: object) -> Decimal:
    """A positive amount with at most two decimals, or ValueError."""
    try:
        amount = Decimal(str(value))
        exact = amount.is_finite() and amount == amount.quantize(Decimal("0.01"))
    except InvalidOperation as exc:
        raise ValueError(f"not an amount: {value!r}") from exc
    if not exact or amount <= 0:
        raise ValueError(f"not a positive amount in cents: {value!r}")
    return amount


def create_app(settings: SimSettings) -> Starlette:
    """The engine over HTTP, its book loaded from ``data_dir/pricing/prices.json``."""
    book = PriceBook.load(settings.data_dir / "pricing" / DATA_FILE)
    wsdl = etree.fromstring(
        resources.files("legacy").joinpath("pricing.wsdl").read_bytes(), _PARSER
    )
    service = PricingService(book, Simulator("pricing", settings.knobs, settings.seed), wsdl)
    return Starlette(
        routes=[
            Route("/PricingService", service.endpoint, methods=["GET", "POST"]),
            Route("/_sim/prices", service.set_price, methods=["POST"]),
            *service.simulator.routes(),
        ],
        middleware=[Middleware(HeldAnswers)],
    )
