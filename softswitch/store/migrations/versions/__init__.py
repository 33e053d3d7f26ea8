"""Alembic revisions, oldest first (``0001_initial`` creates the SPEC section 7 schema)."""
