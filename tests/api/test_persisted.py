"""Persisted operations: a first-party channel set to run only the repository's documents,
by their SHA-256 id, and a partner sending its own documents, against a served gateway."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from graphql import parse, validate

from gateway.config import Settings
from gateway.persisted import PersistedOperations, operation_id
from legacy.launcher import RunningEstate
from resolvers.schema import build_schema
from tests.support import DEMO_CONFIG, MARIENPLATZ, ROOT, ServedGateway, serve_gateway

OPERATIONS = ROOT / "config" / "operations"
LISTING = (OPERATIONS / "Listing.graphql").read_text()


@pytest.fixture(scope="module")
def gateway(estate: RunningEstate, pg_databases: Callable[[], str]) -> Iterator[ServedGateway]:
    """The demo gateway with the web channel set to run persisted operations only."""
    demo = Settings(gateway_config=DEMO_CONFIG).config()
    channels = {
        key: channel.model_copy(update={"persisted_only": channel.name == "web"})
        for key, channel in demo.channels.items()
    }
    served = serve_gateway(estate, pg_databases(), config={"channels": channels})
    yield served
    served.stop()


def send(gateway: ServedGateway, body: dict[str, object], key: str = "demo-web") -> httpx.Response:
    return httpx.post(f"{gateway.url}/graphql", json=body, headers={"X-Api-Key": key}, timeout=30)


def by_id(document_id: str, **more: object) -> dict[str, object]:
    return {
        "extensions": {"persistedQuery": {"version": 1, "sha256Hash": document_id}},
        "variables": {"first": 2, "near": MARIENPLATZ},
        **more,
    }


def test_every_persisted_operation_is_valid_for_the_schema() -> None:
    schema = build_schema()._schema
    paths = sorted(OPERATIONS.glob("*.graphql"))

    assert paths
    for path in paths:
        assert validate(schema, parse(path.read_text())) == [], path.name


def test_the_manifest_is_every_document_by_the_sha256_of_its_text() -> None:
    manifest = PersistedOperations.from_folder(OPERATIONS)

    assert manifest.documents[operation_id(LISTING)] == LISTING
    assert len(manifest.documents) == len(list(OPERATIONS.glob("*.graphql")))
    assert Path(OPERATIONS / "Listing.graphql").exists()


def test_a_manifest_folder_that_is_not_there_is_an_error_not_an_empty_manifest(
    tmp_path: Path,
) -> None:
    with pytest.raises(NotADirectoryError):
        PersistedOperations.from_folder(tmp_path / "operations")


def test_a_persisted_only_channel_runs_a_document_by_its_id(gateway: ServedGateway) -> None:
    response = send(gateway, by_id(operation_id(LISTING)))

    assert response.status_code == 200
    assert len(response.json()["data"]["products"]["edges"]) == 2


def test_a_persisted_only_channel_runs_a_manifest_document_sent_as_text(
    gateway: ServedGateway,
) -> None:
    response = send(gateway, {"query": LISTING, "variables": {"first": 1, "near": MARIENPLATZ}})

    assert response.status_code == 200
    assert len(response.json()["data"]["products"]["edges"]) == 1


def test_a_persisted_only_channel_refuses_any_other_document(gateway: ServedGateway) -> None:
    response = send(gateway, {"query": "{ products(first: 1) { totalCount } }"})

    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"] == {"code": "PERSISTED_QUERY_REQUIRED"}


@pytest.mark.parametrize("key", ["demo-web", "demo-partner"])
def test_an_unknown_id_is_not_found(gateway: ServedGateway, key: str) -> None:
    response = send(gateway, by_id("0" * 64), key=key)

    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"] == {"code": "PERSISTED_QUERY_NOT_FOUND"}


def test_an_id_with_another_documents_text_is_refused(gateway: ServedGateway) -> None:
    response = send(
        gateway, by_id(operation_id(LISTING), query="{ __typename }"), key="demo-mobile"
    )

    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"] == {"code": "PERSISTED_QUERY_MISMATCH"}


def test_a_partner_sends_its_own_documents_and_may_use_the_ids(gateway: ServedGateway) -> None:
    own = send(gateway, {"query": "{ products(first: 1) { totalCount } }"}, key="demo-partner")
    persisted = send(gateway, by_id(operation_id(LISTING)), key="demo-partner")

    assert own.status_code == 200
    assert own.json()["data"]["products"]["totalCount"] > 0
    assert persisted.status_code == 200


def test_an_id_works_over_get_too(gateway: ServedGateway) -> None:
    persisted = {"persistedQuery": {"version": 1, "sha256Hash": operation_id(LISTING)}}
    response = httpx.get(
        f"{gateway.url}/graphql",
        params={
            "extensions": json.dumps(persisted),
            "variables": json.dumps({"first": 1, "near": MARIENPLATZ}),
        },
        headers={"X-Api-Key": "demo-web"},
    )

    assert response.status_code == 200
    assert len(response.json()["data"]["products"]["edges"]) == 1


def test_an_answer_kept_for_another_channel_is_never_given_to_a_persisted_only_one(
    gateway: ServedGateway,
) -> None:
    # given a free-form document answered twice for mobile (the second time from the cache),
    # a channel with the same scopes as web but free to send any document
    free = {"query": "{ products(first: 3) { totalCount } }"}
    kept = [send(gateway, free, key="demo-mobile") for _ in range(2)]

    # when web, which runs persisted operations only, sends the same document
    refused = send(gateway, free)

    # then it is refused as always, not answered from what mobile was given
    assert [answer.headers.get("x-cache") for answer in kept] == [None, "hit"]
    assert refused.status_code == 400
    assert refused.json()["errors"][0]["extensions"] == {"code": "PERSISTED_QUERY_REQUIRED"}


def test_a_persisted_operation_is_answered_again_from_the_response_cache(
    gateway: ServedGateway,
) -> None:
    request = by_id(operation_id(LISTING), variables={"first": 4, "near": MARIENPLATZ})

    answers = [send(gateway, request) for _ in range(2)]

    assert [answer.status_code for answer in answers] == [200, 200]
    assert answers[1].headers.get("x-cache") == "hit"
    assert answers[1].content == answers[0].content
