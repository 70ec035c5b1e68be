"""Plain leaf fields, and objects of plain fields, answered directly give the very response the
general execution gives: values, nulls, errors and their paths alike."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
import strawberry
from hypothesis import given
from hypothesis import strategies as st

from resolvers import execution
from resolvers.execution import LeafFastPathExecutionContext
from resolvers.schema import build_schema


@strawberry.enum
class Colour(enum.Enum):
    RED = "RED"
    BLUE = "BLUE"


@strawberry.type
class Shelf:
    aisle: str
    level: int | None


@strawberry.type
class Box:
    size: int
    shelf: Shelf
    spare: Shelf | None


@strawberry.type
class Item:
    box: Box
    name: str
    count: int
    weight: float
    fragile: bool
    colour: Colour
    price: Decimal
    note: str | None
    tags: list[str]

    @strawberry.field
    def label(self, prefix: str = "#") -> str:
        return f"{prefix}{self.name}"


@dataclass
class Loose:
    """What a resolver might wrongly hand over: any value in any field."""

    box: Any
    name: Any
    count: Any
    weight: Any
    fragile: Any
    colour: Any
    price: Any
    note: Any
    tags: Any

    def label(self, prefix: str = "#") -> str:
        return f"{prefix}{self.name}"


ITEMS: list[Loose] = []


@strawberry.type
class Query:
    @strawberry.field
    def items(self) -> list[Item]:
        return ITEMS  # type: ignore[return-value]


QUERY = """
query Q($prefix: String!) {
  items { __typename name count weight fragile colour price note tags label(prefix: $prefix)
          again: name }
}
"""

general = strawberry.Schema(query=Query)
fast = strawberry.Schema(query=Query, execution_context_class=LeafFastPathExecutionContext)

values = st.one_of(
    st.none(),
    st.text(max_size=5),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.sampled_from([Colour.RED, Colour.BLUE, "RED", "GREEN"]),
    st.decimals(allow_nan=False, allow_infinity=False, places=2),
    st.lists(st.text(max_size=3), max_size=2),
)


# Without ``tags`` and ``label`` every selected field is plain: each item is answered whole.
PLAIN_QUERY = """
query Q {
  items { __typename name count weight fragile colour price note
          box { size shelf { aisle level kind: __typename } spare { aisle } }
          alsoBox: box { size } }
}
"""


@dataclass
class LooseBox:
    size: Any
    shelf: Any
    spare: Any


def a_box(size: Any = 1) -> Box:
    return Box(size=size, shelf=Shelf(aisle="A", level=2), spare=None)


def both(items: list[Loose], query: str = QUERY) -> tuple[dict[str, Any], dict[str, Any]]:
    ITEMS[:] = items
    answers = []
    for schema in (general, fast):
        result = schema.execute_sync(query, variable_values={"prefix": "~"})
        answers.append(
            {
                "data": result.data,
                "errors": [(e.message, e.path) for e in result.errors or []],
            }
        )
    return answers[0], answers[1]


def test_well_formed_items_answer_alike() -> None:
    # given items whose every field holds a value of its type
    items = [
        Loose(a_box(), "a", 1, 1.5, True, Colour.RED, Decimal("9.99"), None, ["x"]),
        Loose(a_box(2), "b", 0, -2.0, False, Colour.BLUE, Decimal("0.10"), "n", []),
    ]
    # when both executions answer the query
    plain, direct = both(items)
    # then the answers are equal, and there are no errors
    assert direct == plain
    assert direct["errors"] == []
    assert direct["data"]["items"][1]["price"] == plain["data"]["items"][1]["price"]


boxes = st.one_of(
    st.none(),
    st.just("not a box"),
    st.builds(a_box, values),
    st.builds(
        LooseBox,
        values,
        st.one_of(st.none(), st.builds(Shelf, aisle=values, level=values)),
        st.one_of(st.none(), st.just(3), st.builds(Shelf, aisle=values, level=values)),
    ),
)


@given(st.lists(st.tuples(boxes, *[values] * 8), min_size=1, max_size=3))
def test_any_values_answer_alike(rows: list[tuple[Any, ...]]) -> None:
    # given items holding anything at all, nulls and wrong types included
    items = [Loose(*row) for row in rows]
    # when both executions answer, whole objects of plain fields or not, then the data and
    # the errors (messages and paths) are equal
    for query in (QUERY, PLAIN_QUERY):
        plain, direct = both(items, query)
        assert direct == plain


def test_objects_of_plain_fields_answer_alike_and_keep_their_field_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given a count of the objects answered whole
    answered: list[str] = []
    whole = execution._answer_object

    def counted(plan: Any, source: Any, info: Any) -> Any:
        answer = whole(plan, source, info)
        if isinstance(answer, dict):
            answered.append(type(source).__name__)
        return answer

    monkeypatch.setattr(execution, "_answer_object", counted)
    items = [Loose(a_box(3), "a", 1, 1.5, True, Colour.RED, Decimal("1.00"), None, [])]
    # when both executions answer the plain query
    plain, direct = both(items, PLAIN_QUERY)
    # then the item was answered whole, its boxes and shelf within it, and alike
    assert answered[-1] == "Loose"
    assert sorted(answered) == ["Box", "Box", "Loose", "Shelf"]
    assert direct == plain
    assert direct["errors"] == []
    answer = direct["data"]["items"][0]
    assert list(answer) == list(plain["data"]["items"][0])
    assert answer["box"] == {
        "size": 3,
        "shelf": {"aisle": "A", "level": 2, "kind": "Shelf"},
        "spare": None,
    }


def test_a_null_inside_a_plain_object_is_the_general_error() -> None:
    # given an item whose box has no shelf, which its type promises
    box = LooseBox(1, None, None)
    plain, direct = both(
        [Loose(box, "a", 1, 1.0, True, Colour.RED, Decimal(1), None, [])], PLAIN_QUERY
    )
    # then both null the item the same way, with the same error at the same path
    assert direct == plain
    assert (
        "Cannot return null for non-nullable field Box.shelf.",
        ["items", 0, "box", "shelf"],
    ) in direct["errors"]


def test_a_wrong_object_inside_a_plain_object_is_the_general_error() -> None:
    box = Box(size=1, shelf="a shelf", spare=None)  # type: ignore[arg-type]
    plain, direct = both(
        [Loose(box, "a", 1, 1.0, True, Colour.RED, Decimal(1), None, [])], PLAIN_QUERY
    )
    assert direct == plain
    assert direct["errors"]


def test_a_null_in_a_non_null_leaf_is_the_general_error() -> None:
    # given an item without the name its type promises
    plain, direct = both([Loose(a_box(), None, 1, 1.0, True, Colour.RED, Decimal(1), None, [])])
    # then both report the same error at the same path
    assert direct == plain
    assert any(path == ["items", 0, "name"] for _, path in direct["errors"])


@pytest.mark.parametrize("name", ["Variant", "StoreStock", "Money"])
def test_the_gateway_answers_its_leaves_directly(name: str) -> None:
    # given the gateway's schema
    schema = build_schema()
    # then it executes with the fast path, and some of the listing's types have plain leaves
    assert schema.execution_context_class is LeafFastPathExecutionContext
    graphql_type = schema._schema.type_map[name]
    assert any(
        getattr(field.resolve, "_is_default", False) and not field.args
        for field in graphql_type.fields.values()  # type: ignore[attr-defined]
    )
