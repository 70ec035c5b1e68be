"""``python -m legacy serve SYSTEM``: serve one simulated system (used by the launcher)."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import socket
from pathlib import Path

import uvicorn

from legacy.launcher import HTTP_SYSTEMS, default_erp_url
from legacy.sim import DEFAULT_LOYALTY_API_KEY, Knobs, SimSettings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m legacy")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve one simulated system")
    serve.add_argument("system", choices=HTTP_SYSTEMS)
    serve.add_argument("--data-dir", type=Path, default=Path("var/demo"))
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=0)
    serve.add_argument("--fd", type=int, help="serve on this already-bound socket")
    serve.add_argument("--erp-url")
    serve.add_argument("--api-key", default=DEFAULT_LOYALTY_API_KEY)
    serve.add_argument("--knobs", help='JSON, e.g. {"latency_ms": 20}')
    args = parser.parse_args(argv)

    knobs = None
    if args.knobs:
        knobs = Knobs()
        knobs.update(json.loads(args.knobs))
    settings = SimSettings(
        data_dir=args.data_dir,
        knobs=knobs,
        erp_url=args.erp_url or default_erp_url(args.data_dir),
        api_key=args.api_key,
    )
    module = importlib.import_module(f"legacy.{args.system}")
    app = module.create_app(settings)
    config = uvicorn.Config(
        app, host=args.host, port=args.port, log_level="warning", access_log=False
    )
    # uvicorn's own fd= option wraps the socket as AF_UNIX, so asyncio never sets TCP_NODELAY
    # and every keep-alive response waits ~40 ms for a delayed ACK. Hand it the real socket.
    sockets = None if args.fd is None else [socket.socket(fileno=args.fd)]
    # uvicorn re-raises Ctrl-C after its graceful shutdown; the shutdown is what matters.
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(config).run(sockets=sockets)


if __name__ == "__main__":
    main()
