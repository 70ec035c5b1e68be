"""Admission control: at most N GraphQL requests execute at once; the rest wait their turn.

Without it, an overloaded process starts every request at once, each backend call's timeout
then also counts the wait for the CPU, and under enough load every request times out and all
the work is wasted. With it, excess requests queue outside the timed backend calls, and a
request that has waited ``max_wait`` seconds is turned away with 503 and ``Retry-After``, so
a load balancer can send it elsewhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.limits import refuse

OVERLOADED: Final = "OVERLOADED"


class AdmissionLimit:
    def __init__(
        self,
        app: ASGIApp,
        max_in_flight: int = 16,
        max_wait: float = 10.0,
        paths: tuple[str, ...] = ("/graphql",),
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.app = app
        self.max_wait = max_wait
        self.paths = paths
        self._slots = asyncio.Semaphore(max_in_flight)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            # A connection holds no slot: each query or mutation it runs takes one (slot()).
            state = {**scope.get("state", {}), "admission": self}
            await self.app({**scope, "state": state}, receive, send)
            return
        async with self.slot() as admitted:
            if not admitted:
                await _overloaded(send, retry_after=max(1, round(self.max_wait / 2)))
                return
            await self.app(scope, receive, send)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[bool]:
        """One of the slots, held while the block runs; False (and no slot) when none came
        free within ``max_wait``."""
        try:
            async with asyncio.timeout(self.max_wait):
                await self._slots.acquire()
        except TimeoutError:
            yield False
            return
        try:
            yield True
        finally:
            self._slots.release()


async def _overloaded(send: Send, retry_after: int) -> None:
    headers = {"retry-after": str(retry_after)}
    await refuse(send, 503, OVERLOADED, "the gateway is overloaded", headers)
