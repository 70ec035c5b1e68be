"""uvicorn's HTTP/1.1 protocol, with what it writes in one turn of the event loop sent in one
write: a response's head and body leave in one packet, not two.

uvicorn writes the status line and headers when the app sends ``http.response.start``, and the
body when it sends ``http.response.body``: two system calls and two segments on the wire for
every answer, and the client woken twice. An app sends both in the same turn (nothing is
awaited in between), so holding the writes of a turn and sending them together at its end
costs one scheduled callback and saves a system call on every request.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class ResponseInOneWrite(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_OneWritePerTurn(transport, self.loop))  # type: ignore[arg-type]


class _OneWritePerTurn:
    """A transport whose writes of one turn go out as one write at its end. Closing, or
    ending the writing side, sends what is held first; everything else is the transport's."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        if self._held is None:
            self._held = [data]
            self._loop.call_soon(self._flush)
        else:
            self._held.append(data)

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def get_write_buffer_size(self) -> int:
        held = sum(len(data) for data in self._held or ())
        return held + self._transport.get_write_buffer_size()

    def _flush(self) -> None:
        held, self._held = self._held, None
        if held and not self._transport.is_closing():
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
