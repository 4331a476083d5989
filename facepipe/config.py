"""Every setting of facepipe, read from the environment in this one module.

:class:`Settings` is what a process gets: the service's own knobs (models,
detection, quality, the pipeline, tracing) as flat fields, and one typed,
frozen sub-settings object per concern: ``objects`` (object store), ``vectors``
(vector store), ``netguard``, ``indexer``, ``recognizer``, ``crawler`` (the crawler service),
``crawl`` (the defaults of one crawl), ``auth``, ``privacy`` (audit log,
opt-out) and ``clients`` (the addresses the CLI talks to) and ``web`` (the web service). Each field names its variable and a help text in its metadata; the
README's settings table is generated from them (``python -m facepipe.config
--markdown``). Nothing else in facepipe or services reads ``os.environ``:
modules receive these objects.

An empty variable counts as unset. A bad value raises :class:`ValueError`
naming the variable, e.g. ``FACEPIPE_GRPC_PORT='abc' is not a valid int``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

DEFAULT_PORTS = {
    "detector": 50051,
    "embedder": 50052,
    "indexer": 50053,
    "extractor": 50054,
    "crawler": 50055,
    "node": 50056,
    "persons": 50057,
    # The web service's HTTP port (it serves no gRPC).
    "web": 8080,
    "recognizer": 50059,
}
# The port of a service that has no entry above.
FALLBACK_PORT = 50050
# Metrics/health HTTP port = gRPC port + this offset, unless FACEPIPE_HTTP_PORT is set.
HTTP_PORT_OFFSET = 1000

HOME_ENV = "FACEPIPE_HOME"
ALLOW_PRIVATE_NETWORKS_ENV = "FACEPIPE_ALLOW_PRIVATE_NETWORKS"
DEFAULT_HOME = Path("~/.facepipe")

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")

T = TypeVar("T")


# --- the environment -------------------------------------------------------------------------


def environ(overlay: Mapping[str, str] | None = None) -> dict[str, str]:
    """The process environment, with ``overlay`` on top (e.g. a local stack's settings)."""
    return {**os.environ, **(overlay or {})}


def _env(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def parse_bool(raw: str) -> bool:
    """``1/true/yes/on`` or ``0/false/no/off``, any case; anything else is a ValueError."""
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"{raw!r} is not a boolean (use one of {', '.join(TRUE_WORDS + FALSE_WORDS)})")


def resolve_home(env: Mapping[str, str] | None = None) -> Path:
    """The data home: ``FACEPIPE_HOME``, else ``~/.facepipe``. Models, objects, vectors and
    the local stack live under it unless their own settings say otherwise."""
    raw = _env(env).get(HOME_ENV, "").strip()
    return Path(raw or DEFAULT_HOME).expanduser()


def default_stack_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where ``facepipe up`` keeps a stack when no ``--data-dir`` is given."""
    return resolve_home(env) / "stack"


# --- field declarations ----------------------------------------------------------------------


def setting(
    default: Any = dataclasses.MISSING,
    *,
    help: str,  # noqa: A002 - the word the table prints
    env: str | None = None,
    aliases: tuple[str, ...] = (),
    choices: tuple[str, ...] = (),
    value_aliases: Mapping[str, str] | None = None,
    minimum: float | None = None,
    under_home: str | None = None,
    shown: str | None = None,
    from_env: bool = True,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A settings field: its default, help text and how the environment sets it.

    ``env`` is the variable (default: the class's prefix + the field name upper-cased);
    ``aliases`` are read when it is unset. ``under_home`` makes the default a folder of
    that name under the data home. ``shown`` is the default as the README prints it.
    """
    metadata = {
        "help": help,
        "env": env,
        "aliases": aliases,
        "choices": choices,
        "value_aliases": dict(value_aliases or {}),
        "minimum": minimum,
        "under_home": under_home,
        "shown": shown,
        "from_env": from_env,
    }
    return field(default=default, default_factory=default_factory, metadata=metadata)


def group(cls: type, help: str) -> Any:  # noqa: A002
    """A field holding one sub-settings object, loaded from the environment with its parent."""
    return field(default_factory=cls, metadata={"group": cls, "help": help})


def env_name(cls: type, f: dataclasses.Field) -> str | None:
    """The variable that sets field ``f`` of ``cls``, or None when the environment does not."""
    if f.metadata.get("group") or not f.metadata.get("from_env", True):
        return None
    return f.metadata.get("env") or cls.ENV_PREFIX + f.name.upper()


def _kind(f: dataclasses.Field) -> str:
    return f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))


def _parse(raw: str, kind: str) -> Any:
    if kind == "bool":
        return parse_bool(raw)
    if kind == "int":
        return int(raw)
    if kind == "float":
        return float(raw)
    if kind == "tuple[str, ...]":
        return tuple(v.strip() for v in raw.split(",") if v.strip())
    if kind in ("Path", "Path | None"):
        return Path(raw).expanduser()
    return raw


def _problem(value: Any, f: dataclasses.Field) -> str | None:
    """What is wrong with ``value`` for field ``f`` under its declared bounds, or None."""
    choices = f.metadata.get("choices") or ()
    if choices and value not in choices:
        *first, last = (repr(c) for c in choices)
        return f"expected {', '.join(first)} or {last}" if first else f"expected {last}"
    minimum = f.metadata.get("minimum")
    if minimum is not None and value < minimum:
        return "must not be negative" if minimum == 0 else f"must be at least {minimum:g}"
    return None


def check_fields(obj: Any) -> None:
    """Raises ValueError naming the first field of ``obj`` outside its declared bounds."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        problem = _problem(value, f)
        if problem:
            raise ValueError(f"{f.name}={value!r}: {problem}")


def _read(cls: type, f: dataclasses.Field, env: Mapping[str, str]) -> tuple[bool, Any]:
    """(True, value) when the environment sets field ``f``, else (False, None)."""
    name = env_name(cls, f)
    if name is None:
        return False, None
    for var in (name, *f.metadata.get("aliases", ())):
        raw = env.get(var, "").strip()
        if raw:
            break
    else:
        return False, None
    kind = _kind(f)
    try:
        value = _parse(raw, kind)
    except ValueError:
        raise ValueError(f"{var}={raw!r} is not a valid {kind.replace(' | None', '')}") from None
    if isinstance(value, str) and f.metadata.get("choices"):
        value = value.lower()
        value = f.metadata.get("value_aliases", {}).get(value, value)
    problem = _problem(value, f)
    if problem:
        raise ValueError(f"{var}={raw!r}: {problem}")
    return True, value


def load(
    cls: type[T], env: Mapping[str, str] | None = None, home: Path | None = None, /, **overrides: Any
) -> T:
    """``cls`` with every field the environment sets, sub-settings included; ``overrides``
    that are not None win. Folders declared ``under_home`` default to ``home/<name>``."""
    env = _env(env)
    home = resolve_home(env) if home is None else home
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if overrides.get(f.name) is not None:
            values[f.name] = overrides[f.name]
        elif sub := f.metadata.get("group"):
            values[f.name] = load(sub, env, home)
        else:
            found, value = _read(cls, f, env)
            if found:
                values[f.name] = value
            elif f.metadata.get("under_home"):
                values[f.name] = home / f.metadata["under_home"]
    return cls(**values)


# --- sub-settings ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectStoreSettings:
    """Object store: images, face crops and thumbnails."""

    ENV_PREFIX: ClassVar[str] = "FACEPIPE_"

    kind: str = setting(
        "local",
        env="FACEPIPE_OBJECT_STORE",
        choices=("local", "s3"),
        value_aliases={"minio": "s3"},
        help="`local` (a folder) or `s3` (any S3-compatible server, e.g. MinIO).",
    )
    dir: Path = setting(
        default_factory=lambda: DEFAULT_HOME.expanduser() / "objects",
        env="FACEPIPE_OBJECT_DIR",
        under_home="objects",
        help="Folder of the local object store.",
    )
    s3_endpoint: str = setting("", help="S3 server as host:port; required with `s3`.")
    s3_access_key: str = setting("", help="S3 access key.")
    s3_secret_key: str = setting("", help="S3 secret key.")
    s3_secure: bool = setting(False, help="Talk TLS to the S3 server.")
    s3_region: str = setting("us-east-1", help="S3 region.")

    def __post_init__(self) -> None:
        check_fields(self)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> ObjectStoreSettings:
        return load(cls, env, **overrides)


@dataclass(frozen=True)
class VectorStoreSettings:
    """Vector store: face embeddings with their payloads."""

    ENV_PREFIX: ClassVar[str] = "FACEPIPE_"

    kind: str = setting(
        "edge",
        env="FACEPIPE_VECTOR_STORE",
        choices=("edge", "qdrant"),
        help="`edge` (Qdrant Edge in the indexer process; one process owns the folder) "
        "or `qdrant` (a Qdrant server).",
    )
    dir: Path = setting(
        default_factory=lambda: DEFAULT_HOME.expanduser() / "vectors",
        env="FACEPIPE_VECTOR_DIR",
        under_home="vectors",
        help="Folder of the Qdrant Edge shards.",
    )
    qdrant_url: str = setting("", help="Qdrant server URL, e.g. http://qdrant:6333; required with `qdrant`.")
    qdrant_api_key: str = setting("", help="Qdrant API key.")
    qdrant_collection: str = setting(
        "",
        shown="faces_<recognizer sha256[:16]>_<dim>d",
        help="Collection (Edge: shard folder) of the faces; empty: the active model pack's own, "
        "named after its recognizer, so vectors of different models never mix. Set it to name "
        "the collection yourself (then change it when you change the model).",
    )

    def __post_init__(self) -> None:
        check_fields(self)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> VectorStoreSettings:
        return load(cls, env, **overrides)


@dataclass(frozen=True)
class NetGuardSettings:
    """Network guard of every fetch driven by user-supplied URLs."""

    ENV_PREFIX: ClassVar[str] = "FACEPIPE_"

    allow_private_networks: bool = setting(
        False,
        env=ALLOW_PRIVATE_NETWORKS_ENV,
        help="Allow fetches from private, loopback and link-local addresses (tests, intranets).",
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> NetGuardSettings:
        return load(cls, env, **overrides)


@dataclass(frozen=True)
class IndexerSettings:
    """The indexer service."""

    ENV_PREFIX: ClassVar[str] = "FACEPIPE_"

    optimize_every: int = setting(
        10_000,
        minimum=1,
        help="Points upserted or deleted between two optimizations of a Qdrant Edge shard "
        "(HNSW build, vacuum).",
    )

    def __post_init__(self) -> None:
        check_fields(self)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> IndexerSettings:
        return load(cls, env, **overrides)


@dataclass(frozen=True)
class PersonsSettings:
    """The persons service."""

    ENV_PREFIX: ClassVar[str] = "FACEPIPE_PERSONS_"

    indexer_addr: str = setting(
        "",
        shown=f"127.0.0.1:{DEFAULT_PORTS['indexer']}",
        help="Indexer address (host:port) the persons service reads and updates faces through.",
    )
    neighbours: int = setting(20, minimum=1, help="Nearest faces looked at to assign a new face to a person.")
    graph_k: int = setting(
        20, minimum=1, help="Neighbours per face in the k-nearest-neighbour graph of a recluster."
    )
    cluster_distance: float = setting(
        0.0,
        minimum=0,
        help="Cosine distance at which persons are cut apart; 0: the model pack's "
        "`persons_cluster_distance`.",
    )
    settle_s: float = setting(
        10.0,
        minimum=0,
        help="Seconds without new faces in a tenant after which its persons are reclustered "
        "on their own, so that they do not depend on the order photos arrived in; 0: never.",
    )
    settle_growth: float = setting(
        0.1,
        minimum=0,
        help="An automatic recluster runs only once the faces assigned since the last recluster "
        "are at least this share of the faces it grouped (any number before the first).",
    )

    def __post_init__(self) -> None:
        check_fields(self)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> PersonsSettings:
        return load(cls, env, **overrides)


@dataclass(frozen=True)
class RecognizerSettings:
    """The recognizer service (enrolled subjects, verify, recognize)."""

    ENV_PREFIX: ClassVar[str] = "FACEPIPE_RECOGNIZER_"

    persons_addr: str = setting(
        "",
        help="Persons service address (host:port) the recognizer reads a person's faces from "
        "for enrolment; empty: enrolment from a person is refused.",
    )
    max_enrol_images: int = setting(32, minimum=1, help="Most photos one EnrolSubject call may carry.")

    def __post_init__(self) -> None:
        check_fields(self)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> RecognizerSettings:
        return load(cls, env, **overrides)


@dataclass(frozen=True)
class CrawlerSettings:
    """The crawler service's own knobs."""

    ENV_PREFIX: ClassVar[str] = "FACEPIPE_CRAWL_"

    max_jobs: int = setting(4, minimum=1, help="Crawl jobs one replica runs at once.")
    ack_wait: float = setting(
        300.0,
        minimum=1,
        help="Seconds a job stays with a replica without a heartbeat; after a crash the job "
        "resumes elsewhere this much later. Set it alike on every replica.",
    )
    progress_interval: float = setting(
        1.0, minimum=0, help="Seconds between progress writes to the job record and cancel checks."
    )
    max_seeds: int = setting(1000, minimum=1, help="Most seeds one StartCrawl may give.")
    max_pages_limit: int = setting(100_000, minimum=1, help="Most pages per site one StartCrawl may ask.")
    max_depth_limit: int = setting(50, minimum=0, help="Deepest link depth one StartCrawl may ask.")

    def __post_init__(self) -> None:
        check_fields(self)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> CrawlerSettings:
        return load(cls, env, **overrides)


RENDER_MODES = ("auto", "never", "always")


@dataclass
class CrawlConfig:
    """Defaults of one crawl (a StartCrawl request overrides some per job)."""

    ENV_PREFIX: ClassVar[str] = "FACEPIPE_CRAWL_"

    max_pages: int = setting(1000, minimum=1, help="Pages per site (one seed is one site).")
    max_depth: int = setting(5, minimum=0, help="Link depth from the seed.")
    same_site: bool = setting(True, help="Stay on the seed's site.")
    user_agent: str = setting(
        "facepipe-crawler/0.1 (+https://github.com/facepipe)", help="User-Agent of every request."
    )
    per_domain_concurrency: int = setting(2, minimum=1, help="Requests in flight per site.")
    per_domain_delay: float = setting(1.0, minimum=0, help="Seconds between request starts per site.")
    max_crawl_delay: float = setting(30.0, minimum=0, help="Cap on a robots.txt Crawl-delay, seconds.")
    max_parallel_sites: int = setting(4, minimum=1, help="Sites crawled at once per job.")
    connect_timeout: float = setting(10.0, minimum=0, help="Connect timeout, seconds.")
    read_timeout: float = setting(20.0, minimum=0, help="Read timeout, seconds.")
    request_timeout: float = setting(60.0, minimum=0, help="Whole-request timeout, seconds.")
    max_redirects: int = setting(5, minimum=0, help="Redirects followed per request.")
    max_html_bytes: int = setting(5 * 1024 * 1024, minimum=0, help="Largest HTML page read, bytes.")
    retries: int = setting(3, minimum=0, help="Retries of a failed request.")
    backoff_base: float = setting(1.0, minimum=0, help="First retry delay, seconds; doubles each retry.")
    max_retry_after: float = setting(
        120.0,
        minimum=0,
        help="A Retry-After longer than this is not waited for; the URL is recorded as an error.",
    )
    # The network guard's switch, under its own name (the table lists it there).
    allow_private_networks: bool = setting(
        False, env=ALLOW_PRIVATE_NETWORKS_ENV, help="Crawl private addresses too."
    )
    render_mode: str = setting(
        "auto",
        choices=RENDER_MODES,
        help="JavaScript rendering: `auto` renders when static HTML has no images or the site is "
        "known to need it; `never`, `always`.",
    )
    render_contexts: int = setting(2, minimum=1, help="Browser pages rendering at once.")
    render_timeout: float = setting(30.0, minimum=0, help="Seconds to render one page.")
    render_settle: float = setting(
        1.0, minimum=0, help="Seconds to let scripts settle after load and scrolls."
    )
    render_max_scrolls: int = setting(20, minimum=0, help="Scrolls per page, to load lazy images.")
    chromium_path: str = setting("/usr/bin/chromium", help="Chromium binary used for rendering.")
    min_image_side: int = setting(
        64, minimum=0, help="Images declared smaller than this (width or height) are icons, not photos."
    )
    sitemaps: bool = setting(True, help="Read the site's sitemaps for more pages.")
    max_sitemap_documents: int = setting(20, minimum=0, help="Sitemap documents read per site.")

    def __post_init__(self) -> None:
        check_fields(self)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> CrawlConfig:
        """Defaults with ``FACEPIPE_CRAWL_<FIELD>`` applied, e.g. FACEPIPE_CRAWL_PER_DOMAIN_DELAY=0.5;
        private networks follow FACEPIPE_ALLOW_PRIVATE_NETWORKS."""
        return load(cls, env, **overrides)


@dataclass(frozen=True)
class AuthSettings:
    """API keys on every gRPC call."""

    ENV_PREFIX: ClassVar[str] = "FACEPIPE_"

    mode: str = setting(
        "on",
        env="FACEPIPE_AUTH",
        choices=("on", "off"),
        value_aliases={w: "on" for w in TRUE_WORDS} | {w: "off" for w in FALSE_WORDS},
        help="`on`: every gRPC call but health and reflection needs an API key. `off` (a "
        "standalone server on loopback only, logged as a warning) accepts every call.",
    )
    service_key_file: Path | None = setting(
        None,
        help="File holding the deployment's service credential: services send it to each other "
        "(inference nodes) and accept it as tenant `*`, role `service`.",
    )

    @property
    def enabled(self) -> bool:
        return self.mode == "on"

    def __post_init__(self) -> None:
        check_fields(self)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> AuthSettings:
        return load(cls, env, **overrides)


CLIENT_AUTH_MODES = ("none", "require")


@dataclass(frozen=True)
class TlsSettings:
    """TLS of the gRPC ports (the HTTP side port of metrics and health stays plain)."""

    ENV_PREFIX: ClassVar[str] = "FACEPIPE_TLS_"

    cert: Path | None = setting(
        None,
        help="PEM certificate (chain) the gRPC server presents; with `FACEPIPE_TLS_KEY` the port "
        "serves TLS only. Calls to other services present it too (mutual TLS).",
    )
    key: Path | None = setting(None, help="PEM private key of `FACEPIPE_TLS_CERT`.")
    ca: Path | None = setting(
        None,
        help="PEM CA bundle: clients (services, command line) verify servers against it and "
        "talk TLS whenever it is set; servers check client certificates against it.",
    )
    client_auth: str = setting(
        "none",
        choices=CLIENT_AUTH_MODES,
        help="`require`: the gRPC server refuses clients without a certificate signed by "
        "`FACEPIPE_TLS_CA` (mutual TLS); `none`: any TLS client.",
    )
    server_name: str = setting(
        "",
        help="Name clients expect in server certificates, when it differs from the address "
        "dialled (e.g. an IP).",
    )
    enabled: bool = setting(
        False,
        env="FACEPIPE_TLS",
        help="Clients talk TLS, trusting the system roots when `FACEPIPE_TLS_CA` is unset "
        "(the command line's `--tls`).",
    )

    def __post_init__(self) -> None:
        check_fields(self)

    @property
    def serves_tls(self) -> bool:
        """Whether a gRPC server with these settings listens with TLS."""
        return self.cert is not None

    @property
    def client_tls(self) -> bool:
        """Whether a client with these settings dials TLS."""
        return self.enabled or self.ca is not None

    def check(self) -> None:
        """Raises ValueError for a half configuration, naming the variables."""
        if (self.cert is None) != (self.key is None):
            raise ValueError("FACEPIPE_TLS_CERT and FACEPIPE_TLS_KEY must be set together")
        if self.client_auth == "require" and (self.ca is None or self.cert is None):
            raise ValueError(
                "FACEPIPE_TLS_CLIENT_AUTH=require needs FACEPIPE_TLS_CERT, FACEPIPE_TLS_KEY and "
                "FACEPIPE_TLS_CA"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> TlsSettings:
        return load(cls, env, **overrides)


@dataclass(frozen=True)
class NatsTlsSettings:
    """TLS of the NATS connections, and of the local stack's nats-server."""

    ENV_PREFIX: ClassVar[str] = "FACEPIPE_NATS_TLS_"

    ca: Path | None = setting(
        None,
        help="PEM CA bundle the NATS server's certificate is checked against; set, NATS is dialled with TLS.",
    )
    cert: Path | None = setting(None, help="PEM client certificate presented to NATS (mutual TLS).")
    key: Path | None = setting(None, help="PEM private key of `FACEPIPE_NATS_TLS_CERT`.")
    server_cert: Path | None = setting(
        None,
        help="Certificate of the local stack's nats-server (`facepipe up`); set with "
        "`FACEPIPE_NATS_TLS_SERVER_KEY`, it accepts TLS connections only.",
    )
    server_key: Path | None = setting(None, help="PEM private key of `FACEPIPE_NATS_TLS_SERVER_CERT`.")
    client_auth: str = setting(
        "none",
        choices=CLIENT_AUTH_MODES,
        help="`require`: the local nats-server refuses clients without a certificate signed by "
        "`FACEPIPE_NATS_TLS_CA`.",
    )

    def __post_init__(self) -> None:
        check_fields(self)

    @property
    def client_tls(self) -> bool:
        return self.ca is not None or self.cert is not None

    @property
    def serves_tls(self) -> bool:
        return self.server_cert is not None

    def check(self) -> None:
        """Raises ValueError for a half configuration, naming the variables."""
        pairs = (("CERT", self.cert, self.key), ("SERVER_CERT", self.server_cert, self.server_key))
        for name, cert, key in pairs:
            if (cert is None) != (key is None):
                key_name = name.replace("CERT", "KEY")
                raise ValueError(
                    f"FACEPIPE_NATS_TLS_{name} and FACEPIPE_NATS_TLS_{key_name} must be set together"
                )
        if self.client_auth == "require" and (self.ca is None or self.server_cert is None):
            raise ValueError(
                "FACEPIPE_NATS_TLS_CLIENT_AUTH=require needs FACEPIPE_NATS_TLS_SERVER_CERT, "
                "FACEPIPE_NATS_TLS_SERVER_KEY and FACEPIPE_NATS_TLS_CA"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> NatsTlsSettings:
        return load(cls, env, **overrides)


@dataclass(frozen=True)
class PrivacySettings:
    """The audit log, the access log and opt-outs."""

    ENV_PREFIX: ClassVar[str] = "FACEPIPE_"

    audit_max_age_days: float = setting(
        365.0,
        minimum=1,
        help="Days the audit log (JetStream stream `FACEPIPE_AUDIT`) keeps a record; services "
        "apply it at start, so set it alike everywhere.",
    )
    access_log_max_age_days: float = setting(
        90.0,
        minimum=0.0001,
        help="Days the access log (JetStream stream `FACEPIPE_ACCESS`, written by the recognizer's "
        "camera streams) keeps a record; the recognizer applies it at start.",
    )
    optout_min_score: float = setting(
        0.0,
        minimum=0,
        shown="the pack's search_min_score",
        help="Cosine similarity at or above which a face matches an opted-out person (it is "
        "erased, and skipped from then on); 0: the model pack's calibrated `search_min_score`.",
    )

    @property
    def audit_max_age_s(self) -> float:
        return self.audit_max_age_days * 24 * 3600.0

    @property
    def access_log_max_age_s(self) -> float:
        return self.access_log_max_age_days * 24 * 3600.0

    def __post_init__(self) -> None:
        check_fields(self)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> PrivacySettings:
        return load(cls, env, **overrides)


@dataclass(frozen=True)
class ClientSettings:
    """Where the command line finds the pipeline when no local stack is running."""

    ENV_PREFIX: ClassVar[str] = "FACEPIPE_"

    indexer_addr: str = setting(
        "",
        shown=f"127.0.0.1:{DEFAULT_PORTS['indexer']}",
        help="Indexer address (host:port) for search, stats and erase.",
    )
    crawler_addr: str = setting(
        "", shown=f"127.0.0.1:{DEFAULT_PORTS['crawler']}", help="Crawler address (host:port) for crawl."
    )
    persons_addr: str = setting(
        "", shown=f"127.0.0.1:{DEFAULT_PORTS['persons']}", help="Persons address (host:port) for persons."
    )
    recognizer_addr: str = setting(
        "",
        shown=f"127.0.0.1:{DEFAULT_PORTS['recognizer']}",
        help="Recognizer address (host:port) for subjects, recognize and verify.",
    )
    api_key: str = setting(
        "",
        env="FACEPIPE_API_KEY",
        help="API key the command line sends (`--key` wins); a local stack's own admin key is "
        "used when unset.",
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> ClientSettings:
        return load(cls, env, **overrides)

    def address(self, service: str) -> str:
        """The configured address of ``service``, else its default port on loopback."""
        configured = {
            "indexer": self.indexer_addr,
            "crawler": self.crawler_addr,
            "persons": self.persons_addr,
            "recognizer": self.recognizer_addr,
        }.get(service, "")
        return configured or f"127.0.0.1:{DEFAULT_PORTS.get(service, FALLBACK_PORT)}"


@dataclass(frozen=True)
class WebSettings:
    """The web service: the REST API and the browser UI in front of the gRPC services."""

    ENV_PREFIX: ClassVar[str] = "FACEPIPE_WEB_"

    backends: tuple[str, ...] = setting(
        (),
        shown="each service on loopback at its default port",
        help="gRPC addresses of the services the web service calls, `name=host:port,...` "
        "(indexer, extractor, crawler, persons, recognizer); `facepipe up` sets them.",
    )
    status_addrs: tuple[str, ...] = setting(
        (),
        shown="each service on loopback at its gRPC port + 1000",
        help="HTTP side ports (/stats) of the services the system page shows, `name=host:port,...`.",
    )
    max_upload_bytes: int = setting(
        20 * 1024 * 1024, minimum=1, help="Largest request body (an upload) accepted, bytes; more is 413."
    )
    rate_limit_per_minute: int = setting(
        600, minimum=0, help="Requests per minute one API key may make (a burst of as many); 0: unlimited."
    )
    request_timeout_s: float = setting(
        30.0, minimum=0.1, help="Seconds a request may take, gRPC calls included; then 504."
    )
    session_secret: str = setting(
        "",
        help="Secret that seals session cookies (set it alike on every replica); empty: a random "
        "one per process, so sessions end when it restarts.",
    )
    session_max_age_s: float = setting(
        12 * 3600.0, minimum=60, help="Seconds a browser session lasts after logging in."
    )
    secure_cookies: bool = setting(
        False,
        help="Always mark cookies Secure (TLS ends at an ingress in front); they are anyway when "
        "the request came over https.",
    )
    default_tenant: str = setting(
        "default", help="Tenant a request works in when it names none (a key of tenant `*`)."
    )

    def __post_init__(self) -> None:
        check_fields(self)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> WebSettings:
        return load(cls, env, **overrides)

    def backend(self, service: str) -> str:
        """The gRPC address of ``service``: configured, else its default port on loopback."""
        return _named_addrs(self.backends).get(service) or (
            f"127.0.0.1:{DEFAULT_PORTS.get(service, FALLBACK_PORT)}"
        )

    def status_addr(self, service: str) -> str:
        """The HTTP side port (/stats, /readyz) of ``service``."""
        configured = _named_addrs(self.status_addrs).get(service)
        if configured:
            return configured
        host, _, port = self.backend(service).rpartition(":")
        return f"{host}:{int(port) + HTTP_PORT_OFFSET}"

    def services(self) -> list[str]:
        """The services the system page lists: every configured one, else the defaults."""
        named = list(_named_addrs(self.backends))
        return named or ["extractor", "detector", "embedder", "indexer", "crawler"]


def _named_addrs(pairs: tuple[str, ...]) -> dict[str, str]:
    """``name=host:port`` entries as a dict (entries without ``=`` are ignored)."""
    out = {}
    for pair in pairs:
        name, sep, addr = pair.partition("=")
        if sep and name.strip() and addr.strip():
            out[name.strip()] = addr.strip()
    return out


# --- the settings of one process -------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """Everything one facepipe process is configured with."""

    ENV_PREFIX: ClassVar[str] = "FACEPIPE_"

    # Service identity and ports (0 picks the default for the service).
    service: str = setting("facepipe", from_env=False, help="The service this process runs.")
    grpc_host: str = setting(
        "127.0.0.1",
        help="Address the gRPC and HTTP servers bind; containers set 0.0.0.0 to be reachable.",
    )
    grpc_port: int = setting(0, shown="per service, 50051-50059", help="gRPC port.")
    http_port: int = setting(0, shown="gRPC port + 1000", help="Port of /metrics, /healthz, /readyz, /stats.")
    log_level: str = setting("INFO", help="Log level (DEBUG, INFO, WARNING, ERROR).")
    drain_seconds: float = setting(10.0, minimum=0, help="Seconds to drain in-flight work on SIGTERM.")

    # Models.
    home: Path = setting(
        default_factory=lambda: DEFAULT_HOME.expanduser(),
        env=HOME_ENV,
        shown="~/.facepipe",
        help="Data home: models, objects, vectors and the local stack live under it.",
    )
    model_pack: str = setting(
        "opencv", help="Model pack under `$FACEPIPE_HOME/models/` (`facepipe models list` names them)."
    )
    models_dir: Path | None = setting(
        None, shown="$FACEPIPE_HOME/models/<pack>", help="Folder of the model pack's ONNX files."
    )
    detector_model: str = setting("", help="Detector ONNX file in the pack (empty: the pack's).")
    recognizer_model: str = setting("", help="Recognizer ONNX file in the pack (empty: the pack's).")
    providers: tuple[str, ...] = setting(
        ("DmlExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
        help="ONNX Runtime providers, comma-separated; the first available wins, CPU is always added.",
    )
    intra_op_threads: int = setting(0, minimum=0, help="ONNX Runtime threads per session (0: its default).")
    inference_nodes: tuple[str, ...] = setting(
        (), help="Remote inference nodes, host:port,...; empty runs the models in-process."
    )

    # Detection.
    det_size: int = setting(
        640, minimum=1, help="Detector input side, pixels: 160 to 1280, a multiple of 32."
    )
    adaptive_det_size: bool = setting(
        True,
        help="Detect each image at the smallest input size that still shows a face of "
        "`FACEPIPE_MIN_FACE_PX` large enough to find, at most `FACEPIPE_DET_SIZE` (or the "
        "request's input_size); off: every image at that size.",
    )
    det_threshold: float = setting(0.5, minimum=0, help="Detector score threshold.")
    nms_threshold: float = setting(0.4, minimum=0, help="Non-maximum suppression IoU threshold.")
    max_pixels: int = setting(50_000_000, minimum=1, help="Images with more pixels are refused.")
    max_image_bytes: int = setting(50 * 1024 * 1024, minimum=1, help="Images larger than this are refused.")
    max_batch: int = setting(8, minimum=1, help="Model calls batched together.")
    max_wait_ms: float = setting(5.0, minimum=0, help="Milliseconds a batch waits to fill.")
    workers: int = setting(0, minimum=0, help="Threads decoding and preprocessing images (0: per CPU).")

    # Quality thresholds.
    min_face_score: float = setting(0.5, minimum=0, help="Faces below this detector score are rejected.")
    min_face_px: int = setting(24, minimum=0, help="Faces smaller than this (pixels) are rejected.")
    min_blur: float = setting(
        15.0, minimum=0, help="Faces blurrier than this Laplacian variance are rejected."
    )
    max_yaw: float = setting(60.0, minimum=0, help="Faces turned further than this (degrees) are rejected.")
    max_roll: float = setting(45.0, minimum=0, help="Faces tilted further than this (degrees) are rejected.")

    # Pipeline: NATS JetStream (empty: gRPC only, no stage consumer).
    nats_url: str = setting("", help="NATS URL; empty serves gRPC only, without the stage consumer.")
    nats_user: str = setting(
        "", help="NATS user this process connects as; empty: the URL's, or none (an open server)."
    )
    nats_password: str = setting("", help="Password of `FACEPIPE_NATS_USER` (never logged).")
    nats_password_file: Path | None = setting(
        None, help="File holding the NATS password instead (the local stack writes one per user)."
    )
    max_inflight: int = setting(16, minimum=1, help="Messages a stage handles at once; model calls batch.")
    stage_ack_wait: float = setting(
        60.0,
        minimum=1,
        help="Seconds a stage message stays with a replica without an ack or heartbeat; after a "
        "crash it is redelivered this much later. Each stage applies it to its consumer at start; "
        "set it alike on every replica.",
    )
    dedup_ttl_seconds: float = setting(
        30 * 24 * 3600.0, minimum=0, help="Seconds a face hash is kept for near-duplicate checks."
    )
    dedup_max_hamming: int = setting(
        8,
        minimum=0,
        aliases=("DEDUP_MAX_HAMMING",),
        help="Largest pHash Hamming distance that counts as the same face.",
    )
    enable_global_dedup: bool = setting(
        True, aliases=("ENABLE_GLOBAL_DEDUP",), help="Skip faces already indexed for the tenant."
    )

    # Tracing.
    otlp_endpoint: str = setting(
        "",
        aliases=("OTEL_EXPORTER_OTLP_ENDPOINT",),
        help="OTLP/gRPC endpoint of the traces, e.g. http://otel-collector:4317; empty: no export.",
    )
    trace_file: Path | None = setting(None, help="Also write spans as JSON lines to this file.")

    # Sub-settings.
    objects: ObjectStoreSettings = group(ObjectStoreSettings, "Object store")
    vectors: VectorStoreSettings = group(VectorStoreSettings, "Vector store")
    netguard: NetGuardSettings = group(NetGuardSettings, "Network guard")
    indexer: IndexerSettings = group(IndexerSettings, "Indexer")
    persons: PersonsSettings = group(PersonsSettings, "Persons")
    recognizer: RecognizerSettings = group(RecognizerSettings, "Recognizer")
    crawler: CrawlerSettings = group(CrawlerSettings, "Crawler service")
    crawl: CrawlConfig = group(CrawlConfig, "Crawl defaults")
    auth: AuthSettings = group(AuthSettings, "Authentication")
    tls: TlsSettings = group(TlsSettings, "TLS of gRPC")
    nats_tls: NatsTlsSettings = group(NatsTlsSettings, "TLS of NATS")
    privacy: PrivacySettings = group(PrivacySettings, "Audit log, access log and opt-out")
    clients: ClientSettings = group(ClientSettings, "Command line")
    web: WebSettings = group(WebSettings, "Web service")

    def __post_init__(self) -> None:
        check_fields(self)

    @classmethod
    def from_env(
        cls, service: str = "facepipe", env: Mapping[str, str] | None = None, **overrides: Any
    ) -> Settings:
        """The settings of ``service`` from ``env`` (default: the process environment).

        ``overrides`` (e.g. CLI flags) win unless None. ``FACEPIPE_HOME`` is resolved once
        here, and every folder under it follows an overridden ``home`` too.
        """
        env = _env(env)
        home = overrides.get("home") or resolve_home(env)
        s = load(cls, env, home, **{**overrides, "service": service, "home": home})
        if not s.grpc_port:
            s = dataclasses.replace(s, grpc_port=DEFAULT_PORTS.get(service, FALLBACK_PORT))
        if not s.http_port:
            s = dataclasses.replace(s, http_port=s.grpc_port + HTTP_PORT_OFFSET)
        return s

    @property
    def resolved_models_dir(self) -> Path:
        return self.models_dir or (self.home / "models" / self.model_pack)


# --- the README's settings table -------------------------------------------------------------

README_BEGIN = "<!-- settings:begin (generated by python -m facepipe.config --write-readme README.md) -->"
README_END = "<!-- settings:end -->"
_README_BLOCK = re.compile(re.escape(README_BEGIN) + r"\n.*?" + re.escape(README_END), re.DOTALL)


def _shown_default(cls: type, f: dataclasses.Field) -> str:
    if f.metadata.get("shown"):
        return f.metadata["shown"]
    if f.metadata.get("under_home"):
        return f"$FACEPIPE_HOME/{f.metadata['under_home']}"
    value = f.default_factory() if f.default is dataclasses.MISSING else f.default
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(value)
    if value is None or value == "":
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _rows(cls: type, listed: set[str]) -> list[tuple[str, str, str]]:
    """The table rows of ``cls``; a variable already ``listed`` in an earlier table is left out."""
    rows = []
    for f in dataclasses.fields(cls):
        name = env_name(cls, f)
        if name is None or name in listed:
            continue
        listed.add(name)
        vars_ = " ".join(f"`{v}`" for v in (name, *f.metadata.get("aliases", ())))
        default = _shown_default(cls, f)
        rows.append((vars_, f"`{default}`" if default else "", f.metadata["help"].replace("|", "\\|")))
    return rows


def settings_markdown() -> str:
    """The settings as markdown: one table per group, variable, default and meaning."""
    sections = [("Service", Settings)] + [
        (f.metadata["help"], f.metadata["group"])
        for f in dataclasses.fields(Settings)
        if f.metadata.get("group")
    ]
    parts = []
    listed: set[str] = set()
    for title, cls in sections:
        lines = [f"**{title}**", "", "| Variable | Default | Meaning |", "| --- | --- | --- |"]
        lines += [f"| {v} | {d} | {m} |" for v, d, m in _rows(cls, listed)]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def readme_block() -> str:
    """The generated table between its markers, as it stands in README.md."""
    return f"{README_BEGIN}\n{settings_markdown()}{README_END}"


def update_readme(path: Path) -> bool:
    """Rewrites the settings block of the README at ``path``; True when it changed."""
    text = path.read_text()
    if not _README_BLOCK.search(text):
        raise ValueError(f"{path} has no settings block ({README_BEGIN} ... {README_END})")
    updated = _README_BLOCK.sub(lambda _: readme_block(), text)
    if updated != text:
        path.write_text(updated)
    return updated != text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m facepipe.config", description="Print or check facepipe's settings."
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--markdown", action="store_true", help="print the settings table as markdown")
    action.add_argument("--write-readme", metavar="PATH", help="rewrite the settings block of a README")
    args = parser.parse_args(argv)
    if args.markdown:
        sys.stdout.write(settings_markdown())
        return 0
    try:
        changed = update_readme(Path(args.write_readme))
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.write_readme}: {'updated' if changed else 'already up to date'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
