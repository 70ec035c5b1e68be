"""Answers that degrade instead of disappearing: what a field shows when its backend cannot
answer, and the one error per failed backend that tells the client which fields are affected.

A field whose backend failed resolves to what is known (the last price read, flagged stale,
with its age) or to a typed "unavailable" value, and notes its path here. After execution the
request's ``Degradations`` become one GraphQL error per backend, with ``extensions``
``{code, backend, paths, stale}``: the page itself is never nulled for it.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

from graphql import GraphQLError

from adapters.ports import BackendError, BackendTimedOut, Price
from gateway.resilience import CircuitOpen

MAX_PATHS = 100  # per backend in one answer; the count says how many there were


class Reason(enum.Enum):
    """Why a backend's value is missing."""

    BACKEND_UNAVAILABLE = "BACKEND_UNAVAILABLE"  # it failed, or said it is down
    BACKEND_TIMED_OUT = "BACKEND_TIMED_OUT"  # no answer within its timeout or the deadline
    CIRCUIT_OPEN = "CIRCUIT_OPEN"  # it failed so often that it is not being asked for now
    BACKEND_STALE = "BACKEND_STALE"  # it answers, but its feed has not been read lately

    @classmethod
    def of(cls, error: BackendError) -> Reason:
        if isinstance(error, CircuitOpen):
            return cls.CIRCUIT_OPEN
        if isinstance(error, BackendTimedOut):
            return cls.BACKEND_TIMED_OUT
        return cls.BACKEND_UNAVAILABLE


@dataclass(frozen=True, slots=True)
class PriceGap:
    """No current price for a SKU: why, and the last price the gateway had (display only)."""

    backend: str
    reason: Reason
    last_known: Price | None = None
    retry_after: float | None = None


@dataclass(slots=True)
class _Affected:
    reason: Reason
    message: str
    paths: list[list[str | int]] = field(default_factory=list)
    count: int = 0
    stale: int = 0


class Degradations:
    """The fields of one request that show less than they should, by backend."""

    def __init__(self) -> None:
        self._by_backend: dict[str, _Affected] = {}

    def __bool__(self) -> bool:
        return bool(self._by_backend)

    def note(
        self,
        backend: str,
        reason: Reason,
        path: Sequence[str | int],
        *,
        stale: bool = False,
        message: str | None = None,
    ) -> None:
        """The field at ``path`` lacks ``backend``'s current value; ``stale`` when it shows the
        last known one instead."""
        affected = self._by_backend.get(backend)
        if affected is None:
            text = message or _MESSAGES[reason].format(backend=backend)
            affected = self._by_backend[backend] = _Affected(reason, text)
        affected.count += 1
        affected.stale += stale
        if len(affected.paths) < MAX_PATHS:
            affected.paths.append(list(path))

    def errors(self) -> list[GraphQLError]:
        return [
            GraphQLError(
                affected.message,
                extensions={
                    "code": affected.reason.value,
                    "backend": backend,
                    "paths": affected.paths,
                    "fields": affected.count,
                    "stale": affected.stale,
                },
            )
            for backend, affected in self._by_backend.items()
        ]


_MESSAGES = {
    Reason.BACKEND_UNAVAILABLE: "{backend} is unavailable",
    Reason.BACKEND_TIMED_OUT: "{backend} did not answer in time",
    Reason.CIRCUIT_OPEN: "{backend} is failing and is not being asked for now",
    Reason.BACKEND_STALE: "{backend}'s changes have not been read lately",
}
