"""Alembic environment: uses the connection handed over by ``upgrade_schema``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from raydeck.db.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # `alembic` CLI use (e.g. autogenerate): URL from the ini/env
    engine = create_engine(context.config.get_main_option("sqlalchemy.url") or "sqlite://")
    connection = engine.connect()

context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
