"""The crawler: walks sites politely and finds every real image on them."""

from services.crawler.config import CrawlConfig, parse_sites_file
from services.crawler.engine import Progress, Sink, SinkError, crawl
from services.crawler.models import Candidate, CrawlError, CrawlReport
from services.crawler.state import CrawlState, MemoryCrawlState, NatsCrawlState, SeenEntry

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
    "parse_sites_file",
]
