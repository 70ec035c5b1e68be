"""An order request's fingerprint: what an idempotency key is held to."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, replace

from hypothesis import given
from hypothesis import strategies as st

from gateway.orders.placement import OrderRequest
from gateway.orders.store import Destination
from gateway.sourcing.model import Fulfilment

texts = st.text(max_size=12)
destinations = st.builds(
    Destination,
    lat=st.floats(-90, 90),
    lon=st.floats(-180, 180),
    postal_code=st.none() | texts,
)
requests = st.builds(
    OrderRequest,
    idempotency_key=texts,
    channel=texts,
    customer_id=st.none() | texts,
    lines=st.lists(st.tuples(texts, st.integers(1, 99)), max_size=4).map(tuple),
    fulfillment=st.sampled_from(Fulfilment),
    store_id=st.none() | texts,
    destination=st.none() | destinations,
    redeem_points=st.integers(0, 10_000),
    coupon_codes=st.lists(texts, max_size=3).map(tuple),
)


def fingerprint_of_asdict(request: OrderRequest) -> str:
    """How fingerprints were first made (and are stored in the database): the request as
    ``asdict`` gives it, without its key."""
    body = asdict(request)
    body.pop("idempotency_key")
    body["fulfillment"] = request.fulfillment.value
    encoded = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(encoded.encode()).hexdigest()


@given(requests)
def test_a_fingerprint_is_the_one_stored_before(request: OrderRequest) -> None:
    assert request.fingerprint() == fingerprint_of_asdict(request)


@given(requests, texts)
def test_the_key_is_not_part_of_the_fingerprint(request: OrderRequest, key: str) -> None:
    again = replace(request, idempotency_key=key)
    assert again.fingerprint() == request.fingerprint()
