from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RenderMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RENDER_MODE_UNSPECIFIED: _ClassVar[RenderMode]
    RENDER_MODE_AUTO: _ClassVar[RenderMode]
    RENDER_MODE_NEVER: _ClassVar[RenderMode]
    RENDER_MODE_ALWAYS: _ClassVar[RenderMode]

class CrawlStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CRAWL_STATUS_UNSPECIFIED: _ClassVar[CrawlStatus]
    CRAWL_STATUS_QUEUED: _ClassVar[CrawlStatus]
    CRAWL_STATUS_RUNNING: _ClassVar[CrawlStatus]
    CRAWL_STATUS_DONE: _ClassVar[CrawlStatus]
    CRAWL_STATUS_CANCELLED: _ClassVar[CrawlStatus]
    CRAWL_STATUS_FAILED: _ClassVar[CrawlStatus]
RENDER_MODE_UNSPECIFIED: RenderMode
RENDER_MODE_AUTO: RenderMode
RENDER_MODE_NEVER: RenderMode
RENDER_MODE_ALWAYS: RenderMode
CRAWL_STATUS_UNSPECIFIED: CrawlStatus
CRAWL_STATUS_QUEUED: CrawlStatus
CRAWL_STATUS_RUNNING: CrawlStatus
CRAWL_STATUS_DONE: CrawlStatus
CRAWL_STATUS_CANCELLED: CrawlStatus
CRAWL_STATUS_FAILED: CrawlStatus

class StartCrawlRequest(_message.Message):
    __slots__ = ("seeds", "tenant_id", "max_pages", "max_depth", "render_mode", "same_site")
    SEEDS_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_PAGES_FIELD_NUMBER: _ClassVar[int]
    MAX_DEPTH_FIELD_NUMBER: _ClassVar[int]
    RENDER_MODE_FIELD_NUMBER: _ClassVar[int]
    SAME_SITE_FIELD_NUMBER: _ClassVar[int]
    seeds: _containers.RepeatedScalarFieldContainer[str]
    tenant_id: str
    max_pages: int
    max_depth: int
    render_mode: RenderMode
    same_site: bool
    def __init__(self, seeds: _Optional[_Iterable[str]] = ..., tenant_id: _Optional[str] = ..., max_pages: _Optional[int] = ..., max_depth: _Optional[int] = ..., render_mode: _Optional[_Union[RenderMode, str]] = ..., same_site: _Optional[bool] = ...) -> None: ...

class StartCrawlResponse(_message.Message):
    __slots__ = ("job_id", "status")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    status: CrawlStatus
    def __init__(self, job_id: _Optional[str] = ..., status: _Optional[_Union[CrawlStatus, str]] = ...) -> None: ...

class GetCrawlRequest(_message.Message):
    __slots__ = ("job_id", "max_candidates")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    max_candidates: int
    def __init__(self, job_id: _Optional[str] = ..., max_candidates: _Optional[int] = ...) -> None: ...

class CrawlError(_message.Message):
    __slots__ = ("url", "kind", "message")
    URL_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    url: str
    kind: str
    message: str
    def __init__(self, url: _Optional[str] = ..., kind: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class GetCrawlResponse(_message.Message):
    __slots__ = ("job_id", "tenant_id", "status", "seeds", "pages_crawled", "pages_rendered", "candidates_count", "candidates", "skipped_robots", "skipped_robots_urls", "errors_count", "errors", "error", "created_at_ms", "started_at_ms", "finished_at_ms", "attempts", "cancel_requested", "max_pages", "max_depth", "render_mode", "same_site")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SEEDS_FIELD_NUMBER: _ClassVar[int]
    PAGES_CRAWLED_FIELD_NUMBER: _ClassVar[int]
    PAGES_RENDERED_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_COUNT_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_ROBOTS_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_ROBOTS_URLS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_COUNT_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    MAX_PAGES_FIELD_NUMBER: _ClassVar[int]
    MAX_DEPTH_FIELD_NUMBER: _ClassVar[int]
    RENDER_MODE_FIELD_NUMBER: _ClassVar[int]
    SAME_SITE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    tenant_id: str
    status: CrawlStatus
    seeds: _containers.RepeatedScalarFieldContainer[str]
    pages_crawled: int
    pages_rendered: int
    candidates_count: int
    candidates: _containers.RepeatedScalarFieldContainer[str]
    skipped_robots: int
    skipped_robots_urls: _containers.RepeatedScalarFieldContainer[str]
    errors_count: int
    errors: _containers.RepeatedCompositeFieldContainer[CrawlError]
    error: str
    created_at_ms: int
    started_at_ms: int
    finished_at_ms: int
    attempts: int
    cancel_requested: bool
    max_pages: int
    max_depth: int
    render_mode: RenderMode
    same_site: bool
    def __init__(self, job_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., status: _Optional[_Union[CrawlStatus, str]] = ..., seeds: _Optional[_Iterable[str]] = ..., pages_crawled: _Optional[int] = ..., pages_rendered: _Optional[int] = ..., candidates_count: _Optional[int] = ..., candidates: _Optional[_Iterable[str]] = ..., skipped_robots: _Optional[int] = ..., skipped_robots_urls: _Optional[_Iterable[str]] = ..., errors_count: _Optional[int] = ..., errors: _Optional[_Iterable[_Union[CrawlError, _Mapping]]] = ..., error: _Optional[str] = ..., created_at_ms: _Optional[int] = ..., started_at_ms: _Optional[int] = ..., finished_at_ms: _Optional[int] = ..., attempts: _Optional[int] = ..., cancel_requested: _Optional[bool] = ..., max_pages: _Optional[int] = ..., max_depth: _Optional[int] = ..., render_mode: _Optional[_Union[RenderMode, str]] = ..., same_site: _Optional[bool] = ...) -> None: ...

class CancelCrawlRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CancelCrawlResponse(_message.Message):
    __slots__ = ("job_id", "status")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    status: CrawlStatus
    def __init__(self, job_id: _Optional[str] = ..., status: _Optional[_Union[CrawlStatus, str]] = ...) -> None: ...

class CrawlJob(_message.Message):
    __slots__ = ("job_id", "tenant_id", "seeds", "max_pages", "max_depth", "render_mode", "same_site", "created_at_ms")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SEEDS_FIELD_NUMBER: _ClassVar[int]
    MAX_PAGES_FIELD_NUMBER: _ClassVar[int]
    MAX_DEPTH_FIELD_NUMBER: _ClassVar[int]
    RENDER_MODE_FIELD_NUMBER: _ClassVar[int]
    SAME_SITE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    tenant_id: str
    seeds: _containers.RepeatedScalarFieldContainer[str]
    max_pages: int
    max_depth: int
    render_mode: RenderMode
    same_site: bool
    created_at_ms: int
    def __init__(self, job_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., seeds: _Optional[_Iterable[str]] = ..., max_pages: _Optional[int] = ..., max_depth: _Optional[int] = ..., render_mode: _Optional[_Union[RenderMode, str]] = ..., same_site: _Optional[bool] = ..., created_at_ms: _Optional[int] = ...) -> None: ...
