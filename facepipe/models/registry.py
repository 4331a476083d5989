"""Model packs: where detector and recognizer files come from, and which is which.

A pack is a directory ``$FACEPIPE_HOME/models/<name>/`` of ONNX files plus a
``pack.json`` manifest written on install. ``facepipe models pull`` downloads,
verifies and unpacks a zip; ``facepipe models install`` copies a local folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import httpx

log = logging.getLogger("facepipe.models")

MANIFEST = "pack.json"
# Calibrated thresholds per recognizer file, keyed by its sha256 (python -m facepipe.calibrate --write).
THRESHOLDS_FILE = Path(__file__).with_name("thresholds.json")


@dataclass(frozen=True)
class PackSpec:
    name: str
    url: str | None = None
    sha256: str | None = None
    license: str = ""
    description: str = ""


PACKS: dict[str, PackSpec] = {
    "buffalo_l": PackSpec(
        name="buffalo_l",
        url="https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip",
        sha256="80ffe37d8a5940d59a7384c201a2a38d4741f2f3c51eef46ebb28218a7b0ca2f",
        license="InsightFace pretrained models: non-commercial research use only",
        description="SCRFD-10GF detector (det_10g) and ResNet50 ArcFace recognizer, 512-d (w600k_r50)",
    ),
    "local": PackSpec(
        name="local",
        license="research use only (see SOURCES.md in the pack)",
        description="a local directory of SCRFD + ArcFace-style ONNX files",
    ),
}


class PackError(RuntimeError):
    pass


@dataclass(frozen=True)
class PackFiles:
    directory: Path
    detector: Path
    recognizer: Path


def models_root(home: Path) -> Path:
    return home / "models"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def classify(path: Path) -> str | None:
    """'detector', 'recognizer' or None, from the graph's inputs and outputs."""
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - not a loadable model
        return None
    inputs, outputs = sess.get_inputs(), sess.get_outputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        return None
    if len(outputs) in (6, 9, 10, 15):
        return "detector"
    h, w = inputs[0].shape[2:4]
    if len(outputs) == 1 and isinstance(h, int) and h == w and h in (112, 128):
        return "recognizer"
    return None


def square_input_size(path: Path) -> int | None:
    """The fixed square input side of a model (e.g. 112 for ArcFace), or None."""
    import onnxruntime as ort

    shape = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()[0].shape
    h, w = shape[2:4] if len(shape) == 4 else (None, None)
    return h if isinstance(h, int) and h == w and h > 0 else None


def _write_manifest(directory: Path, name: str, source: str) -> dict:
    files = sorted(p for p in directory.glob("*.onnx"))
    roles = {p.name: classify(p) for p in files}
    detectors = [n for n, r in roles.items() if r == "detector"]
    recognizers = [n for n, r in roles.items() if r == "recognizer"]
    if not detectors or not recognizers:
        raise PackError(f"pack {name!r} needs a detector and a recognizer ONNX file; found roles {roles}")
    manifest = {
        "name": name,
        "source": source,
        "detector": detectors[0],
        "recognizer": recognizers[0],
        "files": {p.name: {"sha256": sha256_file(p), "role": roles[p.name]} for p in files},
        "license": PACKS[name].license if name in PACKS else "",
    }
    thresholds = known_thresholds(manifest["files"][recognizers[0]]["sha256"])
    if thresholds:
        manifest["thresholds"] = thresholds
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def known_thresholds(recognizer_sha256: str) -> dict[str, float]:
    """The calibrated thresholds of a recognizer file, or {} when it was never calibrated."""
    if not THRESHOLDS_FILE.is_file():
        return {}
    entry = json.loads(THRESHOLDS_FILE.read_text()).get(recognizer_sha256) or {}
    return {"search_min_score": float(entry["search_min_score"])} if "search_min_score" in entry else {}


def pack_thresholds(directory: Path) -> dict[str, float]:
    """The thresholds in a pack's manifest, or {} when the pack has none."""
    manifest_path = Path(directory) / MANIFEST
    if not manifest_path.is_file():
        return {}
    try:
        thresholds = json.loads(manifest_path.read_text()).get("thresholds") or {}
    except (OSError, ValueError):
        return {}
    return {k: float(v) for k, v in thresholds.items() if isinstance(v, int | float)}


def load_pack(directory: Path, detector: str = "", recognizer: str = "") -> PackFiles:
    """Finds the detector and recognizer in a pack directory (manifest first)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise PackError(
            f"model pack not found at {directory}; run 'facepipe models pull buffalo_l' "
            "or 'facepipe models install local --from DIR'"
        )
    manifest_path = directory / MANIFEST
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
    else:
        manifest = {}
        roles = {p.name: classify(p) for p in sorted(directory.glob("*.onnx"))}
        manifest["detector"] = next((n for n, r in roles.items() if r == "detector"), "")
        manifest["recognizer"] = next((n for n, r in roles.items() if r == "recognizer"), "")
    det = directory / (detector or manifest.get("detector", ""))
    rec = directory / (recognizer or manifest.get("recognizer", ""))
    for role, path in (("detector", det), ("recognizer", rec)):
        if not path.is_file():
            raise PackError(f"no {role} model in {directory} (looked for {path.name or 'any'})")
    return PackFiles(directory=directory, detector=det, recognizer=rec)


def installed_bytes(source: Path) -> bytes:
    """A pack file as it is installed: a detector exported with its batch axis fixed
    at 1 gets a dynamic one (the same bytes every time); anything else is copied."""
    from facepipe.models.batchaxis import dynamic_batch_bytes  # onnx loads only to install

    data = source.read_bytes()
    return dynamic_batch_bytes(data) if source.suffix.lower() == ".onnx" else data


def install_local(name: str, source: Path, home: Path) -> Path:
    """Copies a directory of ONNX files in as pack ``name``; unchanged files are kept."""
    source = Path(source)
    if not source.is_dir():
        raise PackError(f"{source} is not a directory")
    dest = models_root(home) / name
    dest.mkdir(parents=True, exist_ok=True)
    for src in sorted(source.iterdir()):
        if src.suffix.lower() not in (".onnx", ".md", ".txt") or not src.is_file():
            continue
        target = dest / src.name
        data = installed_bytes(src)
        if (
            target.exists()
            and target.stat().st_size == len(data)
            and sha256_file(target) == hashlib.sha256(data).hexdigest()
        ):
            continue
        tmp = target.with_suffix(target.suffix + ".part")
        tmp.write_bytes(data)
        tmp.replace(target)
    _write_manifest(dest, name, f"file://{source.resolve()}")
    return dest


def pull(
    name: str,
    home: Path,
    url: str | None = None,
    sha256: str | None = None,
    force: bool = False,
    progress=None,
) -> Path:
    """Downloads a zip pack, checks its sha256, unpacks it safely and installs it."""
    spec = PACKS.get(name)
    url = url or (spec.url if spec else None)
    if not url:
        raise PackError(
            f"unknown pack {name!r} and no --from URL; known: {', '.join(p for p in PACKS if PACKS[p].url)}"
        )
    expected = sha256 or (spec.sha256 if spec and url == spec.url else None)
    dest = models_root(home) / name
    if dest.is_dir() and (dest / MANIFEST).exists() and not force:
        log.info("pack already installed", extra={"pack": name, "path": str(dest)})
        return dest
    models_root(home).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=models_root(home), prefix=f".{name}-") as tmp:
        archive = Path(tmp) / "pack.zip"
        digest = _download(url, archive, progress)
        if expected and digest != expected.lower():
            raise PackError(f"sha256 mismatch for {url}: got {digest}, expected {expected}")
        if not expected:
            log.warning("no sha256 to verify against", extra={"url": url, "sha256": digest})
        staging = Path(tmp) / "pack"
        _safe_unzip(archive, staging)
        _write_manifest(staging, name, url)
        if dest.exists():
            shutil.rmtree(dest)
        staging.replace(dest)
    return dest


def _download(url: str, target: Path, progress=None) -> str:
    h = hashlib.sha256()
    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=httpx.Timeout(30.0, read=120.0)) as resp:
            resp.raise_for_status()
            total = int(resp.headers.get("content-length") or 0)
            done = 0
            with open(target, "wb") as fh:
                for chunk in resp.iter_bytes(1 << 20):
                    fh.write(chunk)
                    h.update(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
    except httpx.HTTPError as exc:
        raise PackError(f"download of {url} failed: {exc}") from exc
    return h.hexdigest()


def _safe_unzip(archive: Path, dest: Path) -> None:
    """Extracts the .onnx and text files; refuses paths that escape ``dest``.
    A single top-level folder in the zip is flattened."""
    dest.mkdir(parents=True)
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        raise PackError(f"not a zip archive: {exc}") from exc
    with zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            parts = Path(info.filename).parts
            if info.filename.startswith("/") or ".." in parts:
                raise PackError(f"unsafe path in archive: {info.filename}")
            if Path(info.filename).suffix.lower() not in (".onnx", ".md", ".txt", ".json"):
                continue
            target = dest / parts[-1]
            if target.exists():
                raise PackError(f"two files named {parts[-1]} in the archive")
            with zf.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
