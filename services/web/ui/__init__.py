"""The browser UI: server-rendered pages under /ui/ (and /login, /logout)."""

from __future__ import annotations

from fastapi import APIRouter

from . import admin, pages, persons, recognition

ui_router = APIRouter(include_in_schema=False)
for module in (pages, persons, admin, recognition):
    ui_router.include_router(module.router)
