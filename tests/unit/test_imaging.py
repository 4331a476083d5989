"""Bad input and every common image format, through the real face engine and
the real detector service."""

from __future__ import annotations

import io
import random
import resource
import struct
import time
import zlib
from functools import cache

import cv2
import grpc
import numpy as np
import pytest
from conftest import SHARED_FACES
from PIL import Image

from facepipe.faces import FaceEngine
from facepipe.imaging import ImageError, decode_image
from facepipe.v1 import common_pb2, detector_pb2, detector_pb2_grpc

FACE = SHARED_FACES / "barack_obama" / "obama.jpg"
FACE_PNG = SHARED_FACES / "alex_lacamoire" / "alex-lacamoire.png"


# -- helpers -------------------------------------------------------------------
def encode(img: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **options)
    return buf.getvalue()


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


@cache
def striped_png(width: int, height: int) -> bytes:
    """A valid 1-bit greyscale PNG of black and white horizontal stripes, 8 rows
    each, compressed row by row so even a huge one costs little memory."""
    assert width % 8 == 0
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    rows = [b"\x00" + bytes([0x00]) * (width // 8), b"\x00" + bytes([0xFF]) * (width // 8)]
    block = 1024  # rows per compress() call
    z = zlib.compressobj(9)
    idat = []
    for start in range(0, height, block):
        n = min(block, height - start)
        idat.append(z.compress(b"".join(rows[((start + i) // 8) % 2] for i in range(n))))
    idat.append(z.flush())
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"".join(idat)) + _chunk(b"IEND", b"")
    )


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def assert_upright(face) -> None:
    lmk = face.landmarks
    left_eye, right_eye, mouth_left, mouth_right = lmk[0], lmk[1], lmk[3], lmk[4]
    assert left_eye[0] < right_eye[0], f"eyes swapped: {lmk.tolist()}"
    assert max(left_eye[1], right_eye[1]) < min(mouth_left[1], mouth_right[1]), f"not upright: {lmk.tolist()}"


@pytest.fixture
async def engine(settings):
    engine = FaceEngine.load(settings, "test", embedder=False)
    yield engine
    await engine.close()


async def detect(engine: FaceEngine, data: bytes):
    det = engine.detector
    image = det.decode(data)
    return image, await det.detect(image, det.params())


@pytest.fixture(scope="module")
def upright() -> Image.Image:
    img = Image.open(FACE)
    img.load()
    return img


# -- bad input -----------------------------------------------------------------
async def test_empty_random_and_truncated_bytes(engine) -> None:
    with pytest.raises(ImageError, match="empty") as err:
        engine.detector.decode(b"")
    assert err.value.code == "EMPTY"

    with pytest.raises(ImageError, match="not a recognised image format") as err:
        engine.detector.decode(random.Random(7).randbytes(4096))
    assert err.value.code == "UNDECODABLE"

    data = FACE.read_bytes()
    with pytest.raises(ImageError, match="truncated") as err:
        engine.detector.decode(data[: len(data) // 2])
    assert err.value.code == "UNDECODABLE"

    # A valid header over garbage pixels fails the same way.
    png = FACE_PNG.read_bytes()
    with pytest.raises(ImageError) as err:
        engine.detector.decode(png[:200] + random.Random(8).randbytes(len(png) - 200))
    assert err.value.code == "UNDECODABLE"

    # The engine still works after all of that.
    _, faces = await detect(engine, data)
    assert len(faces) == 1


def test_striped_png_builder_is_valid() -> None:
    image = decode_image(striped_png(64, 40))
    assert (image.height, image.width) == (40, 64)
    column = image.bgr[:, 0, 0]
    assert column.tolist() == ([0] * 8 + [255] * 8) * 2 + [0] * 8


async def test_pixel_bomb_is_refused_before_decoding(engine) -> None:
    data = striped_png(30000, 30000)
    assert len(data) < 1_000_000  # 900 Mpx in well under a megabyte
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    with pytest.raises(ImageError, match="30000x30000") as err:
        engine.detector.decode(data)
    after = resource.getrusage(resource.RUSAGE_SELF)
    assert err.value.code == "TOO_LARGE"
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    grown_mb = (after.ru_maxrss - before.ru_maxrss) / 1024  # KiB on Linux
    assert cpu < 1.0, f"refusing took {cpu:.2f}s of CPU"
    assert grown_mb < 200, f"peak memory grew {grown_mb:.0f} MB"
    assert time.monotonic() - started < 10


def test_byte_limit() -> None:
    data = FACE.read_bytes()
    with pytest.raises(ImageError, match="byte limit") as err:
        decode_image(data, max_bytes=len(data) - 1)
    assert err.value.code == "TOO_LARGE"
    assert decode_image(data, max_bytes=len(data)).width == 910


# -- EXIF orientation ------------------------------------------------------------
# Orientation tag -> how to store upright pixels so that the tag turns them upright again.
STORED = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


@pytest.mark.parametrize("orientation", sorted(STORED))
async def test_exif_orientation_is_applied(engine, upright, orientation) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored = upright.transpose(STORED[orientation])
    data = encode(stored, "JPEG", exif=exif, quality=95)
    if orientation in (5, 6, 7, 8):
        assert stored.size == (upright.height, upright.width)

    original, want = await detect(engine, FACE.read_bytes())
    image, faces = await detect(engine, data)

    assert (image.width, image.height) == upright.size
    assert float(np.abs(image.bgr.astype(int) - original.bgr.astype(int)).mean()) < 3
    assert len(faces) == len(want) == 1
    assert np.abs(faces[0].box - want[0].box).max() < 4, (faces[0].box, want[0].box)
    assert_upright(faces[0])


@pytest.mark.parametrize("container", ["cmyk-jpeg", "png", "webp", "tiff"])
async def test_exif_orientation_in_other_containers(engine, upright, container) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = upright.transpose(STORED[6])
    if container == "cmyk-jpeg":
        data = encode(stored.convert("CMYK"), "JPEG", exif=exif, quality=95)
    else:
        options = {"lossless": True} if container == "webp" else {}
        data = encode(stored, container.upper(), exif=exif, **options)

    original, want = await detect(engine, FACE.read_bytes())
    image, faces = await detect(engine, data)
    assert (image.width, image.height) == upright.size
    assert float(np.abs(image.bgr.astype(int) - original.bgr.astype(int)).mean()) < 5
    assert len(faces) == 1
    assert np.abs(faces[0].box - want[0].box).max() < 4, (faces[0].box, want[0].box)
    assert_upright(faces[0])


@pytest.mark.parametrize("orientation", [0, 1, 9, 65535])
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_meaningless_orientation_is_ignored(upright, orientation, fmt) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    image = decode_image(encode(upright, fmt, exif=exif))
    assert (image.width, image.height) == upright.size


# -- modes and formats -----------------------------------------------------------
def _rgba(img: Image.Image) -> bytes:
    rgba = img.convert("RGBA")
    alpha = np.full((img.height, img.width), 255, np.uint8)
    alpha[:, :120] = 0  # a transparent band on the left, away from the face
    rgba.putalpha(Image.fromarray(alpha))
    return encode(rgba, "PNG")


def _grey16(img: Image.Image) -> bytes:
    grey = np.asarray(img.convert("L")).astype(np.uint16) * 257
    return encode(Image.fromarray(grey), "PNG")


def _rgb16(img: Image.Image) -> bytes:
    bgr = np.asarray(img)[:, :, ::-1].astype(np.uint16) * 257
    return cv2.imencode(".png", bgr)[1].tobytes()


def _gif(img: Image.Image) -> bytes:
    blank = Image.new("RGB", img.size, (20, 20, 20))
    return encode(img, "GIF", save_all=True, append_images=[blank], duration=100, loop=0)


FORMATS = {
    # name: (encoder, source mode as opened, colour kept)
    "grey-jpeg": (lambda img: encode(img.convert("L"), "JPEG", quality=95), "L", False),
    "cmyk-jpeg": (lambda img: encode(img.convert("CMYK"), "JPEG", quality=95), "CMYK", True),
    "rgba-png": (_rgba, "RGBA", True),
    "palette-png": (lambda img: encode(img.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"), "P", True),
    "grey16-png": (_grey16, "I;16", False),
    "rgb16-png": (_rgb16, "RGB", True),
    "webp": (lambda img: encode(img, "WEBP", quality=90), "RGB", True),
    "animated-gif": (_gif, "P", True),
}


@pytest.mark.parametrize("name", sorted(FORMATS))
async def test_modes_and_formats(engine, upright, name) -> None:
    make, mode, colour = FORMATS[name]
    data = make(upright)
    opened = Image.open(io.BytesIO(data))
    assert opened.mode == mode
    if name == "animated-gif":
        assert opened.n_frames == 2

    original, want = await detect(engine, FACE.read_bytes())
    image, faces = await detect(engine, data)

    assert image.bgr.shape == (upright.height, upright.width, 3)
    assert image.bgr.dtype == np.uint8
    assert image.bgr.flags["C_CONTIGUOUS"]
    reference = original.bgr if colour else np.repeat(np.asarray(upright.convert("L"))[:, :, None], 3, 2)
    region = np.s_[:, 120:] if name == "rgba-png" else np.s_[:, :]
    diff = np.abs(image.bgr[region].astype(int) - reference[region].astype(int)).mean()
    assert diff < 8, f"{name}: mean pixel difference {diff:.1f} from the original"
    if name == "rgba-png":
        assert (image.bgr[:, :120] == 255).all()  # transparency flattened onto white
    assert len(faces) == 1
    assert iou(faces[0].box, want[0].box) > 0.9
    assert_upright(faces[0])


# -- a mixed batch over gRPC --------------------------------------------------------
def test_detect_batch_mixes_good_and_bad_images(start_service) -> None:
    detector = start_service("detector")
    face = FACE.read_bytes()
    images = [
        common_pb2.ImageInput(id="good-jpeg", data=face),
        common_pb2.ImageInput(id="empty", data=b""),
        common_pb2.ImageInput(id="random", data=random.Random(1).randbytes(2048)),
        common_pb2.ImageInput(id="truncated", data=face[: len(face) // 2]),
        common_pb2.ImageInput(id="bomb", data=striped_png(30000, 30000)),
        common_pb2.ImageInput(id="good-png", data=FACE_PNG.read_bytes()),
        common_pb2.ImageInput(id="no-source"),
        common_pb2.ImageInput(id="ref", ref=common_pb2.ObjectRef(bucket="images", key="missing.jpg")),
        common_pb2.ImageInput(data=encode(Image.open(FACE), "WEBP", quality=90)),
    ]
    want = {
        "empty": common_pb2.ERROR_CODE_EMPTY,
        "random": common_pb2.ERROR_CODE_UNDECODABLE,
        "truncated": common_pb2.ERROR_CODE_UNDECODABLE,
        "bomb": common_pb2.ERROR_CODE_TOO_LARGE,
        "no-source": common_pb2.ERROR_CODE_EMPTY,
        "ref": common_pb2.ERROR_CODE_NOT_FOUND,  # this detector has no object store
    }
    with grpc.insecure_channel(detector.addr) as channel:
        stub = detector_pb2_grpc.DetectorStub(channel)
        response = stub.DetectBatch(detector_pb2.DetectBatchRequest(images=images), timeout=60)

    assert [r.id for r in response.results] == [i.id or str(n) for n, i in enumerate(images)]
    assert response.model == detector.pack.detector.name
    for result in response.results:
        if result.id in want:
            assert result.HasField("error"), result.id
            assert result.error.code == want[result.id], (result.id, result.error)
            assert result.error.message
            assert not result.faces
        else:
            assert not result.HasField("error"), (result.id, result.error)
            assert len(result.faces) == 1, result.id
            assert result.faces[0].quality.accepted
    by_id = {r.id: r for r in response.results}
    assert (by_id["good-jpeg"].width, by_id["good-jpeg"].height) == (910, 1137)
    assert "30000x30000" in by_id["bomb"].error.message
    assert "truncated" in by_id["truncated"].error.message
    a, b = by_id["good-jpeg"].faces[0].box, by_id["8"].faces[0].box
    assert iou((a.x1, a.y1, a.x2, a.y2), (b.x1, b.y1, b.x2, b.y2)) > 0.9
