"""The REST API under /api/v1/: one router per area."""

from __future__ import annotations

from fastapi import APIRouter

from . import admin, compreface, crawls, ingest, objects, persons, recognition, search

api_router = APIRouter()
for module in (search, persons, ingest, crawls, admin, objects, recognition, compreface):
    api_router.include_router(module.router)
