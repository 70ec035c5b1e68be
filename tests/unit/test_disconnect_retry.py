"""``retry_on_disconnect``: what runs again after a lost connection, and what never does."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.exc import DBAPIError

from gateway.db import retry_on_disconnect

# What one call of an operation does: answer, lose its connection, or fail otherwise.
OUTCOMES = st.sampled_from(["answer", "disconnect", "error"])


def _failure(kind: str) -> DBAPIError:
    error = DBAPIError("SELECT 1", None, ConnectionResetError(kind))
    error.connection_invalidated = kind == "disconnect"
    return error


@given(st.lists(OUTCOMES, min_size=3, max_size=3), st.booleans())
def test_only_a_disconnect_runs_again_and_only_once_unless_the_commit_is_found(
    outcomes: list[str], committed: bool
) -> None:
    # given an operation whose calls go as ``outcomes`` say, and a look for its commit
    calls: list[str] = []
    looks: list[bool] = []

    async def operation() -> str:
        outcome = outcomes[len(calls)]
        calls.append(outcome)
        if outcome != "answer":
            raise _failure(outcome)
        return "ran"

    async def look() -> str | None:
        looks.append(committed)
        return "found" if committed else None

    # when it runs through the retry
    async def run() -> str | DBAPIError:
        try:
            return await retry_on_disconnect(operation, before_retry=look)
        except DBAPIError as error:
            return error

    result = asyncio.run(run())

    # then a first disconnect leads to one look and, when nothing was committed, one more
    # call; anything else (an answer, another error, a second disconnect) is final
    first = outcomes[0]
    if first == "answer":
        assert (result, calls, looks) == ("ran", ["answer"], [])
    elif first == "error":
        assert isinstance(result, DBAPIError)
        assert (calls, looks) == (["error"], [])
    elif committed:
        assert (result, calls, looks) == ("found", ["disconnect"], [True])
    else:
        assert calls == outcomes[:2]
        assert looks == [False]
        if outcomes[1] == "answer":
            assert result == "ran"
        else:
            assert isinstance(result, DBAPIError)


def test_attempts_must_allow_one_call() -> None:
    async def operation() -> str:
        return "ran"

    assert asyncio.run(retry_on_disconnect(operation, attempts=1)) == "ran"
    with pytest.raises(ValueError, match="at least one"):
        asyncio.run(retry_on_disconnect(operation, attempts=0))
