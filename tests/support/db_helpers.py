"""Small helpers shared by the database and journal tests."""
from __future__ import annotations

import secrets
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.engine import URL


def count(engine: Engine, row_class, **where) -> int:
    """Rows of `row_class` matching `column=value` conditions."""
    query = select(func.count()).select_from(row_class)
    for column, value in where.items():
        query = query.where(getattr(row_class, column) == value)
    with engine.connect() as conn:
        return conn.execute(query).scalar_one()


def write_wav(path: Path, seconds: float, rate: int = 8000) -> None:
    """A real, quiet 16-bit mono WAV of `seconds`."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x01" * int(seconds * rate))


@contextmanager
def pg_schema(base: URL, prefix: str) -> Iterator[str]:
    """A fresh schema `prefix` + random in the database `base`, dropped on exit: the
    URL (password kept) whose connections use it as their search path."""
    schema = f"{prefix}{secrets.token_hex(6)}"
    owner = create_engine(base)
    with owner.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = base.update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with owner.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        owner.dispose()
