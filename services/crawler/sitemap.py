"""sitemap.xml and sitemap index parsing (plain or gzipped)."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from xml.etree import ElementTree

MAX_SITEMAP_BYTES = 50 * 1024 * 1024  # the sitemaps.org limit, uncompressed


@dataclass
class Sitemap:
    pages: list[str] = field(default_factory=list)
    # Child sitemaps of a sitemap index.
    sitemaps: list[str] = field(default_factory=list)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_sitemap(body: bytes) -> Sitemap:
    """Page and child-sitemap URLs of a sitemap document. Raises ValueError on a
    document that is not sitemap XML."""
    if body[:2] == b"\x1f\x8b":
        # Bounded, so a small gzip bomb cannot fill memory.
        try:
            body = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(body, MAX_SITEMAP_BYTES + 1)
        except zlib.error as exc:
            raise ValueError(f"bad gzip data: {exc}") from exc
        if len(body) > MAX_SITEMAP_BYTES:
            raise ValueError("sitemap is over the size limit")
    # The sitemap format has no DTD; refusing one keeps entity tricks out.
    if b"<!DOCTYPE" in body[:2048] or b"<!ENTITY" in body:
        raise ValueError("sitemap has a DTD")
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError as exc:
        raise ValueError(f"not XML: {exc}") from exc
    kind = _local(root.tag)
    if kind not in ("urlset", "sitemapindex"):
        raise ValueError(f"root element <{kind}> is neither <urlset> nor <sitemapindex>")
    found = Sitemap()
    target = found.pages if kind == "urlset" else found.sitemaps
    for entry in root:
        for child in entry:
            if _local(child.tag) == "loc" and child.text and child.text.strip():
                target.append(child.text.strip())
    return found
