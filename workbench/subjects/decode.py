"""Decode untrusted photo bytes into a clean, normalised RGB image (PRIVACY.md, "Inputs").

:func:`load_photo` accepts only JPEG, PNG and WEBP, identified by content (never by file name),
refuses decompression bombs and truncated files, and normalises what it accepts: EXIF orientation
applied, alpha composited on white, 16-bit samples rescaled to 8 bits, CMYK and ICC colour profiles
converted to sRGB. The result carries no metadata; :func:`encode_png` re-encodes it without any
(no EXIF, GPS, text chunks or trailing bytes). Every failure is a :class:`PhotoRejected` whose reason
tells the user what to do.
"""

from __future__ import annotations

import re
import warnings
from io import BytesIO

import numpy as np
from PIL import Image, ImageCms, ImageFile, ImageOps, UnidentifiedImageError

from workbench.errors import UserError

#: Formats we decode. Everything else is refused by content.
FORMATS = ("JPEG", "PNG", "WEBP")
#: Largest image accepted, in pixels (a 40 MP photo is far more than any headshot needs).
MAX_PIXELS = 40_000_000
#: zlib level of stored PNGs: fast; fixed, since stored files are named by the hash of these bytes.
PNG_LEVEL = 1
#: Largest file accepted, in bytes.
MAX_BYTES = 50 * 1024 * 1024

# Pillow warns above MAX_IMAGE_PIXELS and refuses above twice that; lower its limit process-wide.
if Image.MAX_IMAGE_PIXELS is None or Image.MAX_IMAGE_PIXELS > MAX_PIXELS:
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS

# Magic numbers of common formats we refuse, only to name them in the message (never decoded).
_SIGNATURES = (
    (b"GIF8", "GIF"), (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"%PDF", "PDF"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"), (b"8BPS", "Photoshop"), (b"<svg", "SVG"), (b"<?xml", "XML/SVG"),
)


class PhotoRejected(UserError):
    """A photo was refused; ``reason`` says why and what to do instead."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _sniff(data: bytes) -> str:
    head = data[:32]
    if head[4:8] == b"ftyp":
        brand = head[8:12].decode("ascii", "replace")
        return "HEIC/HEIF" if brand.startswith(("hei", "mif", "hev")) else f"ISO media ({brand})"
    for magic, name in _SIGNATURES:
        if head.startswith(magic):
            return name
    return "text or an unknown format" if head.isascii() else "an unknown format"


def _open(data: bytes) -> Image.Image:
    if not data:
        raise PhotoRejected("the file is empty: upload the photo again")
    if len(data) > MAX_BYTES:
        raise PhotoRejected(f"the file is {len(data) / 2**20:.0f} MB; the limit is {MAX_BYTES // 2**20} MB: "
                            "export a smaller JPEG or PNG")
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # someone enabled it globally: truncated files must stay errors
        raise UserError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set in this process; photo intake refuses "
                        "to run with it (truncated photos must stay errors)")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(BytesIO(data), formats=list(FORMATS))
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise Image.DecompressionBombError(f"{w}x{h}, {w * h} pixels")
            img.load()
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            found = re.search(r"(\d+) pixels", str(exc))
            size = f"{int(found.group(1)) / 1e6:.0f} megapixels" if found else str(exc)
            raise PhotoRejected(
                f"the image is too large ({size}; the limit is {MAX_PIXELS // 1_000_000} megapixels): "
                "resize it (e.g. to 2000 px on the long side) and upload again") from None
        except UnidentifiedImageError:
            raise PhotoRejected(f"not a JPEG, PNG or WEBP image (the content looks like {_sniff(data)}): "
                                "convert it to JPEG or PNG") from None
        except PhotoRejected:
            raise
        except Exception as exc:  # noqa: BLE001 - decoders of hostile files fail in many ways
            if "truncated" in str(exc).lower():
                raise PhotoRejected("the image file is truncated (incomplete download or copy): "
                                    "upload the complete file again") from None
            raise PhotoRejected(f"the image could not be decoded ({exc}): "
                                "re-export it as JPEG or PNG") from None
    if img.width < 1 or img.height < 1:
        raise PhotoRejected("the image has no pixels")
    return img


def _to_8bit(img: Image.Image) -> Image.Image:
    """Rescale 16/32-bit and float greyscale to 8 bits (full range mapped, never clipped)."""
    arr = np.asarray(img)
    if img.mode == "F":
        top = 1.0 if arr.max(initial=0) <= 1.0 else 65535.0
    else:  # "I;16*", or "I": among JPEG/PNG/WEBP only 16-bit PNGs decode to these modes
        top = 65535.0
    arr8 = np.clip(arr.astype(np.float64), 0, top) * (255.0 / top)
    return Image.fromarray(np.round(arr8).astype(np.uint8), "L")


def _srgb(img: Image.Image, icc: bytes | None) -> Image.Image:
    """Convert to RGB, through the embedded ICC profile when there is one."""
    if icc and img.mode in ("RGB", "L", "CMYK"):
        try:
            src = ImageCms.ImageCmsProfile(BytesIO(icc))
            return ImageCms.profileToProfile(img, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            pass  # a broken profile is not worth a rejection: fall back to the plain conversion
    return img.convert("RGB")


def normalise(img: Image.Image) -> Image.Image:
    """Orientation, bit depth, alpha, colour space: a plain 8-bit sRGB image with no metadata."""
    icc = img.info.get("icc_profile")
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        img = _to_8bit(img)
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif img.mode in ("1", "PA"):
        img = img.convert("RGBA" if img.mode == "PA" else "L")
    if img.mode in ("RGBA", "LA", "La", "RGBa") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba).convert("RGB")
    if img.mode not in ("RGB", "L", "CMYK"):
        img = img.convert("RGB")
    img = _srgb(img, icc)
    # A fresh image: no info dict, no EXIF, no ICC, nothing from the file survives but pixels.
    return Image.fromarray(np.array(img, dtype=np.uint8), "RGB")


def load_photo(data: bytes) -> Image.Image:
    """Decode untrusted bytes into a normalised RGB image, or raise :class:`PhotoRejected`."""
    img = _open(data)
    try:
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)  # animated WEBP/APNG or multi-picture JPEG: the first frame only
        return normalise(img)
    except PhotoRejected:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. malformed EXIF or a broken later frame
        raise PhotoRejected(f"the image could not be decoded ({exc}): re-export it as JPEG or PNG") from None
    finally:
        img.close()


def encode_png(img: Image.Image) -> bytes:
    """PNG bytes of ``img``'s pixels only: no EXIF, text, ICC or any other ancillary chunk."""
    clean = Image.fromarray(np.asarray(img.convert("RGB"), dtype=np.uint8), "RGB")
    buf = BytesIO()
    clean.save(buf, format="PNG", optimize=False, compress_level=PNG_LEVEL)
    return buf.getvalue()
