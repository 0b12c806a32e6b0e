"""The browser playground: ``GET /playground`` (one static HTML/JS page, no build step) and
``GET /v1/databases`` (the configured databases it offers).

The page is served from the app's own origin. It holds no data and is open like ``/docs``; every request
it sends (``/v1/databases``, ``/v1/sql``) carries the bearer token typed into it (kept in the tab's
session storage), so the data stays behind the same authentication as the API.
"""

from __future__ import annotations

import functools
from importlib import resources

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from sqltune.errors import SqltuneError
from sqltune.serving.state import AppState
from sqltune.sql import engine_of

PLAYGROUND_PATH = "/playground"


@functools.lru_cache(maxsize=1)
def playground_html() -> str:
    return resources.files("sqltune.serving").joinpath("static/playground.html").read_text(encoding="utf-8")


def add_playground_routes(app: FastAPI, state: AppState) -> None:
    args = state.args

    @app.get("/v1/databases", tags=["sql"], summary="The databases configured on the server (name and dialect).")
    async def databases():
        out = []
        for name, location in sorted(args.databases.items()):
            try:
                dialect = engine_of(location)
            except SqltuneError:
                dialect = "unavailable"
            out.append({"name": name, "dialect": dialect})
        return {"databases": out, "model": args.served_name}

    if args.playground:

        @app.get(PLAYGROUND_PATH, include_in_schema=False)
        async def playground():
            return HTMLResponse(playground_html(), headers={"Cache-Control": "no-cache"})


__all__ = ["PLAYGROUND_PATH", "add_playground_routes", "playground_html"]
