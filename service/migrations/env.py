"""Alembic's environment: run the migrations on the connection ``migrate.py`` gives."""

from __future__ import annotations

from alembic import context

from funcx_flows.service.db import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
