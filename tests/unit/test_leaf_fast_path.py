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
from strawberry.extensions import SchemaExtension
from strawberry.schema.config import StrawberryConfig

from resolvers import execution
from resolvers.execution import LeafFastPathExecutionContext
from resolvers.schema import GatewaySchema, build_schema


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


# --------------------------------------------------------------------------- resolver fields


@strawberry.input
class Point:
    lat: float
    lon: float = 0.0


@strawberry.enum
class Order(enum.Enum):
    NEAREST = "NEAREST"
    LARGEST = "LARGEST"


class Refused(strawberry.BasePermission):
    message = "refused"

    def has_permission(self, source: Any, info: strawberry.Info, **kwargs: Any) -> bool:
        return False


CONVERSIONS: list[str] = []  # the arguments converted, by field


@strawberry.interface
class Located:
    @strawberry.field
    def distance(self, to: Point, unit: str = "km") -> str:
        CONVERSIONS.append("distance")
        return f"{self.where(to):.1f}{unit}"  # type: ignore[attr-defined]


@strawberry.type
class Shop(Located):
    code: str
    lat: float
    lon: float

    def where(self, to: Point) -> float:
        return abs(self.lat - to.lat) + abs(self.lon - to.lon)

    @strawberry.field
    def stock(
        self,
        info: strawberry.Info,
        skus: list[str] | None = None,
        order: Order = Order.NEAREST,
        first: int = 2,
    ) -> list[str]:
        CONVERSIONS.append("stock")
        if first < 0:
            raise ValueError("first must not be negative")
        chosen = skus if skus is not None else [self.code]
        return [f"{sku}:{order.value}:{info.field_name}" for sku in chosen[:first]]

    @strawberry.field
    async def later(self, near: Point | None = None) -> str | None:
        if near is None:
            return None
        return f"{self.code}@{self.where(near):.1f}"

    @strawberry.field
    def owner(self, root: Any) -> str:
        return f"owner of {root.code}"

    @strawberry.field(permission_classes=[Refused])
    def secret(self, word: str = "x") -> str | None:
        return word

    @strawberry.field
    def broken(self) -> int:
        raise RuntimeError("broken on purpose")

    @strawberry.field
    def nothing(self) -> int:
        return None  # type: ignore[return-value]


@strawberry.type
class Kiosk(Located):
    code: str

    def where(self, to: Point) -> float:
        return to.lat


SHOPS: list[Shop | Kiosk] = []


@strawberry.type
class ShopQuery:
    @strawberry.field
    def shops(self) -> list[Shop | None]:
        return [shop for shop in SHOPS if isinstance(shop, Shop)]

    @strawberry.field
    def places(self) -> list[Located]:
        return list(SHOPS)


SHOP_QUERY = """
query S($near: Point, $to: Point!, $skus: [String!], $first: Int!) {
  shops {
    code
    distance(to: {lat: 1.5}) d2: distance(to: $to, unit: "mi")
    stock stock2: stock(skus: $skus, order: LARGEST, first: $first)
    later(near: $near) notLater: later
    owner secret
  }
  failing: shops { code broken nothing }
  places { distance(to: {lat: 2, lon: 1}) ... on Kiosk { code } }
}
"""

general_shops = strawberry.Schema(query=ShopQuery, types=[Kiosk])
fast_shops = strawberry.Schema(
    query=ShopQuery, types=[Kiosk], execution_context_class=LeafFastPathExecutionContext
)


async def both_shops(variables: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    answers = []
    for schema in (general_shops, fast_shops):
        result = await schema.execute(SHOP_QUERY, variable_values=variables)
        answers.append(
            {
                "data": result.data,
                "errors": sorted(
                    (e.message, tuple(map(str, e.path or ()))) for e in result.errors or []
                ),
            }
        )
    return answers[0], answers[1]


points = st.one_of(
    st.builds(dict, lat=st.floats(-90, 90)),
    st.builds(dict, lat=st.floats(-90, 90), lon=st.floats(-90, 90)),
)


@given(
    st.lists(
        st.tuples(st.text(max_size=3), st.floats(-90, 90), st.floats(-90, 90), st.booleans()),
        max_size=3,
    ),
    st.one_of(st.none(), points),
    points,
    st.one_of(st.none(), st.lists(st.text(max_size=3), max_size=3)),
    st.integers(-1, 3),
)
async def test_resolver_fields_answer_alike(
    shops: list[tuple[str, float, float, bool]],
    near: dict[str, float] | None,
    to: dict[str, float],
    skus: list[str] | None,
    first: int,
) -> None:
    # given shops and kiosks, and any variables: a point or none, SKUs or none, any count
    SHOPS[:] = [Shop(code=c, lat=a, lon=o) if s else Kiosk(code=c) for c, a, o, s in shops]
    variables = {"near": near, "to": to, "skus": skus, "first": first}
    # when both executions answer: arguments from literals, variables and defaults, input
    # objects, enums, lists, info, root, async resolvers, a permission that refuses, an
    # exception, a null for a non-null field, a field of an interface
    plain, direct = await both_shops(variables)
    # then the data and the errors are equal, and the query was executed
    assert direct == plain
    assert direct["data"] is not None
    assert len(direct["data"]["places"]) == len(shops)


async def test_arguments_are_converted_once_per_field_node() -> None:
    # given three shops and a count of the conversions strawberry makes
    SHOPS[:] = [Shop(code=c, lat=1.0, lon=2.0) for c in "abc"]
    converted: list[str] = []
    real = execution.convert_arguments

    def counted(raw: dict[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        converted.append(kwargs["info"].field_name)
        return real(raw, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(execution, "convert_arguments", counted)
        CONVERSIONS.clear()
        result = await fast_shops.execute(
            SHOP_QUERY,
            variable_values={"near": {"lat": 1}, "to": {"lat": 1}, "skus": ["s"], "first": 1},
        )
    # then every shop's resolvers ran, but each field node's arguments were converted once:
    # two nodes of stock, three of distance (one of them through the interface)
    assert result.data is not None
    assert CONVERSIONS.count("stock") == 6
    assert CONVERSIONS.count("distance") == 9
    assert converted.count("stock") == 2
    assert converted.count("distance") == 3
    assert result.data["shops"][0]["stock2"] == ["s:LARGEST:stock"]
    assert result.data["shops"][0]["d2"] == "2.0mi"  # |1 - 1| + |2 - 0|, lon defaulted


async def test_a_refused_conversion_is_the_general_error() -> None:
    # given a listing variable of the wrong shape, which graphql-core refuses per field
    SHOPS[:] = [Shop(code="a", lat=1.0, lon=2.0)]
    plain, direct = await both_shops({"near": None, "to": {"lat": 0}, "skus": None, "first": -1})
    # then both report the resolver's error at the same path, with the rest answered
    assert direct == plain
    assert ("first must not be negative", ("shops", "0", "stock2")) in direct["errors"]


def test_plain_resolvers_are_called_directly_and_the_others_are_not() -> None:
    # given the gateway's schema and the shops' schema
    gateway = build_schema()._schema
    shops = fast_shops._schema
    # then the listing's resolvers are plain, and a field with a permission is not
    variant = gateway.type_map["Variant"]
    for name in ("availability", "price", "totalAvailable"):
        assert type(execution._plan(gateway, variant, name)) is execution._Resolver  # type: ignore[arg-type]
    shop = shops.type_map["Shop"]
    assert execution._plan(shops, shop, "secret") is None  # type: ignore[arg-type]
    assert type(execution._plan(shops, shop, "later")) is execution._Resolver  # type: ignore[arg-type]


ROWS: list[dict[str, Any]] = [{"name": "a", "size": 1}, {"name": "b", "size": None}]


@strawberry.type
class Row:
    name: str
    size: int | None


@strawberry.type
class RowQuery:
    @strawberry.field
    def rows(self) -> list[Row]:
        return ROWS  # type: ignore[return-value]


def by_key(source: Any, name: str) -> Any:
    return source[name]


def test_a_schema_default_resolver_is_kept_and_getattr_is_read_directly() -> None:
    # given rows that are dicts, read by a schema whose default resolver looks keys up
    schemas = [
        strawberry.Schema(
            query=RowQuery,
            config=StrawberryConfig(default_resolver=by_key),
            execution_context_class=context,
        )
        for context in (None, LeafFastPathExecutionContext)
    ]
    answers = [schema.execute_sync("{ rows { name size } }") for schema in schemas]
    # then both read the keys, alike, and the fast path reads them through that resolver
    assert answers[1].data == answers[0].data == {"rows": ROWS}
    graphql = schemas[1]._schema
    name = execution._plan(graphql, graphql.type_map["Row"], "name")  # type: ignore[arg-type]
    assert type(name) is execution._Leaf
    assert name.read(ROWS[0]) == "a"
    # and the gateway's plain leaves are read as attributes, without strawberry's resolver
    gateway = build_schema()._schema
    leaf = execution._plan(gateway, gateway.type_map["Variant"], "sku")  # type: ignore[arg-type]
    assert type(leaf) is execution._Leaf
    assert type(leaf.read).__name__ == "attrgetter"


def test_requests_share_one_empty_middleware_manager_when_no_extension_resolves() -> None:
    schema = build_schema()
    assert isinstance(schema, GatewaySchema)
    one = schema._get_middleware_manager(schema.get_extensions())
    other = schema._get_middleware_manager(schema.get_extensions())
    assert one is other
    assert not one.middlewares


class Shout(SchemaExtension):
    def resolve(self, _next: Any, root: Any, info: Any, *args: Any, **kwargs: Any) -> Any:
        result = _next(root, info, *args, **kwargs)
        return result.upper() if isinstance(result, str) else result


@strawberry.type
class Greeting:
    hello: str = "hi"


def test_an_extension_that_resolves_still_wraps_every_resolver() -> None:
    schema = GatewaySchema(
        query=Greeting,
        extensions=[Shout],
        execution_context_class=LeafFastPathExecutionContext,
    )
    managers = [schema._get_middleware_manager(schema.get_extensions()) for _ in range(2)]
    assert managers[0] is not managers[1]
    result = schema.execute_sync("{ hello }", root_value=Greeting())
    assert result.errors is None
    assert result.data == {"hello": "HI"}
