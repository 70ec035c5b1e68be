"""The token count that refuses a document before it is parsed agrees with graphql-core's lexer,
which the parser's own token limit uses, on any document the lexer reads."""

from __future__ import annotations

import pytest
from graphql import GraphQLSyntaxError, Source, TokenKind
from graphql.language.lexer import Lexer
from hypothesis import example, given
from hypothesis import strategies as st

from gateway.limits import too_many_tokens


def lexer_count(document: str) -> int:
    """Tokens as graphql-core's parser counts them against ``max_tokens`` (comments skipped)."""
    lexer = Lexer(Source(document))
    count = 0
    while lexer.advance().kind != TokenKind.EOF:
        count += 1
    return count


pieces = st.sampled_from(
    [
        "query", "Listing", "_x9", "__typename", "$first", "on", "...", "!", "(", ")", "[", "]",
        "{", "}", ":", "=", "@", "|", "&", "0", "-12", "3.25", "1e5", "-4.5E-3", '"text"',
        '"a # not a comment"', '"quote \\" inside"', '"""block "quoted" and ""twice"" """',
        '"""escaped \\""" in a block"""', "# a comment\n", "#\n", ",", " ", "\n", "\t", "\ufeff",
    ]
)  # fmt: skip
documents = st.lists(pieces, max_size=60).map(" ".join)


@given(documents, st.integers(min_value=0, max_value=70))
@example('{ a(s: "#") }', 6)
@example("{ a } # { b c d e f g }", 3)
def test_the_count_agrees_with_the_lexer(document: str, limit: int) -> None:
    try:
        expected = lexer_count(document)
    except GraphQLSyntaxError:
        return  # not a document the lexer reads: the parser refuses it either way
    assert too_many_tokens(document, limit) == (expected > limit)


@pytest.mark.parametrize(
    ("document", "limit", "over"),
    [
        ("{ " + "__typename " * 600 + "}", 500, True),
        ("{ " + "__typename " * 499 + "}", 500, True),  # 501 with the braces
        ("{ " + "__typename " * 498 + "}", 500, False),  # 500
        ("# " + "x " * 1000 + "\n{ a }", 5, False),  # a comment is no token
    ],
)
def test_documents_at_the_limit(document: str, limit: int, over: bool) -> None:
    assert (lexer_count(document) > limit) == over
    assert too_many_tokens(document, limit) == over
