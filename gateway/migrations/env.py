"""Alembic's environment for the gateway's database.

``gateway.db.upgrade`` hands in an open connection (``config.attributes["connection"]``) inside
the transaction that holds its lock. Without one, as from the ``alembic`` command line, an async
engine is built from ``sqlalchemy.url``.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection

from gateway.db import create_engine, metadata


def run_on(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


async def run_on_new_engine(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(run_on)
    finally:
        await engine.dispose()


def run_offline(url: str) -> None:
    context.configure(url=url, target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run() -> None:
    given: Connection | None = context.config.attributes.get("connection")
    url = context.config.get_main_option("sqlalchemy.url") or ""
    if given is not None:
        run_on(given)
    elif context.is_offline_mode():
        run_offline(url)
    else:
        asyncio.run(run_on_new_engine(url))


run()
