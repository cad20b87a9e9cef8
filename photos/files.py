"""Photo files beside the recordings: sealed, written atomically, read only from inside the dir.

`<recordings dir>/photos/<case id>/<photo id>.jpg` and `...-thumb.jpg`, each
sealed with the data key ring (vault/, purpose `photo:<case id>`), written to
a temporary file, fsynced, renamed (a crash leaves the old file or the new
one, never half of one), mode 0600 (the instance's own user only). Without a vault (a test app with no key
ring) the JPEG is written plain, as recordings were before sealing.
"""
from __future__ import annotations

import os
from pathlib import Path

from photos.rules import photo_purpose
from vault import Vault, VaultError, seal_file

FILE_MODE = 0o600
DIR_MODE = 0o700


class OutsidePhotos(Exception):
    """A stored photo path that resolves outside the recordings dir, or is not a plain file."""


def write_atomic(path: Path, data: bytes) -> None:
    """`data` into `path` via a temporary sibling, fsync, rename; the dir is fsynced too."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    part = path.with_name(path.name + ".part")
    try:
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, FILE_MODE)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(part, FILE_MODE)  # the umask may have taken bits off
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a crash
    finally:
        os.close(dir_fd)


def seal_photo(data: bytes, case_id: str, vault: Vault | None) -> bytes:
    return data if vault is None else vault.seal(data, photo_purpose(case_id))


def locate(root: Path, stored: str) -> Path:
    """The stored relative path as a regular file inside `root` (no symlink, no `..` out)."""
    base = Path(root).resolve()
    path = base / stored
    try:
        if path.is_symlink():
            raise OutsidePhotos(stored)
        resolved = path.resolve(strict=True)
    except (OSError, ValueError, RuntimeError):
        raise OutsidePhotos(stored) from None
    if not resolved.is_relative_to(base) or resolved == base or not resolved.is_file():
        raise OutsidePhotos(stored)
    return resolved


def read_photo(root: Path, stored: str, case_id: str, vault: Vault | None) -> bytes:
    """The JPEG's bytes, opened in memory. Raises OutsidePhotos, OSError, VaultError."""
    data = locate(root, stored).read_bytes()
    if not Vault.is_sealed(data):
        return data
    if vault is None:
        raise VaultError("the photo is sealed and no data key is configured")
    return vault.open(data, photo_purpose(case_id))


def seal_photo_tree(root: Path, vault: Vault) -> tuple[int, int]:
    """Seal, or re-seal with the current key (rotation), every photo under `root`/photos.

    Returns (sealed, failed). The purpose comes from the case directory's name,
    so this is the photos' own sweep: `vault.seal_tree` would seal a plain photo
    as a recording (the wrong purpose) and fails on a sealed one after a
    rotation, so it must leave `photos/` to this. Symlinks and anything but
    `<case>/<name>.jpg` are skipped.
    """
    sealed = failed = 0
    base = Path(root) / "photos"
    if not base.is_dir() or base.is_symlink():
        return 0, 0
    for case_dir in sorted(base.iterdir()):
        if case_dir.is_symlink() or not case_dir.is_dir():
            continue
        purpose = photo_purpose(case_dir.name)
        for path in sorted(case_dir.glob("*.jpg")):
            if path.is_symlink() or not path.is_file():
                continue
            try:
                if seal_file(path, vault, purpose):
                    sealed += 1
            except (OSError, VaultError):
                failed += 1
    return sealed, failed
