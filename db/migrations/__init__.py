"""Alembic migrations, shipped inside the package; run them with `db.session.migrate`."""
