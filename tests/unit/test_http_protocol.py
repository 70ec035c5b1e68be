"""What the gateway's HTTP protocol writes: a turn's writes in one, in order, none lost."""

from __future__ import annotations

import asyncio

import httpx
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from gateway.http_protocol import _OneWritePerTurn
from tests.support import serve_on_thread


class Recorded(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.events: list[str] = []
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def write_eof(self) -> None:
        self.events.append("eof")

    def close(self) -> None:
        self.closing = True
        self.events.append("close")

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 1)}.get(name, default)


async def test_the_writes_of_one_turn_leave_as_one_at_its_end() -> None:
    transport = Recorded()
    held = _OneWritePerTurn(transport, asyncio.get_running_loop())
    held.write(b"HTTP/1.1 200 OK\r\n\r\n")
    held.writelines([b"hello", b" world"])
    assert transport.written == []
    assert held.get_write_buffer_size() == len(b"HTTP/1.1 200 OK\r\n\r\nhello world")

    await asyncio.sleep(0)
    assert transport.written == [b"HTTP/1.1 200 OK\r\n\r\nhello world"]

    held.write(b"next")
    await asyncio.sleep(0)
    assert transport.written[1:] == [b"next"]


async def test_closing_or_ending_sends_what_is_held_first() -> None:
    transport = Recorded()
    held = _OneWritePerTurn(transport, asyncio.get_running_loop())
    held.write(b"last words")
    held.write_eof()
    held.close()
    assert transport.written == [b"last words"]
    assert transport.events == ["eof", "close"]
    await asyncio.sleep(0)  # the turn's own flush finds nothing more
    assert transport.written == [b"last words"]


async def test_everything_else_is_the_transports() -> None:
    held = _OneWritePerTurn(Recorded(), asyncio.get_running_loop())
    assert held.get_extra_info("peername") == ("127.0.0.1", 1)
    assert held.is_closing() is False


def test_a_served_app_answers_whole_responses_over_keep_alive() -> None:
    async def echo(request: object) -> PlainTextResponse:
        return PlainTextResponse("x" * 100_000)

    app = Starlette(routes=[Route("/", echo)])
    url, server, thread = serve_on_thread(app)
    try:
        with httpx.Client(trust_env=False) as client:
            answers = [client.get(f"{url}/") for _ in range(3)]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert [answer.status_code for answer in answers] == [200] * 3
    assert all(answer.text == "x" * 100_000 for answer in answers)
