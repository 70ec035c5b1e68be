"""The schema's validation: depth and alias limits, checked once per distinct document."""

from __future__ import annotations

from strawberry.extensions.validation_cache import _get_validate_cache

from resolvers.schema import build_schema

TOO_DEEP = (
    "{ products { edges { node { variants { product { variants { product { variants { product"
    " { variants { product { variants { product { variants { sku } } } } } } } } } } } } } } }"
)
TOO_MANY_ALIASES = "{ " + " ".join(f"a{i}: __typename" for i in range(31)) + " }"


async def test_a_document_too_deep_or_with_too_many_aliases_is_refused_before_it_runs() -> None:
    schema = build_schema()

    deep = await schema.execute(TOO_DEEP)
    aliased = await schema.execute(TOO_MANY_ALIASES)

    assert deep.data is None
    assert aliased.data is None
    assert deep.errors
    assert "exceeds maximum operation depth of 12" in deep.errors[0].message
    assert aliased.errors
    assert aliased.errors[0].message == "31 aliases found. Allowed: 30"


async def test_the_same_document_is_validated_once_with_the_limits_in_place() -> None:
    schema = build_schema()
    cache = _get_validate_cache(512)
    await schema.execute(TOO_DEEP)
    hits = cache.cache_info().hits

    again = await schema.execute(TOO_DEEP)

    assert cache.cache_info().hits == hits + 1
    assert again.errors
    assert "exceeds maximum operation depth" in again.errors[0].message
