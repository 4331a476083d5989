"""Image decoding for untrusted bytes: EXIF orientation, every common mode and
format, and a pixel-count guard that runs before any pixel is decoded."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Our own guard replaces Pillow's, which would warn at a fixed limit instead.
Image.MAX_IMAGE_PIXELS = None

try:  # AVIF/HEIF and friends register themselves when installed.
    import pillow_heif  # type: ignore[import-not-found]

    pillow_heif.register_heif_opener()
except ImportError:  # pragma: no cover - optional
    pass


class ImageError(ValueError):
    """A per-image failure with a stable code (see ErrorCode in common.proto)."""

    code = "UNDECODABLE"


class EmptyImage(ImageError):
    code = "EMPTY"


class UndecodableImage(ImageError):
    code = "UNDECODABLE"


class ImageTooLarge(ImageError):
    code = "TOO_LARGE"


@dataclass(frozen=True)
class DecodedImage:
    bgr: np.ndarray  # HxWx3 uint8, upright (EXIF applied)
    format: str  # JPEG, PNG, WEBP, GIF, ...

    @property
    def width(self) -> int:
        return int(self.bgr.shape[1])

    @property
    def height(self) -> int:
        return int(self.bgr.shape[0])


ORIENTATION_TAG = 0x0112
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif"}


def decode_image(data: bytes, max_pixels: int = 50_000_000, max_bytes: int | None = None) -> DecodedImage:
    """Decodes encoded image bytes to an upright BGR array or raises an ImageError."""
    img, fmt, _ = _decode(data, max_pixels, max_bytes)
    return DecodedImage(bgr=cv2.cvtColor(_to_rgb(img), cv2.COLOR_RGB2BGR), format=fmt)


@dataclass(frozen=True)
class ImageProbe:
    format: str
    width: int  # upright, after EXIF orientation
    height: int
    preview: Image.Image  # upright greyscale, longest side about ``preview_side`` or more


def probe_image(
    data: bytes, max_pixels: int = 50_000_000, max_bytes: int | None = None, preview_side: int = 256
) -> ImageProbe:
    """Validates by decoding, and returns the size and a small grey preview (for hashing).
    JPEGs decode at a reduced DCT scale, which reads every block at a fraction of the cost."""
    img, fmt, (width, height) = _decode(data, max_pixels, max_bytes, draft=(preview_side, preview_side))
    preview = img.convert("L")
    scale = preview_side / max(preview.size)
    if scale < 1:
        size = (max(1, round(preview.width * scale)), max(1, round(preview.height * scale)))
        preview = preview.resize(size, Image.Resampling.BILINEAR)
    return ImageProbe(format=fmt, width=width, height=height, preview=preview)


def _decode(
    data: bytes, max_pixels: int, max_bytes: int | None, draft: tuple[int, int] | None = None
) -> tuple[Image.Image, str, tuple[int, int]]:
    """The decoded first frame, upright; its format; and its full upright (width, height),
    which a ``draft`` decode of a JPEG reduces in the image itself."""
    if not data:
        raise EmptyImage("image is empty (0 bytes)")
    if max_bytes is not None and len(data) > max_bytes:
        raise ImageTooLarge(f"image is {len(data)} bytes, over the {max_bytes}-byte limit")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data))
            fmt = img.format or "UNKNOWN"
            w, h = img.size
            # Header only so far: refuse bombs before decoding any pixels.
            if w <= 0 or h <= 0:
                raise UndecodableImage(f"invalid image size {w}x{h}")
            if w * h > max_pixels:
                raise ImageTooLarge(f"image is {w}x{h} = {w * h} pixels, over the {max_pixels}-pixel limit")
            img.seek(0)  # first frame of animations
            if draft is not None and fmt == "JPEG":
                img.draft(img.mode, draft)
            img.load()
            orientation = img.getexif().get(ORIENTATION_TAG, 1)
            if orientation != 1:
                img = ImageOps.exif_transpose(img)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise UndecodableImage("not a recognised image format") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise UndecodableImage(f"corrupt or truncated image: {exc}") from None
    return img, fmt, ((h, w) if orientation in (5, 6, 7, 8) else (w, h))


def _to_rgb(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float32)
        top = float(arr.max()) or 1.0
        grey = np.clip(arr * (255.0 / max(top, 255.0)), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        # Flatten transparency onto white, the way a browser shows it on a page.
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    if img.mode != "RGB":
        img = img.convert("RGB")  # L, P, CMYK, YCbCr, 1, F ...
    return np.asarray(img, dtype=np.uint8)


THUMB_SIDE = 160
THUMB_MARGIN = 0.2


def thumbnail(bgr: np.ndarray, box) -> np.ndarray:
    """The face box with a margin, longest side THUMB_SIDE px."""
    h, w = bgr.shape[:2]
    mx, my = (box.x2 - box.x1) * THUMB_MARGIN, (box.y2 - box.y1) * THUMB_MARGIN
    x1, y1 = max(0, int(box.x1 - mx)), max(0, int(box.y1 - my))
    x2, y2 = min(w, int(box.x2 + mx) + 1), min(h, int(box.y2 + my) + 1)
    crop = bgr[y1:y2, x1:x2] if x2 > x1 and y2 > y1 else bgr
    scale = THUMB_SIDE / max(crop.shape[:2])
    if scale < 1:
        crop = cv2.resize(
            crop,
            (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))),
            interpolation=cv2.INTER_AREA,
        )
    return crop


def encode_jpeg(bgr: np.ndarray, quality: int = 90) -> bytes:
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()
