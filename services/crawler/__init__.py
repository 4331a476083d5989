"""The crawler: walks sites politely and finds every real image on them."""

from facepipe.config import CrawlConfig

from .engine import Progress, Sink, SinkError, crawl
from .models import Candidate, CrawlError, CrawlReport
from .state import CrawlState, MemoryCrawlState, NatsCrawlState, SeenEntry

__all__ = [
    "Candidate",
    "CrawlConfig",
    "CrawlError",
    "CrawlReport",
    "CrawlState",
    "MemoryCrawlState",
    "NatsCrawlState",
    "Progress",
    "Sink",
    "SeenEntry",
    "SinkError",
    "crawl",
]
