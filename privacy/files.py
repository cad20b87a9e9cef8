"""Where a case's stored recording path points, checked against the recordings dir (adapter).

A stored path is data, and data can be wrong or planted: the purge deletes
and the export reads only regular files inside the recordings dir, never
through a symlink, never after `..` leads out (like console.cases.recording_file).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path


class Where(str, enum.Enum):
    INSIDE = "inside"  # a regular file inside the recordings dir
    MISSING = "missing"  # inside, but no file there (already gone)
    REMOTE = "remote"  # a URL (a carrier's copy not fetched yet): not ours to delete
    REFUSED = "refused"  # outside the dir, a symlink, not a regular file, or unreadable as a path


@dataclass(frozen=True)
class Located:
    where: Where
    path: Path | None = None  # the resolved file, when INSIDE


def locate(root: Path, stored: str) -> Located:
    """Resolve `stored` (absolute, or relative to `root`) and say whether it is safe to touch.

    Surprising: a symlink is refused even when it points inside the dir -- a
    recording is never one, so one is planted or a mistake.
    """
    if not isinstance(stored, str) or not stored:
        return Located(Where.REFUSED)
    if "://" in stored:
        return Located(Where.REMOTE)
    try:
        base = root.resolve()
        literal = Path(stored)
        if not literal.is_absolute():
            literal = base / literal
        resolved = literal.resolve()
        is_link = literal.is_symlink()
    except (OSError, ValueError, RuntimeError):  # NUL in the path, a symlink loop
        return Located(Where.REFUSED)
    if is_link or resolved == base or not resolved.is_relative_to(base):
        return Located(Where.REFUSED)
    try:
        if not resolved.exists():
            return Located(Where.MISSING)
        if not resolved.is_file():
            return Located(Where.REFUSED)
    except OSError:
        return Located(Where.REFUSED)
    return Located(Where.INSIDE, resolved)
