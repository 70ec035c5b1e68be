"""SoapPricing against the running pricing engine: real HTTP, real SOAP envelopes."""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from decimal import Decimal

import httpx
import pytest
from lxml import etree

from adapters.ports import (
    BackendRejected,
    BackendTimedOut,
    BackendUnavailable,
    Money,
    Price,
    PricesPort,
)
from adapters.pricing_soap import SoapPricing, parse_amount
from legacy.demo import ANCHOR, DemoEstate
from legacy.pricing import format_amount
from tests.support import start_systems, write_systems

NAMESPACE = "http://pricing.example.com/2012/PricingService"
SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
WSDL = "http://schemas.xmlsoap.org/wsdl/"
WSDL_SOAP = "http://schemas.xmlsoap.org/wsdl/soap/"
XSD = "http://www.w3.org/2001/XMLSchema"
SAFE_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
LOOKED_UP = 230
"""Tests comparing with the ground truth use the first 230 SKUs; the price-change test edits
SKUs after them, because the engine keeps its journal for the module's lifetime."""


@pytest.fixture(scope="module")
def engine_url(truth: DemoEstate, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("pricing")
    write_systems(truth, data_dir, ["pricing"])
    estate = start_systems(data_dir, ("pricing",))
    try:
        yield estate.urls["pricing"]
    finally:
        estate.stop()


@pytest.fixture
def engine(engine_url: str) -> str:
    """The engine's URL, with counters cleared and every knob back at zero."""
    httpx.post(f"{engine_url}/_sim/reset", timeout=5).raise_for_status()
    return engine_url


@pytest.fixture
async def pricing(engine: str) -> AsyncIterator[SoapPricing]:
    adapter = SoapPricing(engine, timeout=5.0)
    yield adapter
    await adapter.aclose()


async def calls(url: str) -> dict[str, int]:
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(f"{url}/_sim/stats")
    calls: dict[str, int] = response.json()["calls"]
    return calls


async def set_knobs(url: str, **values: object) -> None:
    async with httpx.AsyncClient(timeout=5) as client:
        (await client.post(f"{url}/_sim/knobs", json=values)).raise_for_status()


async def set_price(url: str, sku: str, zone: str, price: str) -> datetime:
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.post(
            f"{url}/_sim/prices", json={"sku": sku, "zone": zone, "price": price}
        )
    response.raise_for_status()
    return datetime.fromisoformat(response.json()["changed_at"])


async def post_soap(url: str, body: bytes, operation: str) -> httpx.Response:
    headers = {
        "Content-Type": "text/xml; charset=utf-8",
        "SOAPAction": f'"{NAMESPACE}/{operation}"',
    }
    async with httpx.AsyncClient(timeout=5) as client:
        return await client.post(f"{url}/PricingService", content=body, headers=headers)


def expected_price(truth: DemoEstate, sku: str, zone: str = "BASE") -> Price:
    variant = next(v for v in truth.skus if v.sku == sku)
    amount = truth.zone_overrides.get(zone, {}).get(sku, variant.base_price)
    compare_at = None if variant.compare_at is None else Money(variant.compare_at, "EUR")
    return Price(sku, Money(amount, "EUR"), compare_at, zone, ANCHOR)


def first_skus(truth: DemoEstate) -> list[str]:
    return [variant.sku for variant in truth.skus][:LOOKED_UP]


def fault_of(response: httpx.Response) -> tuple[str, str]:
    """(faultcode, PricingFault code) of a SOAP fault response."""
    fault = etree.fromstring(response.content, SAFE_PARSER).find(f"{{{SOAP}}}Body/{{{SOAP}}}Fault")
    assert fault is not None
    return fault.findtext("faultcode") or "", fault.findtext(
        f"detail/{{{NAMESPACE}}}PricingFault/{{{NAMESPACE}}}Code"
    ) or ""


def get_prices_envelope(skus: list[str]) -> bytes:
    items = "".join(f"<p:ItemNo>{sku}</p:ItemNo>" for sku in skus)
    return (
        f'<soap:Envelope xmlns:soap="{SOAP}" xmlns:p="{NAMESPACE}"><soap:Body>'
        f"<p:GetPrices><p:Items>{items}</p:Items></p:GetPrices></soap:Body></soap:Envelope>"
    ).encode()


# --------------------------------------------------------------------------- lookups


async def test_the_adapter_is_a_prices_port(pricing: SoapPricing) -> None:
    assert isinstance(pricing, PricesPort)


async def test_230_skus_take_five_calls_and_equal_the_ground_truth(
    pricing: SoapPricing, engine: str, truth: DemoEstate
) -> None:
    # given 230 distinct SKUs, some of them asked for twice
    skus = first_skus(truth)
    # when they are priced without a store
    prices = await pricing.prices(skus + skus[:20])
    # then five calls of at most 50 answered them, exactly as the ground truth says
    assert await calls(engine) == {"GetPrices": 5}
    assert prices == {sku: expected_price(truth, sku) for sku in skus}


async def test_a_city_store_gets_the_city_override_and_the_base_price_otherwise(
    pricing: SoapPricing, engine: str, truth: DemoEstate
) -> None:
    # given a store in price zone CITY and SKUs of which only some are overridden there
    store = next(location.code for location in truth.locations if location.price_zone == "CITY")
    skus = first_skus(truth)
    overridden = set(truth.zone_overrides["CITY"]) & set(skus)
    assert overridden
    assert len(overridden) < len(skus)
    # when they are priced for that store
    prices = await pricing.prices(skus, store)
    # then the overridden SKUs carry the CITY price, the others their base price
    assert prices == {sku: expected_price(truth, sku, "CITY") for sku in skus}
    assert all(
        prices[sku].current.amount != expected_price(truth, sku).current.amount
        for sku in overridden
    )


async def test_unknown_skus_are_absent(
    pricing: SoapPricing, engine: str, truth: DemoEstate
) -> None:
    # given one known SKU among unknown ones
    known = first_skus(truth)[0]
    # when they are priced
    prices = await pricing.prices(["999999999", known, "NO-SUCH-SKU"])
    # then only the known one is in the result, from one call
    assert prices == {known: expected_price(truth, known)}
    assert await calls(engine) == {"GetPrices": 1}


async def test_no_skus_make_no_call(pricing: SoapPricing, engine: str) -> None:
    assert await pricing.prices([]) == {}
    assert await calls(engine) == {}


# --------------------------------------------------------------------------- the SOAP service


async def test_the_wsdl_is_served_with_this_address(engine: str) -> None:
    # when the WSDL is asked for
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(f"{engine}/PricingService", params={"wsdl": ""})
    # then it is a WSDL 1.1 document naming both operations and this server's address
    assert response.status_code == 200
    definitions = etree.fromstring(response.content, SAFE_PARSER)
    assert definitions.tag == f"{{{WSDL}}}definitions"
    operations = {
        operation.get("name")
        for operation in definitions.iterfind(f"{{{WSDL}}}portType/{{{WSDL}}}operation")
    }
    assert operations == {"GetPrices", "GetPriceChanges"}
    address = definitions.find(f".//{{{WSDL_SOAP}}}address")
    assert address is not None
    assert address.get("location") == f"{engine}/PricingService"


async def test_answers_are_valid_against_the_wsdl_schema(engine: str, truth: DemoEstate) -> None:
    # given the XML schema embedded in the WSDL
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(f"{engine}/PricingService", params={"wsdl": ""})
    embedded = etree.fromstring(response.content, SAFE_PARSER).find(f".//{{{XSD}}}schema")
    assert embedded is not None
    schema = etree.XMLSchema(copy.deepcopy(embedded))
    # when known and unknown items are priced with a raw request
    request = get_prices_envelope([*first_skus(truth)[:3], "0"])
    answer = await post_soap(engine, request, "GetPrices")
    # then the answer's payload is valid against that schema
    payload = etree.fromstring(answer.content, SAFE_PARSER).find(f"{{{SOAP}}}Body/*")
    assert payload is not None
    schema.assertValid(etree.ElementTree(copy.deepcopy(payload)))


async def test_51_items_in_one_request_are_a_client_fault(engine: str, truth: DemoEstate) -> None:
    # when a raw request asks for 51 items
    response = await post_soap(engine, get_prices_envelope(first_skus(truth)[:51]), "GetPrices")
    # then the engine answers with a soap:Client fault, on HTTP 500 as SOAP 1.1 has it
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("text/xml")
    assert fault_of(response) == ("soap:Client", "TOO_MANY_ITEMS")


async def test_malformed_xml_is_a_client_fault(engine: str) -> None:
    response = await post_soap(engine, b"<soap:Envelope><unclosed>", "GetPrices")
    assert response.status_code == 500
    assert fault_of(response) == ("soap:Client", "MALFORMED_REQUEST")


async def test_an_unknown_store_is_rejected(pricing: SoapPricing, truth: DemoEstate) -> None:
    with pytest.raises(BackendRejected) as raised:
        await pricing.prices(first_skus(truth)[:3], "0999")
    assert raised.value.code == "UNKNOWN_STORE"
    assert raised.value.backend == "pricing"


# --------------------------------------------------------------------------- failures


async def test_an_outage_is_unavailable(
    pricing: SoapPricing, engine: str, truth: DemoEstate
) -> None:
    # given the engine is down
    await set_knobs(engine, outage=True)
    # when prices are asked for, then the adapter reports it unavailable (not timed out)
    with pytest.raises(BackendUnavailable) as raised:
        await pricing.prices(first_skus(truth))
    assert not isinstance(raised.value, BackendTimedOut)
    assert "HTTP 503" in raised.value.detail


async def test_a_server_fault_is_unavailable(
    pricing: SoapPricing, engine: str, truth: DemoEstate
) -> None:
    # given every call fails inside the engine
    await set_knobs(engine, error_rate=1.0)
    # then its soap:Server faults are retryable unavailability
    with pytest.raises(BackendUnavailable) as raised:
        await pricing.prices(first_skus(truth)[:10])
    assert raised.value.retryable
    assert "INTERNAL_ERROR" in raised.value.detail


async def test_latency_over_the_timeout_times_out(engine: str, truth: DemoEstate) -> None:
    # given the engine answers after a second and an adapter that waits a fifth of one
    await set_knobs(engine, latency_ms=1000)
    adapter = SoapPricing(engine, timeout=0.2)
    try:
        # then the lookup times out
        with pytest.raises(BackendTimedOut) as raised:
            await adapter.prices(first_skus(truth)[:10])
    finally:
        await adapter.aclose()
    assert isinstance(raised.value.__cause__, httpx.TimeoutException)


# --------------------------------------------------------------------------- changes


async def test_a_price_change_shows_in_the_feed_and_the_next_lookup(
    pricing: SoapPricing, engine: str, truth: DemoEstate
) -> None:
    # given the feed's current position and two SKUs beyond those other tests compare
    start = await pricing.changes(None)
    base_sku, city_sku = (variant.sku for variant in list(truth.skus)[LOOKED_UP : LOOKED_UP + 2])
    city = next(location.code for location in truth.locations if location.price_zone == "CITY")
    # when a price manager changes one base price and one CITY price
    base_at = await set_price(engine, base_sku, "BASE", "1234.50")
    city_at = await set_price(engine, city_sku, "CITY", "7.77")
    # then the feed lists both, oldest first, after the position read before
    batch = await pricing.changes(start.cursor)
    assert [(change.entity, change.key, change.at) for change in batch.changes] == [
        ("price", base_sku, base_at),
        ("price", city_sku, city_at),
    ]
    assert batch.cursor == batch.changes[-1].cursor
    assert (await pricing.changes(batch.cursor)).changes == ()
    # and the next lookups carry the new prices, each in its own zone only
    base = await pricing.prices([base_sku, city_sku])
    in_city = await pricing.prices([base_sku, city_sku], city)
    assert base[base_sku].current == Money(Decimal("1234.50"), "EUR")
    assert base[base_sku].as_of == base_at
    assert base[city_sku] == expected_price(truth, city_sku)
    assert in_city[base_sku].current == Money(Decimal("1234.50"), "EUR")
    assert in_city[city_sku].current == Money(Decimal("7.77"), "EUR")
    assert in_city[city_sku].as_of == city_at


async def test_an_invalid_cursor_is_rejected(pricing: SoapPricing) -> None:
    with pytest.raises(BackendRejected) as raised:
        await pricing.changes("not-a-number")
    assert raised.value.code == "INVALID_SINCE"


# --------------------------------------------------------------------------- amounts


@pytest.mark.parametrize(
    ("text", "amount"),
    [
        ("0,99", Decimal("0.99")),
        ("12,00", Decimal("12.00")),
        ("1.234,50", Decimal("1234.50")),
        ("1234,5", Decimal("1234.5")),
        ("1.000.000,01", Decimal("1000000.01")),
        ("7", Decimal("7")),
        (" 14,99 ", Decimal("14.99")),
    ],
)
def test_comma_decimals_parse_exactly(text: str, amount: Decimal) -> None:
    parsed = parse_amount(text)
    assert parsed == amount
    assert str(parsed) == str(amount)


@pytest.mark.parametrize("text", ["", "12.99", "1.23,4", "1,2,3", "12,", "abc", "1.2345,00"])
def test_other_numbers_are_not_comma_decimals(text: str) -> None:
    with pytest.raises(ValueError, match="comma decimal"):
        parse_amount(text)


@pytest.mark.parametrize("amount", ["0.99", "12.00", "1234.50", "999.99", "1000.00"])
def test_the_engine_format_round_trips(amount: str) -> None:
    assert parse_amount(format_amount(Decimal(amount))) == Decimal(amount)


# --------------------------------------------------------------------------- lost connections


@contextlib.asynccontextmanager
async def dropping_first(target: str, drops: int) -> AsyncIterator[str]:
    """A TCP relay to ``target`` that reads the first ``drops`` connections' requests and then
    closes them without an answer, as a server does that drops an idle keep-alive connection
    just as a request arrives on it; later connections are relayed."""
    upstream = httpx.URL(target)
    dropped = 0

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal dropped
        if dropped < drops:
            dropped += 1
            await reader.read(65536)
            writer.close()
            return
        assert upstream.port is not None
        up_reader, up_writer = await asyncio.open_connection(upstream.host, upstream.port)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()


async def test_a_connection_lost_before_the_answer_is_tried_once_more(
    engine: str, truth: DemoEstate
) -> None:
    # given the first connection to the engine is closed without an answer
    async with dropping_first(engine, drops=1) as relay:
        adapter = SoapPricing(relay, timeout=5.0)
        try:
            # when prices are asked for
            found = await adapter.prices(first_skus(truth)[:3])
        finally:
            await adapter.aclose()
    # then the lookup is sent again on a new connection and answered
    assert set(found) == set(first_skus(truth)[:3])
    assert (await calls(engine))["GetPrices"] == 1


async def test_a_connection_lost_twice_is_unavailable(engine: str, truth: DemoEstate) -> None:
    # given the first two connections are closed without an answer
    async with dropping_first(engine, drops=2) as relay:
        adapter = SoapPricing(relay, timeout=5.0)
        try:
            # then the lookup gives up after its second attempt: retryable unavailability
            with pytest.raises(BackendUnavailable) as raised:
                await adapter.prices(first_skus(truth)[:3])
        finally:
            await adapter.aclose()
    assert raised.value.retryable
    assert "GetPrices" not in await calls(engine)
