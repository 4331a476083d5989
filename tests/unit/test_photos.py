"""EXIF reading (capture time, GPS, camera), the whole-image thumbnail, folder paths,
and the resume log of folder imports."""

from __future__ import annotations

import io
from fractions import Fraction

import pytest
from PIL import Image

from facepipe.importlog import FileState, ImportLog
from facepipe.photos import (
    IMAGE_THUMB_SIDE,
    PhotoInfo,
    clean_folder,
    exif_time_ms,
    folder_and_parents,
    gps_degrees,
    photo_info_and_thumbnail,
)


def jpeg(size: tuple[int, int], exif: Image.Exif | None = None) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (40, 90, 160)).save(out, "JPEG", exif=exif if exif is not None else b"")
    return out.getvalue()


def test_exif_times_with_and_without_offset() -> None:
    assert exif_time_ms("2021:06:01 12:30:45") == 1622550645000  # no offset: read as UTC
    assert exif_time_ms("2021:06:01 12:30:45", "+02:00") == 1622550645000 - 2 * 3600 * 1000
    assert exif_time_ms("2021:06:01 12:30:45", "-05:30") == 1622550645000 + 5.5 * 3600 * 1000
    assert exif_time_ms("2021:06:01 12:30:45", None, "25") == 1622550645250
    assert exif_time_ms(b"2021:06:01 12:30:45\x00") == 1622550645000
    for unknown in ("0000:00:00 00:00:00", "    :  :     :  :  ", "", None, "2021:13:40 99:00:00"):
        assert exif_time_ms(unknown) == 0
    assert exif_time_ms("2021:06:01 12:30:45", "Z7") == 1622550645000  # a bad offset is ignored


def test_gps_degrees_are_signed_decimal() -> None:
    assert gps_degrees((48.0, 51.0, 29.88), "N") == pytest.approx(48.8583)
    assert gps_degrees((Fraction(77), Fraction(2), Fraction(116, 10)), "W") == pytest.approx(
        -77.0366, abs=1e-4
    )
    assert gps_degrees((33.0, 52.0, 0.0), b"S") == pytest.approx(-33.8667, abs=1e-4)
    for bad in (None, "north", (), (1.0, 2.0, 3.0, 4.0), (float("nan"), 0.0, 0.0)):
        assert gps_degrees(bad, "N") is None


def test_a_camera_photo_gives_time_gps_camera_and_a_thumbnail() -> None:
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Canon\x00", "Canon EOS 5D"
    sub = exif.get_ifd(0x8769)
    sub[0x9003], sub[0x9011] = "2019:05:01 10:00:00", "+02:00"
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2], gps[3], gps[4] = "S", (33.0, 52.0, 4.0), "E", (151.0, 12.0, 36.0)
    info, thumb = photo_info_and_thumbnail(jpeg((1200, 800), exif))
    assert info.taken_at_ms == 1556697600000
    assert info.has_gps and info.latitude == pytest.approx(-33.8678, abs=1e-4)
    assert info.longitude == pytest.approx(151.21, abs=1e-4)
    assert (info.camera_make, info.camera_model) == ("Canon", "Canon EOS 5D")
    with Image.open(io.BytesIO(thumb)) as small:
        assert small.format == "JPEG" and small.size == (IMAGE_THUMB_SIDE, 200)


def test_a_photo_without_exif_has_no_metadata_but_a_thumbnail() -> None:
    info, thumb = photo_info_and_thumbnail(jpeg((120, 90)))
    assert info == PhotoInfo()
    with Image.open(io.BytesIO(thumb)) as small:
        assert small.size == (120, 90)  # never enlarged
    png = io.BytesIO()
    Image.new("LA", (640, 640)).save(png, "PNG")
    assert photo_info_and_thumbnail(png.getvalue())[0] == PhotoInfo()


def test_the_thumbnail_is_upright() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: the upright photo is portrait
    _, thumb = photo_info_and_thumbnail(jpeg((600, 400), exif))
    with Image.open(io.BytesIO(thumb)) as small:
        assert small.size == (200, 300)


def test_folders_are_cleaned_and_found_from_any_parent() -> None:
    assert clean_folder("/home/me/Pictures/") == "/home/me/Pictures"
    assert clean_folder("C:\\Users\\me\\Pictures") == "C:/Users/me/Pictures"
    assert clean_folder("/") == "/" and clean_folder("") == ""
    for bad in ("x" * 2000, "/tmp/a\nb"):
        with pytest.raises(ValueError):
            clean_folder(bad)
    assert folder_and_parents("/home/me/Pictures") == ["/home/me/Pictures", "/home/me", "/home", "/"]
    assert folder_and_parents("") == []


def test_the_resume_log_keeps_outcomes_per_tenant(tmp_path) -> None:
    log = ImportLog.in_data_dir(tmp_path / "data")
    state = FileState(size=10, mtime_ns=5)
    log.published("a", "/p/1.jpg", state, "batch1", "m1")
    log.done("a", "/p/2.jpg", state, "indexed", "ab" * 32)
    log.done("b", "/p/1.jpg", FileState(11, 6), "no_face")
    assert log.handled("a") == {"/p/2.jpg": state}
    assert [(p.path, p.batch_id, p.message_id) for p in log.pending("a")] == [("/p/1.jpg", "batch1", "m1")]
    log.done("a", "/p/1.jpg", state, "duplicate")
    assert log.counts("a") == {"indexed": 1, "duplicate": 1}
    log.close()
    reopened = ImportLog.in_data_dir(tmp_path / "data")  # it survives the process
    assert reopened.handled("b") == {"/p/1.jpg": FileState(11, 6)}
    reopened.close()


def test_listing_a_folder_matches_the_walk_and_resolves_each_file_once(tmp_path) -> None:
    from facepipe.client import expand_sources, list_sources

    root = tmp_path / "lib"
    (root / "b" / "deep").mkdir(parents=True)
    for rel in ("a.JPG", "b/c.png", "b/deep/d.webp", "b.jpg", "notes.txt"):
        (root / rel).write_bytes(b"x" * len(rel))
    (root / "link.jpg").symlink_to(root / "a.JPG")
    (root / "looped").symlink_to(root / "b")  # a symlinked folder is not walked, as rglob does not
    sources = [str(root) + "/", "https://example.org/a.jpg", str(tmp_path / "missing.jpg")]
    listed = list_sources(sources)
    assert [src for src, _ in listed] == expand_sources(sources)
    by_source = dict(listed)
    assert by_source[str(root / "link.jpg")] == by_source[str(root / "a.JPG")]
    resolved, state = by_source[str(root / "b" / "deep" / "d.webp")]
    assert resolved == str((root / "b" / "deep" / "d.webp").resolve()) and state.size == len("b/deep/d.webp")
    assert by_source["https://example.org/a.jpg"] is None and by_source[str(tmp_path / "missing.jpg")] is None
