"""robots.txt, fetched once per origin through the guarded fetcher."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from urllib.robotparser import RobotFileParser

from .fetch import Fetcher, FetchError
from .urls import origin

MAX_ROBOTS_BYTES = 512 * 1024
# Kinds of FetchError that mean the site itself may not be crawled.
FATAL_KINDS = frozenset({"blocked", "dns"})


@dataclass
class RobotsRules:
    parser: RobotFileParser
    user_agent: str
    sitemaps: list[str] = field(default_factory=list)
    crawl_delay: float | None = None
    # Set when robots.txt could not be read and everything is disallowed.
    problem: str | None = None

    def allowed(self, url: str) -> bool:
        return self.parser.can_fetch(self.user_agent, url)


def parse_robots(text: str, user_agent: str) -> RobotsRules:
    parser = RobotFileParser()
    parser.parse(text.splitlines())
    delay = parser.crawl_delay(user_agent)
    return RobotsRules(
        parser=parser,
        user_agent=user_agent,
        sitemaps=list(parser.site_maps() or []),
        crawl_delay=float(delay) if delay is not None else None,
    )


def _disallow_all(user_agent: str, problem: str) -> RobotsRules:
    rules = parse_robots("", user_agent)
    rules.parser.disallow_all = True
    rules.problem = problem
    return rules


class RobotsCache:
    def __init__(self, fetcher: Fetcher, user_agent: str) -> None:
        self.fetcher = fetcher
        self.user_agent = user_agent
        self._rules: dict[str, asyncio.Task[RobotsRules]] = {}

    async def rules(self, url: str) -> RobotsRules:
        """Rules for ``url``'s origin. Raises FetchError when the origin is refused
        outright (private address, unresolvable host)."""
        key = origin(url)
        task = self._rules.get(key)
        if task is None:
            # A shared task: concurrent callers wait for one fetch.
            task = self._rules[key] = asyncio.ensure_future(self._load(key))
        return await asyncio.shield(task)

    async def _load(self, origin_url: str) -> RobotsRules:
        robots_url = f"{origin_url}/robots.txt"
        try:
            result = await self.fetcher.fetch(robots_url, max_bytes=MAX_ROBOTS_BYTES, want=None)
        except FetchError as exc:
            if exc.kind in FATAL_KINDS:
                raise
            if exc.kind in ("redirects", "redirect_loop"):
                # RFC 9309: too many redirects reads as "unavailable", which allows all.
                return parse_robots("", self.user_agent)
            return _disallow_all(
                self.user_agent, f"{robots_url}: {exc.message}; treating the site as disallowed"
            )
        if 200 <= result.status < 300 and result.body is not None:
            return parse_robots(result.body.decode("utf-8", errors="replace"), self.user_agent)
        # 4xx: no rules.
        return parse_robots("", self.user_agent)

    def close(self) -> None:
        for task in self._rules.values():
            task.cancel()
