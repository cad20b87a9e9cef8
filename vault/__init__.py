"""Encryption at rest for what patients said: call recordings, voicemails, case notes.

AES-256-GCM (the `cryptography` package's AEAD; no home-made cipher) with keys
kept outside the database, in a key ring file (`<var_dir>-keys/<instance>/data.key`,
beside the runtime dir and never inside the data it protects, mode 0600 in a
0700 dir, or wherever `HOTLINE_DATA_KEY_FILE` points). One key per line,
base64; the first line seals, every line opens, so a key is rotated by adding a
new first line and re-sealing (docs/privacy.md).

A sealed blob is `HLV1` + the key's 4-byte id + a 12-byte random nonce + the
ciphertext with its 16-byte tag. What it is for (`b"recording"`, `b"note:<case
id>"`) is bound in as associated data, so a note sealed for one case does not
open as another's. Data that does not start with the magic is taken as plain
(written before encryption was switched on): `open_*` passes it through, and
the sweep in `hotline.casewriter` / `vault.seal_file` seals it in place.

Surprising: a sealed recording keeps its `.wav` name -- the case row never
changes when its file is sealed -- so read recordings through `read_recording`,
never with a WAV reader directly.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"HLV1"
NOTE_PREFIX = "hlv1:"  # a sealed note in a text column: prefix + base64 of the blob
KEY_BYTES = 32
NONCE_BYTES = 12
HEADER = len(MAGIC) + 4 + NONCE_BYTES
RECORDING = b"recording"


class VaultError(Exception):
    """Sealed data that no key of the ring opens, or that was changed."""


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def key_id(key: bytes) -> bytes:
    return hashlib.sha256(b"hotline-96608-key-id" + key).digest()[:4]


class Vault:
    """Seals and opens bytes with a key ring (the first key seals)."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("a vault needs at least one key")
        for key in keys:
            if len(key) != KEY_BYTES:
                raise ValueError(f"a data key is {KEY_BYTES} bytes")
        self._sealer = AESGCM(keys[0])
        self._sealer_id = key_id(keys[0])
        self._openers = {key_id(key): AESGCM(key) for key in keys}

    @staticmethod
    def is_sealed(data: bytes) -> bool:
        return data[:len(MAGIC)] == MAGIC

    def seal(self, data: bytes, purpose: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return MAGIC + self._sealer_id + nonce + self._sealer.encrypt(nonce, data, purpose)

    def open(self, blob: bytes, purpose: bytes) -> bytes:
        """The plain bytes of `blob`; plain data (no magic) is returned as it is."""
        if not self.is_sealed(blob):
            return blob
        if len(blob) < HEADER + 16:  # the header and the tag, at least
            raise VaultError("sealed data is cut short")
        opener = self._openers.get(blob[len(MAGIC):len(MAGIC) + 4])
        if opener is None:
            raise VaultError("sealed with a key that is not in the key ring")
        nonce = blob[len(MAGIC) + 4:HEADER]
        try:
            return opener.decrypt(nonce, blob[HEADER:], purpose)
        except InvalidTag:
            raise VaultError("sealed data was changed, or belongs elsewhere") from None

    def sealed_by_current_key(self, blob: bytes) -> bool:
        return self.is_sealed(blob) and blob[len(MAGIC):len(MAGIC) + 4] == self._sealer_id

    # -- notes: text in a database column ---------------------------------------
    def seal_note(self, text: str, case_id: str) -> str:
        blob = self.seal(text.encode("utf-8"), b"note:" + case_id.encode("utf-8"))
        return NOTE_PREFIX + base64.b64encode(blob).decode("ascii")

    def open_note(self, stored: str, case_id: str) -> str:
        if not stored.startswith(NOTE_PREFIX):
            return stored  # written before notes were sealed
        try:
            blob = base64.b64decode(stored[len(NOTE_PREFIX):], validate=True)
        except (binascii.Error, ValueError):
            raise VaultError("a sealed note is not base64") from None
        return self.open(blob, b"note:" + case_id.encode("utf-8")).decode("utf-8")


def open_note(vault: Vault | None, stored: str, case_id: str) -> str:
    """A note's text as read from the database (with or without a vault).

    Without a vault a sealed note cannot be read: it shows as a marker, never as
    base64 noise, and never raises into a page.
    """
    if vault is None:
        return "[已加密 sealed]" if stored.startswith(NOTE_PREFIX) else stored
    try:
        return vault.open_note(stored, case_id)
    except VaultError:
        return "[无法解密 cannot be opened]"


def seal_note(vault: Vault | None, text: str, case_id: str) -> str:
    return text if vault is None else vault.seal_note(text, case_id)


# -- recordings: files ----------------------------------------------------------------
def read_recording(path: Path, vault: Vault | None) -> bytes:
    """The recording's audio (a WAV file's bytes), sealed or not.

    Raises VaultError for a sealed file without a vault or with a foreign key.
    """
    data = Path(path).read_bytes()
    if not Vault.is_sealed(data):
        return data
    if vault is None:
        raise VaultError("the recording is sealed and no data key is configured")
    return vault.open(data, RECORDING)


def seal_file(path: Path, vault: Vault, purpose: bytes = RECORDING) -> bool:
    """Seal a file in place (atomically: a sealed copy, fsync, rename): a recording,
    or whatever `purpose` names (a photo: `photos.rules.photo_purpose`).

    Returns False when it was sealed already with the current key. A file sealed
    with an older key of the ring is re-sealed with the current one (rotation).
    """
    path = Path(path)
    data = path.read_bytes()
    if vault.sealed_by_current_key(data):
        return False
    plain = vault.open(data, purpose)
    part = path.with_name(path.name + ".sealing")
    try:
        # Readable by the instance's own user only, like everything it writes.
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(vault.seal(plain, purpose))
            out.flush()
            os.fsync(out.fileno())
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
    return True


def seal_case_audio(paths: Sequence[str | None], vault: Vault, root: Path) -> None:
    """Seal a case's audio (its recording, its voicemail: `paths`, None skipped) in
    place, each one that is a file under `root`. Tries them all, then raises the
    first failure (the hourly sweep, `seal_tree`, tries again)."""
    root = Path(root).resolve()
    first: Exception | None = None
    for value in paths:
        if not value:
            continue
        try:
            path = Path(value).resolve()
            if path.is_relative_to(root) and path.is_file():
                seal_file(path, vault)
        except Exception as exc:
            first = first or exc
    if first is not None:
        raise first


# -- the key ring file ----------------------------------------------------------------
def load_keyring(path: Path, *, create: bool = True) -> list[bytes]:
    """The keys in `path` (first = current); a new ring of one key if missing and `create`.

    The file is created 0600 and never overwritten. Blank lines and `#` comments
    are skipped.
    """
    path = Path(path)
    if not path.exists():
        if not create:
            raise FileNotFoundError(f"no data key ring at {path}")
        _private_dir(path.parent)
        line = base64.b64encode(new_key()).decode("ascii") + "\n"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first: read theirs
        else:
            with os.fdopen(fd, "w") as out:
                out.write("# 96608 hotline data keys: first line seals, all open. KEEP A COPY OFFLINE.\n")
                out.write(line)
                out.flush()
                os.fsync(out.fileno())
    keys = []
    for number, raw in enumerate(path.read_text(encoding="ascii").splitlines(), 1):
        raw = raw.strip()
        if not raw or raw.startswith("#"):
            continue
        try:
            key = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"{path}: line {number} is not a base64 key") from None
        if len(key) != KEY_BYTES:
            raise ValueError(f"{path}: line {number} is not a {KEY_BYTES}-byte key")
        keys.append(key)
    if not keys:
        raise ValueError(f"{path}: no key in the key ring")
    return keys


def move_keyring(old: Path, new: Path) -> bool:
    """Move a key ring from `old` to `new` once (`new` in a 0700 dir); True if moved.

    Nothing happens when `old` is missing or `new` exists already. The ring is
    linked (or copied, across file systems) into place before the old name is
    removed, so a process starting at the same moment finds one ring or the
    other, never none -- and never generates a second one.
    """
    old, new = Path(old), Path(new)
    if not old.is_file() or new.exists():
        return False
    _private_dir(new.parent)
    try:
        os.link(old, new)
    except FileExistsError:
        return False
    except OSError:  # another file system: copy, with the same O_EXCL guarantee
        data = old.read_bytes()
        try:
            fd = os.open(new, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
    os.chmod(new, 0o600)
    old.unlink(missing_ok=True)
    return True


def _private_dir(path: Path) -> None:
    """Make `path` (and missing parents) a directory only its owner can enter."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def seal_tree(root: Path, vault: Vault, *, quiet_s: float, now: float) -> tuple[int, int]:
    """Seal every file under `root` not sealed with the current key and not
    written to for `quiet_s` seconds (a file MixMonitor still writes is left).

    Returns (sealed, failed). Symlinks are skipped: they could point outside.
    """
    sealed = failed = 0
    for path in sorted(Path(root).rglob("*")):
        if path.is_symlink() or not path.is_file() or path.suffix in (".sealing", ".part"):
            continue
        if path.is_relative_to(Path(root) / "photos"):
            continue  # sealed for their case, not as recordings (photos.files.seal_photo_tree)
        try:
            if now - path.stat().st_mtime < quiet_s:
                continue
            with open(path, "rb") as head:
                start = head.read(HEADER)
            if vault.sealed_by_current_key(start):
                continue
            if seal_file(path, vault):
                sealed += 1
        except (OSError, VaultError):
            failed += 1
    return sealed, failed


def is_sealed_file(path: Path) -> bool:
    """Whether the file starts as a sealed blob does (reads four bytes)."""
    with open(path, "rb") as head:
        return Vault.is_sealed(head.read(len(MAGIC)))
