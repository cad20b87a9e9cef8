"""Decode an uploaded photo with Pillow and write a new JPEG and a thumbnail from its pixels.

What is stored is what Pillow wrote, never the upload's bytes: EXIF (GPS, the
phone's serial, the time) is not carried over, and whatever a polyglot hid
after the image (a ZIP, HTML) is not either. The EXIF orientation is applied
to the pixels first, so a photo taken sideways still stands up.

Decompression bombs are stopped twice: `check_pixels` on the header's
dimensions (our limit, `rules.MAX_PIXELS`) before anything is decoded, and
Pillow's own `Image.MAX_IMAGE_PIXELS` guard, which stays on (this module
refuses to run with it switched off).

Decoding is bounded in memory: a 40 MP photo is decoded once (120 MB of
RGB), turned, re-encoded (without optimised Huffman tables above 12 MP)
and shrunk to its thumbnail in place, never copied; and at most `rules.MAX_DECODES` photos are decoded at once in a
process (others wait up to `DECODE_WAIT_S`, then are refused as busy), so
several uploads at once cannot exhaust the console's memory.

HEIC is read through `pillow-heif` when it is installed; without it a HEIC
photo is refused as unreadable (and the log says why once).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import io
import logging
import threading
from dataclasses import dataclass

from PIL import Image, ImageOps

from photos.rules import (MAX_DECODES, MAX_PIXELS, THUMB_SIDE, ImageKind, PhotoRefusal,
                          check_pixels, check_size, sniff)

logger = logging.getLogger(__name__)

try:
    import pillow_heif
except ImportError:  # pragma: no cover - pillow-heif ships wheels for our platforms
    pillow_heif = None
    HEIF_READER = False
else:
    pillow_heif.register_heif_opener()
    HEIF_READER = True

# Pillow's plugin names for each kind: Image.open tries these and no other
# decoder (no TIFF, no PSD, no EPS that runs Ghostscript).
FORMATS = {ImageKind.JPEG: ("JPEG", "MPO"), ImageKind.PNG: ("PNG",), ImageKind.HEIC: ("HEIF",)}
JPEG_QUALITY = 88
PILLOW_DEFAULT_MAX_PIXELS = int(1024 * 1024 * 1024 // 4 // 3)  # Image.MAX_IMAGE_PIXELS as shipped
THUMB_QUALITY = 80
OPTIMIZE_MAX_PIXELS = 12_000_000
DECODE_WAIT_S = 30.0  # a caller's page waits this long for a slot, then hears "busy, send again"
_DECODES = threading.BoundedSemaphore(MAX_DECODES)


def _malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to trim this way
        return None


_TRIM = _malloc_trim()
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError,
                  TypeError, MemoryError, Image.DecompressionBombError)


class PhotoRejected(Exception):
    """The upload is not a photo we keep; `refusal` says why."""

    def __init__(self, refusal: PhotoRefusal) -> None:
        super().__init__(refusal.value)
        self.refusal = refusal


@dataclass(frozen=True)
class ProcessedPhoto:
    """A photo as it will be stored: our JPEG, its thumbnail, its size and digest."""

    jpeg: bytes
    thumb: bytes
    width: int
    height: int
    sha256: str  # of `jpeg`
    kind: ImageKind  # what was uploaded


def _guard_on() -> None:
    # Someone setting MAX_IMAGE_PIXELS = None for a huge scan elsewhere must not
    # switch the guard off for uploads from the internet.
    if Image.MAX_IMAGE_PIXELS is None:
        Image.MAX_IMAGE_PIXELS = PILLOW_DEFAULT_MAX_PIXELS


def process(data: bytes, *, max_pixels: int = MAX_PIXELS, thumb_side: int = THUMB_SIDE) -> ProcessedPhoto:
    """Check, decode, orient, re-encode; raises PhotoRejected."""
    refusal = check_size(len(data))
    if refusal is not None:
        raise PhotoRejected(refusal)
    kind = sniff(data[:32])
    if kind is None:
        raise PhotoRejected(PhotoRefusal.NOT_AN_IMAGE)
    if kind is ImageKind.HEIC and not HEIF_READER:  # pragma: no cover
        logger.warning("a HEIC photo was refused: pillow-heif is not installed")
        raise PhotoRejected(PhotoRefusal.UNREADABLE)
    _guard_on()
    if not _DECODES.acquire(timeout=DECODE_WAIT_S):
        logger.warning("an uploaded photo waited %.0f s for a decoding slot; refused as busy",
                       DECODE_WAIT_S)
        raise PhotoRejected(PhotoRefusal.BUSY)
    try:
        return _decode(data, kind, max_pixels, thumb_side)
    finally:
        _give_back()
        _DECODES.release()


def _give_back() -> None:
    """Return the freed pixel buffers to the system. glibc keeps what a thread
    freed in that thread's arena: over a console's 8 request threads the
    retained buffers add up to several decodes' worth (measured: six 40 MP
    uploads left ~1 GiB resident with two decodes at a time)."""
    if _TRIM is not None:
        _TRIM(0)


def _decode(data: bytes, kind: ImageKind, max_pixels: int, thumb_side: int) -> ProcessedPhoto:
    formats = FORMATS[kind]
    try:
        # First pass: the header's size, then verify() (PNG: every chunk's CRC).
        # verify() leaves the image unusable, so the pixels come from a second open.
        with Image.open(io.BytesIO(data), formats=formats) as probe:
            refusal = check_pixels(probe.width, probe.height, max_pixels)
            if refusal is not None:
                raise PhotoRejected(refusal)
            probe.verify()
        with Image.open(io.BytesIO(data), formats=formats) as image:
            image.seek(0)  # the first frame only (MPO, HEIF sequences)
            image.load()
            # In place: a copy of 40 MP is another 120 MB (a turned photo still
            # needs a second buffer for the moment of the turn).
            ImageOps.exif_transpose(image, in_place=True)
            rgb = _to_rgb(image)
    except PhotoRejected:
        raise
    except Image.DecompressionBombError:
        raise PhotoRejected(PhotoRefusal.TOO_MANY_PIXELS) from None
    except _DECODE_ERRORS as exc:
        logger.info("an uploaded %s could not be decoded (%s)", kind.value, type(exc).__name__)
        raise PhotoRejected(PhotoRefusal.UNREADABLE) from None
    width, height = rgb.width, rgb.height
    # libjpeg's optimised Huffman tables hold every DCT coefficient of the picture
    # (another ~115 MiB at 40 MP): above a phone's usual 12 MP the file is ~10%
    # larger instead.
    jpeg = _jpeg(rgb, JPEG_QUALITY, optimize=width * height <= OPTIMIZE_MAX_PIXELS)
    # The full-size pixels are not needed after this: shrink them in place
    # rather than copy 40 MP to make a 320 px thumbnail.
    rgb.thumbnail((thumb_side, thumb_side), Image.Resampling.LANCZOS)
    thumb = _jpeg(rgb, THUMB_QUALITY)
    return ProcessedPhoto(jpeg=jpeg, thumb=thumb, width=width, height=height,
                          sha256=hashlib.sha256(jpeg).hexdigest(), kind=kind)


def _to_rgb(image: Image.Image) -> Image.Image:
    """A plain RGB image of the pixels alone: transparency laid on white, no info carried.

    An RGB decode is used as it is (its pixels in a plain `Image` with empty
    info: the JPEG writer takes only what `save()` is given), not copied."""
    if image.mode == "RGB":
        bare = image._new(image.im)
        bare.info = {}
        return bare
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale PNG: scale to 8 bits rather than clip.
        image = image.point(lambda v: v / 256).convert("L")
    fresh = Image.new("RGB", image.size)
    fresh.paste(image.convert("RGB"))
    return fresh


def _jpeg(image: Image.Image, quality: int, optimize: bool = True) -> bytes:
    out = io.BytesIO()
    # No exif=, no icc_profile=: the file carries the pixels and nothing of the sender's.
    image.save(out, format="JPEG", quality=quality, optimize=optimize)
    return out.getvalue()
