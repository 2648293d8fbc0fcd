"""Alembic migrations of the backend's database (applied by ``backend.db.migrate``)."""
