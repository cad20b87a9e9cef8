"""Small helpers shared by the database and journal tests."""
from __future__ import annotations

import wave
from pathlib import Path

from sqlalchemy import Engine, func, select


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
