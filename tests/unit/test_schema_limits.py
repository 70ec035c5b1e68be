"""The schema's document limits: checked on the parsed document before validation, each with
its code; a valid document is still parsed and validated once per distinct text."""

from __future__ import annotations

import pytest
from graphql import parse
from strawberry.extensions.validation_cache import _get_validate_cache

from gateway.limits import DocumentLimits, LimitExceeded, bad_string, measure
from resolvers.schema import build_schema

TOO_DEEP = (
    "{ products { edges { node { variants { product { variants { product { variants { product"
    " { variants { product { variants { product { variants { sku } } } } } } } } } } } } } } }"
)
TOO_MANY_ALIASES = "{ " + " ".join(f"a{i}: __typename" for i in range(31)) + " }"
LISTING = """query($first: Int = 24) { products(first: $first) { edges { node { name
  variants { sku availability(first: 5) { store { code } available } } } } } }"""


def graph_schema():  # type: ignore[no-untyped-def]
    return build_schema()._schema


async def test_a_document_too_deep_or_with_too_many_aliases_is_refused_before_it_runs() -> None:
    schema = build_schema()

    deep = await schema.execute(TOO_DEEP)
    aliased = await schema.execute(TOO_MANY_ALIASES)

    assert deep.data is None
    assert aliased.data is None
    assert deep.errors
    assert deep.errors[0].extensions == {"code": "QUERY_TOO_DEEP"}
    assert aliased.errors
    assert aliased.errors[0].message == "the query has more than 30 aliases"


async def test_the_same_valid_document_is_validated_once() -> None:
    schema = build_schema()
    cache = _get_validate_cache(512)
    await schema.execute("{ __typename }")
    hits = cache.cache_info().hits

    again = await schema.execute("{ __typename }")

    assert cache.cache_info().hits == hits + 1
    assert again.data == {"__typename": "Query"}


def test_a_listing_costs_each_field_once_per_item_of_the_lists_around_it() -> None:
    # products 1, edges 24, node 24, name 24, variants 24, sku 24, availability 24,
    # store 24 x 5, code 24 x 5, available 24 x 5
    found = measure(parse(LISTING), graph_schema(), DocumentLimits())

    assert found.cost == 1 + 24 * 6 + 3 * 24 * 5
    assert found.depth == 7


def test_the_page_size_comes_from_the_variables_then_the_default() -> None:
    document = parse(LISTING)

    ten = measure(document, graph_schema(), DocumentLimits(), {"first": 10})
    default = measure(document, graph_schema(), DocumentLimits())

    assert ten.cost == 1 + 10 * 6 + 3 * 10 * 5
    assert default.cost > ten.cost


def test_a_cost_that_reads_no_variable_is_worked_out_once_per_document_and_limits() -> None:
    document = parse("{ products(first: 2) { totalCount } }")
    schema = graph_schema()

    first = measure(document, schema, DocumentLimits())
    again = measure(document, schema, DocumentLimits(), {"first": 50})
    other_limits = measure(document, schema, DocumentLimits(max_depth=6))

    assert again is first
    assert other_limits is not first
    assert other_limits == first
    assert first.cost == 3
    # a limit the document passes is still enforced, whatever was remembered under others
    with pytest.raises(LimitExceeded):
        measure(document, schema, DocumentLimits(max_cost=2))
    # and the same text parsed again is another document: walked again
    parsed_again = parse("{ products(first: 2) { totalCount } }")
    assert measure(parsed_again, schema, DocumentLimits()) == first


def test_a_cost_that_reads_a_variable_is_worked_out_for_every_request() -> None:
    document = parse("query($n: Int) { products(first: $n) { totalCount } }")
    schema = graph_schema()

    assert measure(document, schema, DocumentLimits(), {"n": 2}).cost == 3
    assert measure(document, schema, DocumentLimits(), {"n": 5}).cost == 6


def test_a_fragment_is_counted_where_it_is_spread_and_a_cycle_ends_the_walk() -> None:
    document = parse(
        "{ a: products(first: 2) { ...page } b: products(first: 3) { ...page } }"
        " fragment page on ProductConnection { totalCount ...page }"
    )

    found = measure(document, graph_schema(), DocumentLimits())

    # each connection, and what it selects once per item asked for: 1 + 2, 1 + 3
    assert found.cost == 7
    assert found.aliases == 2


@pytest.mark.parametrize(
    ("limits", "code"),
    [
        (DocumentLimits(max_cost=300), "QUERY_TOO_COSTLY"),
        (DocumentLimits(max_depth=5), "QUERY_TOO_DEEP"),
    ],
)
def test_the_walk_stops_at_the_first_limit_passed(limits: DocumentLimits, code: str) -> None:
    with pytest.raises(LimitExceeded) as refused:
        measure(parse(LISTING), graph_schema(), limits)

    assert refused.value.extensions == {"code": code}


def test_a_string_with_a_control_character_is_named_by_its_variable_path() -> None:
    document = parse("query($input: CartInput!) { cart(input: $input) { __typename } }")
    variables = {"input": {"lines": [{"sku": "ok"}, {"sku": "bad\x00"}]}}

    error = bad_string(document, variables, max_length=100)

    assert error is not None
    assert error.extensions == {"code": "BAD_USER_INPUT", "variable": "$input.lines[1].sku"}


def test_tabs_newlines_and_any_script_are_ordinary_text() -> None:
    document = parse('{ product(sku: "Zürich\\tΩμέ\\n歩") { name } }')

    assert bad_string(document, {"note": "a\r\nb"}, max_length=100) is None


def test_a_document_found_clean_is_still_checked_for_a_shorter_limit_and_its_variables() -> None:
    # given a document whose literals passed once, at one length limit
    document = parse('query($note: String) { product(sku: "ABCDEFGHIJ") { name } }')
    assert bad_string(document, {}, max_length=100) is None

    # then the same document is refused at a lower limit, and for a bad variable
    shorter = bad_string(document, {}, max_length=5)
    assert shorter is not None
    assert shorter.message == "a string argument is longer than 5 characters"
    variable = bad_string(document, {"note": "\x07"}, max_length=100)
    assert variable is not None
    assert variable.extensions == {"code": "BAD_USER_INPUT", "variable": "$note"}
    # and a new document with the same text is walked for itself
    assert bad_string(parse('{ product(sku: "a\\u0000") { name } }'), {}, 100) is not None
