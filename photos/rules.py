"""What a wound photo must be: its type by content, its size, its pixels, its note.

The type is read from the first bytes (magic numbers), never from the file's
name or the Content-Type the phone sent: both are the sender's words. JPEG,
PNG and HEIC/HEIF (iPhones' default) are taken; everything else is refused
before any decoder sees it.

Surprising: passing these rules is not enough to store a file. The stored
photo is always Pillow's re-encode of the decoded pixels (photos.images), so
what the sender wrote (EXIF with GPS, bytes appended after the image) never
reaches the disk.
"""
from __future__ import annotations

import enum
import re
import unicodedata

MAX_BYTES = 15 * 1024 * 1024  # one photo; a phone's JPEG is 2-6 MB, HEIC less
MAX_PIXELS = 40_000_000  # a 48 MP phone sensor bins to 12 MP; 40 MP leaves room, stops bombs
MAX_FILES_PER_POST = 6  # the page sends a few at a time; a link takes DEFAULT_MAX_UPLOADS in all
# One POST: its files and the note, with room for the multipart framing.
MAX_POST_BYTES = MAX_FILES_PER_POST * MAX_BYTES + 1024 * 1024
MAX_NOTE = 500
THUMB_SIDE = 320
# Photos decoded at once per process: each 40 MP one holds ~160 MiB while it is
# decoded and re-encoded (photos.images), so two bound that at ~320 MiB.
MAX_DECODES = 2
HEAD_BYTES = 32  # enough to tell the types apart

# ISO BMFF major brands of HEIF still images (ISO/IEC 23008-12): HEVC-coded
# (heic, heix, ...) and the generic structural brands phones write (mif1, msf1).
HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm",
                         b"hevs", b"mif1", b"msf1", b"mif2"})
CASE_DIR_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}", re.ASCII)
_CONTROL = {"Cc", "Cf", "Cs", "Co", "Cn"}


class ImageKind(str, enum.Enum):
    JPEG = "jpeg"
    PNG = "png"
    HEIC = "heic"


class PhotoRefusal(str, enum.Enum):
    """Why one file was not taken; `words` is what the caller's page says."""

    NOT_AN_IMAGE = "not_an_image"
    TOO_LARGE = "too_large"
    TOO_MANY_PIXELS = "too_many_pixels"
    UNREADABLE = "unreadable"
    EMPTY = "empty"
    BUSY = "busy"  # every decoding slot stayed taken: send it again

    @property
    def words(self) -> tuple[str, str]:
        return _WORDS[self]


_WORDS = {
    PhotoRefusal.NOT_AN_IMAGE: ("不是照片（仅接受 JPEG、PNG、HEIC）",
                                "Not a photo (JPEG, PNG or HEIC only)"),
    PhotoRefusal.TOO_LARGE: (f"文件过大（每张最多 {MAX_BYTES // (1024 * 1024)} MB）",
                             f"Too large (at most {MAX_BYTES // (1024 * 1024)} MB a photo)"),
    PhotoRefusal.TOO_MANY_PIXELS: (f"像素过多（最多 {MAX_PIXELS // 1_000_000} 百万像素）",
                                   f"Too many pixels (at most {MAX_PIXELS // 1_000_000} MP)"),
    PhotoRefusal.UNREADABLE: ("照片已损坏，无法读取", "The photo is damaged and cannot be read"),
    PhotoRefusal.EMPTY: ("空文件", "Empty file"),
    PhotoRefusal.BUSY: ("服务器繁忙，请稍后重新发送这张照片", "The server is busy; send this photo again shortly"),
}


class NoteError(ValueError):
    """A note that cannot be kept (too long)."""


def sniff(head: bytes) -> ImageKind | None:
    """The image type the first bytes say, or None: by content only."""
    if head[:3] == b"\xff\xd8\xff":
        return ImageKind.JPEG
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return ImageKind.PNG
    # ISO BMFF: a 4-byte box size, "ftyp", then the major brand.
    if head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS:
        return ImageKind.HEIC
    return None


def check_size(size: int) -> PhotoRefusal | None:
    if size <= 0:
        return PhotoRefusal.EMPTY
    if size > MAX_BYTES:
        return PhotoRefusal.TOO_LARGE
    return None


def check_pixels(width: int, height: int, max_pixels: int = MAX_PIXELS) -> PhotoRefusal | None:
    """Decided from the header's dimensions, before a pixel is decoded."""
    if width <= 0 or height <= 0:
        return PhotoRefusal.UNREADABLE
    if width * height > max_pixels:
        return PhotoRefusal.TOO_MANY_PIXELS
    return None


def clean_note(text: str) -> str:
    """The note as kept: trimmed, control and format characters (NUL, bidi
    overrides) dropped, line breaks kept. Raises NoteError past MAX_NOTE."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    kept = "".join(ch for ch in text
                   if ch in "\n\t" or unicodedata.category(ch) not in _CONTROL)
    kept = kept.strip()
    if len(kept) > MAX_NOTE:
        raise NoteError(f"a note has at most {MAX_NOTE} characters")
    return kept


def sender_for(surgeon_id: int | None) -> str:
    """Who sent a photo, as the table keeps it: the caller (by link) or a surgeon."""
    if surgeon_id is None:
        return "caller"
    if isinstance(surgeon_id, bool) or not isinstance(surgeon_id, int) or surgeon_id <= 0:
        raise ValueError("a surgeon id is a positive integer")
    return f"surgeon:{surgeon_id}"


def photo_purpose(case_id: str) -> bytes:
    """What a photo's seal is bound to (vault/): a photo copied to another case does not open."""
    return b"photo:" + case_id.encode("utf-8")


def photo_paths(case_id: str, photo_id: int) -> tuple[str, str]:
    """(photo, thumbnail) paths relative to the recordings dir.

    The case id becomes a directory name, so it must start with a letter or
    digit: `.` and `..` (which CASE_ID_RE alone would let through) never do.
    """
    if not CASE_DIR_RE.fullmatch(case_id):
        raise ValueError("this case id cannot name a photo directory")
    if isinstance(photo_id, bool) or not isinstance(photo_id, int) or photo_id <= 0:
        raise ValueError("a photo id is a positive integer")
    return f"photos/{case_id}/{photo_id}.jpg", f"photos/{case_id}/{photo_id}-thumb.jpg"
