"""Alembic revisions of the gateway's database (a package so that wheels ship them)."""
