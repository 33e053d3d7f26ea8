"""Alembic environment: migrate the connection ``Database.migrate()`` passes in.

Used programmatically only: the store hands Alembic an open connection inside its own
transaction (``config.attributes["connection"]``), so a migration and the lock that serialises
nodes share one transaction. SQLite gets batch mode so later ALTERs work on it too.
"""

from __future__ import annotations

from alembic import context

from softswitch.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `softswitch db upgrade` (Database.migrate)")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_server_default=False,
)
with context.begin_transaction():
    context.run_migrations()
