"""The ``commerce-gateway`` command."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from legacy.demo import SCALES

if TYPE_CHECKING:
    from legacy.sim import Knobs

DEFAULT_DATA_DIR = Path("var/demo")
DEMO_DATABASE = "gateway.sqlite"  # in the data dir, for serve --demo without DATABASE_URL
ESTATE_SYSTEMS = ("pim", "pricing", "loyalty", "oms", "erp")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="commerce-gateway",
        description="One GraphQL graph in front of a retailer's legacy systems.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    seed = commands.add_parser("seed", help="generate the demo estate's data")
    seed.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    seed.add_argument("--scale", choices=sorted(SCALES), default="default")
    seed.add_argument("--seed", type=int, default=42, help="random seed (same seed, same data)")
    seed.add_argument("--erp-url", help="ERP database URL (default: SQLite in the data dir)")
    seed.add_argument("--if-absent", action="store_true", help="do nothing if already seeded")
    seed.add_argument("--quiet", action="store_true", help="no progress bar")
    seed.set_defaults(handler=_seed)

    legacy = commands.add_parser("legacy", help="start the simulated legacy estate")
    legacy.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    legacy.add_argument("--host", default="127.0.0.1")
    legacy.add_argument(
        "--port",
        type=int,
        default=0,
        help="first port; systems take consecutive ports (default: free ports)",
    )
    legacy.add_argument("--erp-url", help="ERP database URL (default: SQLite in the data dir)")
    _knob_arguments(legacy)
    legacy.set_defaults(handler=_legacy)

    serve = commands.add_parser("serve", help="serve the gateway (GraphQL on /graphql)")
    serve.add_argument("--host", help="interface to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default: $PORT or 8000)")
    serve.add_argument(
        "--demo",
        action="store_true",
        help="also start the simulated estate seeded in --data-dir and use it as the backends",
    )
    serve.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    serve.add_argument("--erp-url", help="with --demo: the ERP database (default: SQLite there)")
    _knob_arguments(serve)
    serve.set_defaults(handler=_serve)

    schema = commands.add_parser("schema", help="export or check schema.graphql")
    schema.add_argument("action", choices=["export", "check"])
    schema.add_argument("--path", type=Path, default=Path("schema.graphql"))
    schema.set_defaults(handler=_schema)

    database = commands.add_parser("db", help="manage the gateway's own database")
    database.add_argument("action", choices=["upgrade"], help="upgrade: migrate $DATABASE_URL")
    database.set_defaults(handler=_database)

    token = commands.add_parser("token", help="print a demo customer token (JWT)")
    token.add_argument("customer_id", metavar="CUSTOMER_ID", help="e.g. C0001")
    token.add_argument(
        "--ttl", type=int, metavar="SECONDS", help="lifetime (default: the configured one)"
    )
    token.set_defaults(handler=_token)
    return parser


def _knob_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--latency-ms", type=float, help="latency of every legacy system")
    parser.add_argument("--jitter-ms", type=float, help="jitter of every legacy system")
    parser.add_argument("--error-rate", type=float, help="share of calls failing (0..1)")
    parser.add_argument(
        "--knob",
        action="append",
        default=[],
        metavar="SYSTEM.KNOB=VALUE",
        help="one system's knob, e.g. oms.latency_ms=400 or pricing.outage=true (repeatable)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.handler(args)
    return result


def _seed(args: argparse.Namespace) -> int:
    from legacy.seed import is_seeded, seed

    if args.if_absent and is_seeded(args.data_dir):
        print(f"demo estate already seeded in {args.data_dir}")
        return 0
    estate = seed(args.data_dir, args.seed, args.scale, args.erp_url, progress=not args.quiet)
    # The demo gateway's own database mirrors the estate it was served over: a new estate
    # starts it afresh (its stock ledger and orders belong to the old one).
    for stale in args.data_dir.glob(f"{DEMO_DATABASE}*"):
        stale.unlink()
    skus = sum(1 for _ in estate.skus)
    print(
        f"seeded {args.data_dir}: {len(estate.products)} products, {skus} SKUs, "
        f"{len(estate.locations)} locations, {len(estate.customers)} customers, "
        f"{len(estate.promotions)} promotions (scale {args.scale}, seed {args.seed})"
    )
    return 0


def _legacy(args: argparse.Namespace) -> int:
    from legacy.launcher import EstateConfig, start_estate

    knobs = _estate_knobs(args, "legacy")
    if knobs is None:
        return 2
    ports = {s: args.port + i for i, s in enumerate(ESTATE_SYSTEMS)} if args.port else {}
    config = EstateConfig(
        data_dir=args.data_dir, host=args.host, ports=ports, knobs=knobs, erp_url=args.erp_url
    )
    estate = start_estate(config)
    for line in estate.describe():
        print(line, flush=True)
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        while not stopping and all(p.poll() is None for p in estate.processes.values()):
            time.sleep(0.2)
    finally:
        estate.stop()
    return 0


def _token(args: argparse.Namespace) -> int:
    from gateway.config import Settings
    from gateway.security import CustomerTokens, TokenSigningUnavailable

    try:
        tokens = CustomerTokens(Settings.from_env().config().auth)
        print(tokens.issue(args.customer_id, args.ttl))
    except (ValueError, TokenSigningUnavailable) as exc:
        print(f"commerce-gateway token: {exc}", file=sys.stderr)
        return 2
    return 0


def _database(args: argparse.Namespace) -> int:
    import asyncio

    from sqlalchemy import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from gateway.config import Settings
    from gateway.db import head_revision, upgrade

    url = Settings.from_env().database_url
    shown = make_url(url).render_as_string(hide_password=True)
    try:
        asyncio.run(upgrade(url))
    except (OSError, SQLAlchemyError) as exc:
        print(f"commerce-gateway db upgrade: {shown}: {exc}", file=sys.stderr)
        return 1
    print(f"{shown} is at revision {head_revision()}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from gateway.config import Settings
    from gateway.serve import serve

    overrides = {"host": args.host, "port": args.port}
    settings = Settings.from_env().model_copy(
        update={name: value for name, value in overrides.items() if value is not None}
    )
    if not args.demo:
        return serve(settings)
    if "DATABASE_URL" not in os.environ:
        # Beside the demo estate, not in the working directory: its stock ledger and orders
        # belong to this estate and are started afresh when it is seeded again.
        database = f"sqlite+aiosqlite:///{(args.data_dir / DEMO_DATABASE).resolve()}"
        settings = settings.model_copy(update={"database_url": database})
    knobs = _estate_knobs(args, "serve")
    if knobs is None:
        return 2
    return serve(settings, args.data_dir, knobs, args.erp_url)


def _schema(args: argparse.Namespace) -> int:
    from gateway.serve import check_schema, export_schema

    return export_schema(args.path) if args.action == "export" else check_schema(args.path)


def _estate_knobs(args: argparse.Namespace, command: str) -> dict[str, Knobs] | None:
    """The knobs to start the seeded estate with; None (and why, on stderr) when it cannot."""
    from legacy.seed import is_seeded

    if not is_seeded(args.data_dir):
        print(f"no demo estate in {args.data_dir}; run: commerce-gateway seed", file=sys.stderr)
        return None
    try:
        return _knobs(args)
    except ValueError as exc:
        print(f"commerce-gateway {command}: {exc}", file=sys.stderr)
        return None


def _knobs(args: argparse.Namespace) -> dict[str, Knobs]:
    from legacy.sim import Knobs

    knobs = {system: Knobs() for system in ESTATE_SYSTEMS}
    knobs["oms"] = Knobs(latency_ms=250, jitter_ms=150)  # the OMS is slow unless told otherwise
    common = {
        name: value
        for name, value in (
            ("latency_ms", args.latency_ms),
            ("jitter_ms", args.jitter_ms),
            ("error_rate", args.error_rate),
        )
        if value is not None
    }
    for system_knobs in knobs.values():
        system_knobs.update(dict(common))
    for assignment in args.knob:
        system, _, rest = assignment.partition(".")
        name, _, raw = rest.partition("=")
        if system not in knobs or not name or not raw:
            raise ValueError(f"bad --knob {assignment!r}; expected SYSTEM.KNOB=VALUE")
        value: object = raw.lower() == "true" if raw.lower() in ("true", "false") else float(raw)
        knobs[system].update({name: value})
    return knobs


if __name__ == "__main__":
    sys.exit(main())
