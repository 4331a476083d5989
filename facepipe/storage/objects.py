"""Blob storage for images, face crops and thumbnails.

Two implementations of one small interface: a local folder (the single-machine
default) and any S3-compatible server through the MinIO client (MinIO at scale).
Both are synchronous; async callers wrap them in ``asyncio.to_thread``.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable

import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import S3Error

from facepipe.config import ObjectStoreSettings
from facepipe.echo import echo

RAW_IMAGES_BUCKET = "raw-images"
FACE_CROPS_BUCKET = "face-crops"
FACE_THUMBS_BUCKET = "face-thumbs"
BUCKETS = (RAW_IMAGES_BUCKET, FACE_CROPS_BUCKET, FACE_THUMBS_BUCKET)

# S3 bucket naming rules, which the local store follows too so data can move between them.
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_MAX_KEY_BYTES = 1024
_DELETE_BATCH = 1000


class ObjectNotFound(LookupError):
    """The bucket or key does not exist."""

    def __init__(self, bucket: str, key: str) -> None:
        super().__init__(f"object not found: {bucket}/{key}")
        self.bucket = bucket
        self.key = key


@runtime_checkable
class ObjectStore(Protocol):
    def put(
        self, bucket: str, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> None: ...

    def get(self, bucket: str, key: str) -> bytes: ...

    def exists(self, bucket: str, key: str) -> bool: ...

    def delete(self, bucket: str, key: str) -> bool: ...

    def delete_prefix(self, bucket: str, prefix: str) -> int: ...

    def list(self, bucket: str, prefix: str = "") -> Iterator[str]: ...

    def ping(self) -> None: ...

    def describe(self) -> str: ...


def validate_bucket(bucket: str) -> str:
    if not isinstance(bucket, str) or not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise ValueError(
            f"invalid bucket name {echo(bucket)}: use 3-63 lowercase letters, digits, '.' or '-', "
            "starting and ending with a letter or digit"
        )
    return bucket


def validate_key(key: str) -> str:
    """Rejects keys that could escape the bucket or that map badly onto a file system."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"invalid object key {echo(key)}: must be a non-empty string")
    if len(key.encode()) > _MAX_KEY_BYTES:
        raise ValueError(f"invalid object key: longer than {_MAX_KEY_BYTES} bytes")
    if "\\" in key or "\x00" in key:
        raise ValueError(f"invalid object key {echo(key)}: no backslashes or NUL characters")
    if key.startswith("/") or re.match(r"^[A-Za-z]:", key):
        raise ValueError(f"invalid object key {echo(key)}: must be relative, not an absolute path")
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid object key {echo(key)}: no empty, '.' or '..' path segments")
    return key


def _as_bytes(data: bytes) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    raise TypeError(f"object data must be bytes, got {type(data).__name__}")


class LocalObjectStore:
    """Buckets are folders under ``root``; keys are relative paths inside them.

    Writes go to a staging file that is renamed into place, so readers and crashes
    only ever see a whole old object or a whole new one.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser().resolve()
        # Bucket names cannot start with '.', so staging never collides with a bucket.
        self._staging = self.root / ".staging"
        self._sweep_staging()

    def _sweep_staging(self, max_age_s: float = 3600.0) -> None:
        """Removes staging files a crashed writer left behind; no live write takes an hour."""
        if not self._staging.is_dir():
            return
        cutoff = time.time() - max_age_s
        for tmp in self._staging.iterdir():
            try:
                if tmp.stat().st_mtime < cutoff:
                    tmp.unlink()
            except FileNotFoundError:
                pass

    def _path(self, bucket: str, key: str) -> Path:
        return self.root / validate_bucket(bucket) / validate_key(key)

    def put(self, bucket: str, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        data = _as_bytes(data)
        path = self._path(bucket, key)
        self._staging.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self._staging, prefix="put-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, path)
            except (NotADirectoryError, IsADirectoryError, FileExistsError) as e:
                raise ValueError(
                    f"key {echo(key)} in bucket {echo(bucket)} clashes with an existing object or folder "
                    "(a local store cannot hold both 'a' and 'a/b')"
                ) from e
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, bucket: str, key: str) -> bytes:
        path = self._path(bucket, key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(bucket, key) from None

    def exists(self, bucket: str, key: str) -> bool:
        return self._path(bucket, key).is_file()

    def delete(self, bucket: str, key: str) -> bool:
        path = self._path(bucket, key)
        if not path.is_file():
            return False
        try:
            path.unlink()
        except FileNotFoundError:  # deleted concurrently
            return False
        self._prune(path.parent, self.root / bucket)
        return True

    def delete_prefix(self, bucket: str, prefix: str) -> int:
        # Materialise first: deleting while walking would prune folders under the walker.
        return sum(self.delete(bucket, key) for key in list(self.list(bucket, prefix)))

    def list(self, bucket: str, prefix: str = "") -> Iterator[str]:
        bucket_dir = self.root / validate_bucket(bucket)
        # Walk only the folder the prefix points into, then match the rest as a string prefix.
        folder = prefix.rpartition("/")[0]
        if folder:
            validate_key(folder)
        start = bucket_dir / folder if folder else bucket_dir
        if not start.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames.sort()
            rel = Path(dirpath).relative_to(bucket_dir).as_posix()
            base = "" if rel == "." else rel + "/"
            for name in sorted(filenames):
                key = base + name
                if key.startswith(prefix):
                    yield key

    def ping(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise PermissionError(f"object store folder {self.root} is not writable")

    def describe(self) -> str:
        return f"local:{self.root}"

    @staticmethod
    def _prune(folder: Path, stop: Path) -> None:
        """Removes now-empty folders from ``folder`` up to, not including, ``stop``."""
        while folder != stop and stop in folder.parents:
            try:
                folder.rmdir()
            except OSError:  # not empty, or a concurrent put just wrote into it
                return
            folder = folder.parent


class S3ObjectStore:
    """Any S3-compatible server (MinIO, AWS S3, Ceph RGW) through the MinIO client."""

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        secure: bool = False,
        region: str = "us-east-1",
        timeout_s: float = 30.0,
    ) -> None:
        # Accept "http(s)://host:port" as well as the "host:port" the MinIO client wants.
        if endpoint.startswith(("http://", "https://")):
            secure = endpoint.startswith("https://")
            endpoint = endpoint.split("://", 1)[1]
        endpoint = endpoint.rstrip("/")
        if not endpoint or "/" in endpoint:
            raise ValueError(f"invalid S3 endpoint {endpoint!r}: expected host:port")
        self.endpoint = endpoint
        self.secure = secure
        # Bounded timeouts and retries so a dead endpoint fails readiness fast instead of hanging.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=min(5.0, timeout_s), read=timeout_s),
            retries=urllib3.Retry(total=3, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
            maxsize=16,
        )
        self.client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            http_client=http,
        )
        self._buckets: set[str] = set()
        self._lock = threading.Lock()

    def _ensure_bucket(self, bucket: str) -> None:
        if bucket in self._buckets:
            return
        with self._lock:
            if bucket in self._buckets:
                return
            if not self.client.bucket_exists(bucket):
                try:
                    self.client.make_bucket(bucket)
                except S3Error as e:  # another process created it first
                    if e.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise
            self._buckets.add(bucket)

    def put(self, bucket: str, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        data = _as_bytes(data)
        validate_bucket(bucket)
        validate_key(key)
        self._ensure_bucket(bucket)
        self.client.put_object(bucket, key, io.BytesIO(data), len(data), content_type=content_type)

    def get(self, bucket: str, key: str) -> bytes:
        validate_bucket(bucket)
        validate_key(key)
        try:
            resp = self.client.get_object(bucket, key)
        except S3Error as e:
            if e.code in ("NoSuchKey", "NoSuchBucket", "NoSuchObject"):
                raise ObjectNotFound(bucket, key) from None
            raise
        try:
            return resp.read()
        finally:
            resp.close()
            resp.release_conn()

    def exists(self, bucket: str, key: str) -> bool:
        validate_bucket(bucket)
        validate_key(key)
        try:
            self.client.stat_object(bucket, key)
        except S3Error as e:
            if e.code in ("NoSuchKey", "NoSuchBucket", "NoSuchObject", "ResourceNotFound"):
                return False
            raise
        return True

    def delete(self, bucket: str, key: str) -> bool:
        # S3 DELETE succeeds whether or not the key existed, so look first to report it.
        if not self.exists(bucket, key):
            return False
        self.client.remove_object(bucket, key)
        return True

    def delete_prefix(self, bucket: str, prefix: str) -> int:
        deleted = 0
        batch: list[str] = []

        def flush() -> int:
            errors = list(self.client.remove_objects(bucket, [DeleteObject(k) for k in batch]))
            if errors:
                raise RuntimeError(f"failed to delete {len(errors)} objects in {bucket}: {errors[0]}")
            n = len(batch)
            batch.clear()
            return n

        # Materialise each batch before deleting so the listing is not disturbed mid-page.
        for key in self.list(bucket, prefix):
            batch.append(key)
            if len(batch) >= _DELETE_BATCH:
                deleted += flush()
        if batch:
            deleted += flush()
        return deleted

    def list(self, bucket: str, prefix: str = "") -> Iterator[str]:
        validate_bucket(bucket)
        try:
            for obj in self.client.list_objects(bucket, prefix=prefix or None, recursive=True):
                if not obj.is_dir:
                    yield obj.object_name
        except S3Error as e:
            if e.code != "NoSuchBucket":
                raise

    def ping(self) -> None:
        # Works with bucket-scoped credentials, unlike ListBuckets.
        self.client.bucket_exists(RAW_IMAGES_BUCKET)

    def describe(self) -> str:
        return f"s3://{self.endpoint}" + (" (tls)" if self.secure else "")


def open_object_store(settings: ObjectStoreSettings) -> ObjectStore:
    """Builds the object store that ``settings.kind`` (local|s3) selects."""
    if settings.kind == "local":
        return LocalObjectStore(settings.dir)
    if not settings.s3_endpoint:
        raise ValueError("FACEPIPE_OBJECT_STORE=s3 needs FACEPIPE_S3_ENDPOINT (host:port)")
    return S3ObjectStore(
        settings.s3_endpoint,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
        secure=settings.s3_secure,
        region=settings.s3_region,
    )


def object_store_from_env(env: Mapping[str, str] | None = None) -> ObjectStore:
    """The object store that ``env`` (default: the process environment) configures."""
    return open_object_store(ObjectStoreSettings.from_env(env))
