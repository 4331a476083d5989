"""Finds image candidates and links in an HTML document."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

from .models import Candidate
from .urls import is_image_url, normalize_url, not_a_photo

# Image attributes of <img>, most specific first: lazy loaders keep the real image
# in data-* and a placeholder in src/srcset.
_IMG_SRCSETS = (("data-srcset", "img-data-srcset"), ("srcset", "img-srcset"))
_IMG_SRCS = (
    ("data-lazy-src", "img-data-lazy-src"),
    ("data-src", "img-data-src"),
    ("data-original", "img-data-original"),
    ("src", "img-src"),
)
_META_IMAGES = {
    "og:image": "og:image",
    "og:image:url": "og:image",
    "og:image:secure_url": "og:image",
    "twitter:image": "twitter:image",
    "twitter:image:src": "twitter:image",
}
_CSS_BACKGROUND = re.compile(r"background(?:-image)?\s*:([^;}]*)", re.I)
_CSS_URL = re.compile(r"""url\(\s*(["']?)(.*?)\1\s*\)""", re.I)
_LENGTH = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(?:px)?\s*$", re.I)
_STYLE_SIZE = re.compile(r"(?:^|;)\s*(width|height)\s*:\s*([^;]+)", re.I)


@dataclass
class PageMine:
    candidates: list[Candidate] = field(default_factory=list)
    # Absolute, normalised links to follow (not yet filtered by site or type).
    links: list[str] = field(default_factory=list)
    # Every image URL the markup mentions, chosen or not (all srcset entries, placeholders).
    image_refs: set[str] = field(default_factory=set)


def parse_srcset(value: str) -> list[tuple[str, float, str]]:
    """(url, size, unit) per srcset entry; unit is "w" or "x" (1x when absent)."""
    entries: list[tuple[str, float, str]] = []
    pos, n = 0, len(value)
    while pos < n:
        while pos < n and (value[pos].isspace() or value[pos] == ","):
            pos += 1
        start = pos
        while pos < n and not value[pos].isspace():
            pos += 1
        url = value[start:pos]
        descriptor = ""
        if url.endswith(","):
            url = url.rstrip(",")
        else:
            end = value.find(",", pos)
            end = n if end < 0 else end
            descriptor = value[pos:end].strip().lower()
            pos = end + 1
        if not url:
            continue
        size, unit = 1.0, "x"
        for token in descriptor.split():
            if token[-1:] in ("w", "x"):
                try:
                    size, unit = float(token[:-1]), token[-1]
                except ValueError:
                    pass
        entries.append((url, size, unit))
    return entries


def largest_in_srcset(value: str) -> str | None:
    entries = parse_srcset(value)
    if not entries:
        return None
    # Width descriptors say more than densities; when present, they decide.
    unit = "w" if any(e[2] == "w" for e in entries) else "x"
    return max((e for e in entries if e[2] == unit), key=lambda e: e[1])[0]


def _length(value: str | None) -> int | None:
    if not value:
        return None
    match = _LENGTH.match(value)
    return int(float(match.group(1))) if match else None


def _css_background_urls(css: str) -> list[str]:
    return [m.group(2) for decl in _CSS_BACKGROUND.finditer(css) for m in _CSS_URL.finditer(decl.group(1))]


@dataclass
class _Ref:
    raw: str
    source: str
    alt: str


class _Miner(HTMLParser):
    def __init__(self, min_side: int) -> None:
        super().__init__(convert_charrefs=True)
        self.min_side = min_side
        self.base: str | None = None
        self.refs: list[_Ref] = []
        self.mentions: list[str] = []
        self.links: list[str] = []
        self._picture_depth = 0
        self._style: list[str] | None = None

    def handle_starttag(self, tag: str, attr_list: list[tuple[str, str | None]]) -> None:
        attrs: dict[str, str] = {}
        for name, value in attr_list:
            attrs.setdefault(name, value or "")
        if tag == "base" and self.base is None and attrs.get("href"):
            self.base = attrs["href"]
        elif tag == "img":
            self._img(attrs)
        elif tag == "picture":
            self._picture_depth += 1
        elif tag == "source" and self._picture_depth:
            self._source(attrs)
        elif tag == "meta":
            key = (attrs.get("property") or attrs.get("name") or "").strip().lower()
            if key in _META_IMAGES and attrs.get("content"):
                self._add(attrs["content"], _META_IMAGES[key])
        elif tag == "link" and "image_src" in attrs.get("rel", "").lower().split() and attrs.get("href"):
            self._add(attrs["href"], "link-image_src")
        elif tag == "video" and attrs.get("poster"):
            self._add(attrs["poster"], "video-poster")
        elif tag in ("a", "area") and attrs.get("href"):
            href = attrs["href"]
            if is_image_url(href.split("#", 1)[0].split("?", 1)[0]):
                self._add(href, "a-href", attrs.get("title", ""))
            else:
                self.links.append(href)
        elif tag in ("iframe", "frame") and attrs.get("src"):
            self.links.append(attrs["src"])
        elif tag == "style":
            self._style = []
        if attrs.get("style"):
            for url in _css_background_urls(attrs["style"]):
                self._add(url, "css-inline")

    def handle_endtag(self, tag: str) -> None:
        if tag == "picture" and self._picture_depth:
            self._picture_depth -= 1
        elif tag == "style" and self._style is not None:
            for url in _css_background_urls("".join(self._style)):
                self._add(url, "css-style")
            self._style = None

    def handle_data(self, data: str) -> None:
        if self._style is not None:
            self._style.append(data)

    def _add(self, raw: str, source: str, alt: str = "") -> None:
        self.mentions.append(raw)
        self.refs.append(_Ref(raw, source, alt.strip()))

    def _too_small(self, attrs: dict[str, str]) -> bool:
        sizes = [_length(attrs.get("width")), _length(attrs.get("height"))]
        for _name, value in _STYLE_SIZE.findall(attrs.get("style", "")):
            sizes.append(_length(value))
        return any(size is not None and size < self.min_side for size in sizes)

    def _img(self, attrs: dict[str, str]) -> None:
        options: list[tuple[str, str]] = []
        for name, source in _IMG_SRCSETS:
            if attrs.get(name):
                self.mentions.extend(e[0] for e in parse_srcset(attrs[name]))
                largest = largest_in_srcset(attrs[name])
                if largest:
                    options.append((largest, source))
        for name, source in _IMG_SRCS:
            if attrs.get(name):
                self.mentions.append(attrs[name])
                options.append((attrs[name], source))
        if self._too_small(attrs):
            return
        # One candidate per <img>: its best usable URL.
        for raw, source in options:
            if not_a_photo(raw) is None:
                self.refs.append(_Ref(raw, source, attrs.get("alt", "").strip()))
                return

    def _source(self, attrs: dict[str, str]) -> None:
        for name in ("data-srcset", "srcset"):
            if attrs.get(name):
                self.mentions.extend(e[0] for e in parse_srcset(attrs[name]))
                largest = largest_in_srcset(attrs[name])
                if largest and not_a_photo(largest) is None:
                    self.refs.append(_Ref(largest, "picture-source", ""))
                    return


def mine_html(html: str, page_url: str, site: str, min_side: int = 64) -> PageMine:
    """Image candidates (one per distinct URL, first technique wins) and links of a page."""
    miner = _Miner(min_side)
    miner.feed(html)
    miner.close()
    base = normalize_url(miner.base, page_url) if miner.base else None
    base = base or page_url
    mine = PageMine()
    for raw in miner.mentions:
        url = normalize_url(raw, base)
        if url:
            mine.image_refs.add(url)
    seen: set[str] = set()
    for ref in miner.refs:
        url = normalize_url(ref.raw, base)
        if url is None or url in seen or not_a_photo(url) is not None:
            continue
        seen.add(url)
        mine.candidates.append(
            Candidate(url=url, page_url=page_url, alt=ref.alt, source=ref.source, site=site)
        )
    links = dict.fromkeys(u for u in (normalize_url(raw, base) for raw in miner.links) if u)
    mine.links = list(links)
    return mine
