"""What a photo says about itself: EXIF capture time, GPS position and camera, read
with Pillow; and the small JPEG thumbnail of the whole image that a photo library shows.

Everything here is tolerant: a photo without EXIF, or with broken EXIF, has no
metadata, never an error."""

from __future__ import annotations

import io
import math
import re
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import PurePosixPath

from PIL import Image, ImageOps

# Longer side of the whole-image thumbnail.
IMAGE_THUMB_SIDE = 300
IMAGE_THUMB_QUALITY = 85
MAX_FOLDER_CHARS = 1024
MAX_CAMERA_CHARS = 64

# EXIF tags (IFD0, the Exif sub-IFD and the GPS sub-IFD).
TAG_MAKE = 0x010F
TAG_MODEL = 0x0110
IFD_EXIF = 0x8769
IFD_GPS = 0x8825
TAG_DATETIME_ORIGINAL = 0x9003
TAG_DATETIME_DIGITIZED = 0x9004
TAG_OFFSET_TIME_ORIGINAL = 0x9011
TAG_OFFSET_TIME_DIGITIZED = 0x9012
TAG_SUBSEC_ORIGINAL = 0x9291
GPS_LAT_REF, GPS_LAT, GPS_LON_REF, GPS_LON = 1, 2, 3, 4

_EXIF_TIME_RE = re.compile(r"^(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_OFFSET_RE = re.compile(r"^([+-])(\d{2}):(\d{2})$")


@dataclass(frozen=True)
class PhotoInfo:
    """The EXIF facts of one photo; zero/empty where the photo does not say."""

    taken_at_ms: int = 0
    has_gps: bool = False
    latitude: float = 0.0
    longitude: float = 0.0
    camera_make: str = ""
    camera_model: str = ""


def exif_time_ms(value: object, offset: object = None, subsec: object = None) -> int:
    """An EXIF ``YYYY:MM:DD HH:MM:SS`` time as Unix milliseconds: at ``offset``
    (``+HH:MM``) when given, else read as UTC; 0 when it is missing or malformed
    (cameras write ``0000:00:00 00:00:00`` when they do not know)."""
    match = _EXIF_TIME_RE.match(_text(value))
    if not match:
        return 0
    try:
        moment = datetime(*(int(part) for part in match.groups()), tzinfo=UTC)
    except ValueError:
        return 0
    zone = _OFFSET_RE.match(_text(offset))
    if zone:
        sign = -1 if zone.group(1) == "-" else 1
        shift = timedelta(hours=int(zone.group(2)), minutes=int(zone.group(3)))
        moment = moment.replace(tzinfo=timezone(sign * shift))
    millis = 0
    digits = "".join(ch for ch in _text(subsec) if ch.isdigit())[:3]
    if digits:
        millis = int(digits.ljust(3, "0"))
    return int(moment.timestamp() * 1000) + millis


def gps_degrees(value: object, ref: object) -> float | None:
    """Degrees, minutes, seconds (EXIF rationals) and a N/S/E/W reference as signed
    decimal degrees; None when malformed."""
    try:
        parts = [float(v) for v in value]  # type: ignore[union-attr]
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if not parts or len(parts) > 3 or not all(math.isfinite(p) for p in parts):
        return None
    parts += [0.0] * (3 - len(parts))
    degrees = parts[0] + parts[1] / 60.0 + parts[2] / 3600.0
    if _text(ref).upper() in ("S", "W"):
        degrees = -degrees
    return degrees


def read_photo_info(img: Image.Image) -> PhotoInfo:
    """The capture time (DateTimeOriginal, with OffsetTimeOriginal when present; else
    DateTimeDigitized), GPS position and camera of an opened image."""
    try:
        exif = img.getexif()
        exif_ifd = exif.get_ifd(IFD_EXIF)
        gps_ifd = exif.get_ifd(IFD_GPS)
    except Exception:  # noqa: BLE001 - broken EXIF is no EXIF
        return PhotoInfo()
    taken = exif_time_ms(
        exif_ifd.get(TAG_DATETIME_ORIGINAL),
        exif_ifd.get(TAG_OFFSET_TIME_ORIGINAL),
        exif_ifd.get(TAG_SUBSEC_ORIGINAL),
    ) or exif_time_ms(exif_ifd.get(TAG_DATETIME_DIGITIZED), exif_ifd.get(TAG_OFFSET_TIME_DIGITIZED))
    lat = gps_degrees(gps_ifd.get(GPS_LAT), gps_ifd.get(GPS_LAT_REF)) if GPS_LAT in gps_ifd else None
    lon = gps_degrees(gps_ifd.get(GPS_LON), gps_ifd.get(GPS_LON_REF)) if GPS_LON in gps_ifd else None
    has_gps = lat is not None and lon is not None and -90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0
    return PhotoInfo(
        taken_at_ms=taken,
        has_gps=has_gps,
        latitude=round(lat, 7) if has_gps and lat is not None else 0.0,
        longitude=round(lon, 7) if has_gps and lon is not None else 0.0,
        camera_make=_text(exif.get(TAG_MAKE))[:MAX_CAMERA_CHARS],
        camera_model=_text(exif.get(TAG_MODEL))[:MAX_CAMERA_CHARS],
    )


def photo_info_and_thumbnail(data: bytes) -> tuple[PhotoInfo, bytes]:
    """EXIF facts and a JPEG thumbnail (longer side IMAGE_THUMB_SIDE, upright) of encoded
    image bytes that were validated already. JPEGs decode at a reduced DCT scale."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Image.open(io.BytesIO(data)) as img:
            info = read_photo_info(img)
            img.seek(0)
            if img.format == "JPEG":
                img.draft("RGB", (IMAGE_THUMB_SIDE, IMAGE_THUMB_SIDE))
            img.load()
            upright = ImageOps.exif_transpose(img)
            small = upright.convert("RGB") if upright.mode != "RGB" else upright.copy()
    small.thumbnail((IMAGE_THUMB_SIDE, IMAGE_THUMB_SIDE), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    small.save(out, "JPEG", quality=IMAGE_THUMB_QUALITY)
    return info, out.getvalue()


def image_thumb_key(tenant: str, sha256: str) -> str:
    """Where the whole-image thumbnail lives in the face-thumbs bucket."""
    return f"{tenant}/images/{sha256}.jpg"


def clean_folder(folder: str) -> str:
    """A folder path as stored and filtered on: '/'-separated, no trailing slash.
    Raises ValueError for one that is too long or not printable."""
    if len(folder) > MAX_FOLDER_CHARS or not folder.isprintable():
        raise ValueError(f"folder must be at most {MAX_FOLDER_CHARS} printable characters")
    folder = folder.replace("\\", "/")
    return folder.rstrip("/") or ("/" if folder.startswith("/") else "")


def folder_and_parents(folder: str) -> list[str]:
    """The folder and every folder above it: a filter on any of them finds the photo."""
    if not folder:
        return []
    path = PurePosixPath(folder)
    return [str(path), *(str(p) for p in path.parents if str(p) not in (".", ""))]


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value).replace("\x00", "").strip()
