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
            img.load()
            if img.getexif().get(ORIENTATION_TAG, 1) != 1:
                img = ImageOps.exif_transpose(img)
            rgb = _to_rgb(img)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise UndecodableImage("not a recognised image format") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise UndecodableImage(f"corrupt or truncated image: {exc}") from None
    return DecodedImage(bgr=cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), format=fmt)


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


def encode_jpeg(bgr: np.ndarray, quality: int = 90) -> bytes:
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()
