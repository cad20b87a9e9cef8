"""Database adapter: SQLAlchemy 2 models, repositories, Alembic migrations.

SQLite (WAL) by default, PostgreSQL by URL; the same code and tests run on both.
"""
