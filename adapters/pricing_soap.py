"""Prices from the pricing engine over SOAP 1.1 (document/literal, see its WSDL).

The engine answers at most 50 items per ``GetPrices`` call, formats amounts the German way
("1.234,50"), lists unknown items with a NOT_FOUND status, and reports every error as a SOAP
fault with HTTP 500, except an outage (a plain 503 from its load balancer).
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal

import httpx
from lxml import etree

from adapters.http import Answer, backend_client
from adapters.ports import (
    BackendRejected,
    BackendTimedOut,
    BackendUnavailable,
    Change,
    ChangeBatch,
    Money,
    PartialAnswer,
    Price,
)

BACKEND = "pricing"
NAMESPACE = "http://pricing.example.com/2012/PricingService"
SOAP_ENVELOPE = "http://schemas.xmlsoap.org/soap/envelope/"
XSI_NIL = "{http://www.w3.org/2001/XMLSchema-instance}nil"
MAX_ITEMS_PER_CALL = 50
MAX_CHANGE_ROWS = 1000
# Both operations only read, so a call whose connection failed is sent once more: a server
# that closes an idle keep-alive connection just as a request goes out on it fails that request
# without having seen it.
ATTEMPTS = 2

_CALLER_FAULTS = frozenset({"Client", "VersionMismatch", "MustUnderstand"})
_AMOUNT = re.compile(r"-?(\d{1,3}(\.\d{3})+|\d+)(,\d+)?")
# Responses are parsed without entities, DTDs or network access, whatever they contain.
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


def parse_amount(text: str) -> Decimal:
    """``"1.234,50"`` -> ``Decimal("1234.50")``, exactly. Raises ValueError on anything else."""
    text = text.strip()
    if not _AMOUNT.fullmatch(text):
        raise ValueError(f"not a comma decimal: {text!r}")
    return Decimal(text.replace(".", "").replace(",", "."))


class SoapPricing:
    """``PricesPort`` over the pricing engine's SOAP service at ``base_url`` (its root URL).

    Lookups are deduplicated, split into calls of 50 items and sent concurrently, at most
    ``max_concurrency`` at a time. Faults map to ``BackendRejected`` (soap:Client, with the
    engine's code, e.g. UNKNOWN_STORE), ``BackendUnavailable`` (soap:Server, 5xx, transport) and
    ``BackendTimedOut`` (no answer within ``timeout`` seconds).
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 5.0,
        max_connections: int = 32,
        max_concurrency: int = 8,
    ) -> None:
        self._endpoint = f"{base_url.rstrip('/')}/PricingService"
        self._timeout = httpx.Timeout(timeout)
        self._client = backend_client(timeout=timeout, max_connections=max_connections)
        self._slots = asyncio.Semaphore(max_concurrency)

    async def prices(self, skus: Sequence[str], store_id: str | None = None) -> Mapping[str, Price]:
        """Current prices in the zone of ``store_id`` (BASE when None); unknown SKUs absent.
        An unknown store raises BackendRejected with code UNKNOWN_STORE. When only some of the
        calls of 50 fail, the others' prices come with the failure, as ``PartialAnswer``."""
        unique = list(dict.fromkeys(skus))
        chunks = [
            unique[start : start + MAX_ITEMS_PER_CALL]
            for start in range(0, len(unique), MAX_ITEMS_PER_CALL)
        ]
        if len(chunks) == 1:
            return {price.sku: price for price in await self._price_chunk(chunks[0], store_id)}
        outcomes = await asyncio.gather(
            *(self._price_chunk(chunk, store_id) for chunk in chunks), return_exceptions=True
        )
        found: dict[str, Price] = {}
        unanswered: list[str] = []
        failures: list[BackendUnavailable] = []
        for chunk, outcome in zip(chunks, outcomes, strict=True):
            if isinstance(outcome, BackendUnavailable):
                failures.append(outcome)
                unanswered.extend(chunk)
            elif isinstance(outcome, BaseException):
                raise outcome  # a refusal (an unknown store) holds for every chunk
            else:
                found.update((price.sku, price) for price in outcome)
        if failures and len(failures) == len(chunks):
            raise failures[0]
        if failures:
            raise PartialAnswer(
                BACKEND, f"{len(failures)} of {len(chunks)} calls failed", found, unanswered
            )
        return found

    async def changes(self, since: str | None) -> ChangeBatch:
        """Journal entries after ``since`` (a sequence number; None: from the start), oldest
        first, at most 1000 of them; pass the returned cursor to read on."""
        request = _element("GetPriceChanges")
        _child(request, "Since", since or "0")
        _child(request, "MaxRows", str(MAX_CHANGE_ROWS))
        response = await self._call("GetPriceChanges", request)
        changes = tuple(_change(entry) for entry in response.iterfind(_path("Changes/Change")))
        return ChangeBatch(changes, _required(response, "LastSequence"))

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _price_chunk(self, skus: Sequence[str], store_id: str | None) -> list[Price]:
        request = _element("GetPrices")
        if store_id is not None:
            _child(request, "StoreNo", store_id)
        items = _child(request, "Items")
        for sku in skus:
            _child(items, "ItemNo", sku)
        response = await self._call("GetPrices", request)
        return [
            _price(item)
            for item in response.iterfind(_path("PriceList/Item"))
            if _required(item, "Status") == "OK"
        ]

    async def _call(self, operation: str, request: etree._Element) -> etree._Element:
        """Send one request element; return the response element or raise a BackendError."""
        headers = {
            "Content-Type": "text/xml; charset=utf-8",
            "SOAPAction": f'"{NAMESPACE}/{operation}"',
        }
        content = _envelope(request)
        async with self._slots:
            for attempt in range(1, ATTEMPTS + 1):
                try:
                    response = await self._client.post(
                        self._endpoint, content=content, headers=headers, timeout=self._timeout
                    )
                except httpx.TimeoutException as exc:
                    raise BackendTimedOut(BACKEND, f"{operation}: no answer in time") from exc
                except httpx.TransportError as exc:
                    if attempt == ATTEMPTS:
                        raise BackendUnavailable(BACKEND, f"{operation}: {exc!r}") from exc
                    continue
                return _answer(operation, response)
        raise AssertionError("unreachable: the last attempt returns or raises")


# --------------------------------------------------------------------------- XML


@functools.cache
def _path(names: str) -> str:
    return "/".join(f"{{{NAMESPACE}}}{name}" for name in names.split("/"))


def _element(name: str) -> etree._Element:
    return etree.Element(_path(name), nsmap={"pr": NAMESPACE})


def _child(parent: etree._Element, name: str, text: str | None = None) -> etree._Element:
    child = etree.SubElement(parent, _path(name))
    child.text = text
    return child


def _envelope(request: etree._Element) -> bytes:
    envelope = etree.Element(f"{{{SOAP_ENVELOPE}}}Envelope", nsmap={"soap": SOAP_ENVELOPE})
    etree.SubElement(envelope, f"{{{SOAP_ENVELOPE}}}Body").append(request)
    return etree.tostring(envelope, xml_declaration=True, encoding="utf-8")


def _optional(parent: etree._Element, name: str) -> str | None:
    element = parent.find(_path(name))
    if element is None or element.get(XSI_NIL) in ("true", "1") or not element.text:
        return None
    return element.text.strip() or None


def _required(parent: etree._Element, name: str) -> str:
    text = _optional(parent, name)
    if text is None:
        raise BackendUnavailable(BACKEND, f"malformed answer: {name} missing")
    return text


def _instant(text: str) -> datetime:
    """An xsd:dateTime; one without an offset is the engine's clock, which runs on UTC."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError as exc:
        raise BackendUnavailable(BACKEND, f"malformed answer: dateTime {text!r}") from exc
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _money(text: str, currency: str) -> Money:
    try:
        return Money(parse_amount(text), currency)
    except ValueError as exc:
        raise BackendUnavailable(BACKEND, f"malformed answer: {exc}") from exc


def _price(item: etree._Element) -> Price:
    currency = _required(item, "Currency")
    compare_at = _optional(item, "CompareAtPrice")
    return Price(
        sku=_required(item, "ItemNo"),
        current=_money(_required(item, "Price"), currency),
        compare_at=None if compare_at is None else _money(compare_at, currency),
        zone=_required(item, "Zone"),
        as_of=_instant(_required(item, "ValidFrom")),
    )


def _change(entry: etree._Element) -> Change:
    return Change(
        entity="price",
        key=_required(entry, "ItemNo"),
        at=_instant(_required(entry, "ChangedAt")),
        cursor=_required(entry, "Sequence"),
    )


# --------------------------------------------------------------------------- answers and faults


def _answer(operation: str, response: Answer) -> etree._Element:
    """The ``<operation>Response`` element of a 200, or the BackendError a fault maps to."""
    if response.status_code == 500:
        raise _fault_error(operation, _body(operation, response))
    if response.status_code >= 500 or response.status_code == 429:
        raise BackendUnavailable(BACKEND, f"{operation}: HTTP {response.status_code}")
    if response.status_code >= 400:
        detail = f"{operation}: HTTP {response.status_code} {response.text[:200]}"
        raise BackendRejected(BACKEND, detail, code=f"HTTP_{response.status_code}")
    answer = _body(operation, response).find(_path(f"{operation}Response"))
    if answer is None:
        raise BackendUnavailable(BACKEND, f"{operation}: no {operation}Response in the answer")
    return answer


def _body(operation: str, response: Answer) -> etree._Element:
    try:
        envelope = etree.fromstring(response.content, _PARSER)
    except etree.XMLSyntaxError as exc:
        detail = f"{operation}: HTTP {response.status_code} with an unreadable body"
        raise BackendUnavailable(BACKEND, detail) from exc
    body = envelope.find(f"{{{SOAP_ENVELOPE}}}Body")
    if body is None:
        raise BackendUnavailable(BACKEND, f"{operation}: answer has no SOAP Body")
    return body


def _fault_error(operation: str, body: etree._Element) -> BackendUnavailable | BackendRejected:
    """soap:Client (and VersionMismatch, MustUnderstand) faults are the caller's: rejected.
    soap:Server and any other fault, or a 500 without one, are the engine's: unavailable."""
    fault = body.find(f"{{{SOAP_ENVELOPE}}}Fault")
    if fault is None:
        return BackendUnavailable(BACKEND, f"{operation}: HTTP 500 without a SOAP fault")
    # faultcode is a QName such as "soap:Client" or "soap:Client.Authentication".
    kind = (fault.findtext("faultcode") or "").strip().rsplit(":", 1)[-1].split(".")[0]
    message = (fault.findtext("faultstring") or "").strip()
    detail = fault.find(f"detail/{_path('PricingFault')}")
    code = None if detail is None else _optional(detail, "Code")
    if kind not in _CALLER_FAULTS:
        return BackendUnavailable(BACKEND, f"{operation}: {code or kind}: {message}")
    return BackendRejected(BACKEND, f"{operation}: {message}", code=code or f"SOAP_{kind.upper()}")
