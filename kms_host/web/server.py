"""The dashboard's HTTP side: aiohttp on its own listener (``[web] listen``), read-only.

Why aiohttp: the daemon is asyncio, and aiohttp's server is the maintained asyncio HTTP/1.1
implementation (keep-alive, limits on request lines and headers, HEAD); it runs on the
daemon's own loop, so a handler awaits the store like the service does. The store does its
SQLite work on its worker thread and the handlers turn rows into JSON or CSV in a thread of
their own (:func:`asyncio.to_thread`), so a poll never holds the loop that answers clients.

Routes: ``GET /`` the page and its two static files (package data, no build step),
``GET /api/status`` (:func:`kms_host.host.report.status_document`, ``status --json``'s
fields), ``GET /api/clients`` (``clients --json``'s rows, filtered and paged, or CSV) and
``GET /api/activations`` (:mod:`kms_host.web.feed`). With ``[web] token`` every request
needs ``Authorization: Bearer TOKEN`` (the page may be opened with ``?token=TOKEN`` and
sends it on); anything else is HTTP 401. The page's Content-Security-Policy allows only its
own script and style, a second guard beside rendering every value as text.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hmac
import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from kms_host.addresses import format_address
from kms_host.config import Config
from kms_host.errors import KmsHostError
from kms_host.host.report import client_row, host_now, status_document
from kms_host.policy.catalog import Catalog
from kms_host.storage import ClientRecord, ClientStore
from kms_host.web.feed import FEED_SIZE, ActivationFeed

__all__ = ["MAX_PAGE", "serve_web"]

log = structlog.get_logger("kms_host.web")

MAX_PAGE = 1000
"""Most client rows one JSON page holds (``limit``); CSV is unpaged unless asked."""

DEFAULT_PAGE = 100

_STATIC = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "style.css": "text/css",
}
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self';"
    " connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none';"
    " frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_CSV_COLUMNS = (
    "last_seen",
    "app",
    "machine_name",
    "cmid",
    "sku_name",
    "sku_id",
    "license_status",
    "protocol_version",
    "last_hresult",
    "request_count",
    "last_peer",
    "is_vm",
    "synthetic",
    "first_seen",
    "last_activated",
)


class QueryError(KmsHostError):
    """A request's query string cannot be used; it becomes HTTP 400 with this message."""


@dataclass(frozen=True, slots=True)
class _Filter:
    app: str | None
    product: str
    machine: str
    since_days: float | None
    offset: int
    limit: int | None
    csv: bool

    def keep(self, row: dict[str, Any]) -> bool:
        if self.machine and self.machine not in row["machine_name"].casefold():
            return False
        product = f"{row['sku_name'] or ''} {row['sku_id']}".casefold()
        return not self.product or self.product in product


def _number(query: dict[str, str], name: str, low: float, high: float) -> float | None:
    text = query.get(name, "")
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise QueryError(f"{name} must be a number, got {text!r}") from None
    if not low <= value <= high:
        raise QueryError(f"{name} must be from {low:g} to {high:g}, got {text!r}")
    return value


def _filter(query: dict[str, str]) -> _Filter:
    unknown = set(query) - {"app", "product", "machine", "since_days", "offset", "limit",
                            "format", "token"}  # fmt: skip
    if unknown:
        raise QueryError(f"unknown parameter {sorted(unknown)[0]!r}")
    form = query.get("format", "json")
    if form not in ("json", "csv"):
        raise QueryError(f"format must be 'json' or 'csv', got {form!r}")
    limit = _number(query, "limit", 1, MAX_PAGE)
    return _Filter(
        app=query.get("app") or None,
        product=query.get("product", "").strip().casefold(),
        machine=query.get("machine", "").strip().casefold(),
        since_days=_number(query, "since_days", 0, 36500),
        offset=int(_number(query, "offset", 0, 10**9) or 0),
        limit=int(limit) if limit else (None if form == "csv" else DEFAULT_PAGE),
        csv=form == "csv",
    )


def _page(records: list[ClientRecord], catalog: Catalog, wanted: _Filter) -> tuple[int, list[Any]]:
    """Rows of the filter, and how many matched in all; runs in a thread."""
    rows = [row for row in (client_row(r, catalog) for r in records) if wanted.keep(row)]
    end = None if wanted.limit is None else wanted.offset + wanted.limit
    return len(rows), rows[wanted.offset : end]


def _csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, _CSV_COLUMNS, extrasaction="ignore", lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _read_runtime(path: Path) -> dict[str, Any] | None:
    """This daemon's ``runtime.json`` (written once every socket is bound), if there yet."""
    try:
        document: dict[str, Any] = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return {**document, "running": True}


_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Api:
    def __init__(
        self,
        config: Config,
        *,
        catalog: Catalog,
        scope: frozenset[str],
        store: ClientStore,
        feed: ActivationFeed,
    ) -> None:
        self._config, self._catalog, self._scope = config, catalog, scope
        self._store, self._feed = store, feed
        self._static: dict[str, bytes] = {}

    async def load_static(self) -> None:
        files = resources.files("kms_host.web") / "static"
        for name in _STATIC:
            self._static[name] = await asyncio.to_thread((files / name).read_bytes)

    @web.middleware
    async def guard(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        token = self._config.web.token
        if token:
            given = request.headers.get("Authorization", "").removeprefix("Bearer ")
            given = given or request.query.get("token", "")
            if not hmac.compare_digest(given.encode(), token.encode()):
                log.info("web_unauthorized", peer=request.remote, path=request.path)
                raise web.HTTPUnauthorized(
                    text="a bearer token is required\n", headers={"WWW-Authenticate": "Bearer"}
                )
        try:
            response = await handler(request)
        except QueryError as exc:
            log.info("web_bad_request", peer=request.remote, path=request.path, detail=str(exc))
            response = web.json_response({"error": str(exc)}, status=400)
        response.headers.update(_SECURITY_HEADERS)
        return response

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info.get("name", "index.html")
        if name not in self._static:
            raise web.HTTPNotFound()
        return web.Response(body=self._static[name], content_type=_STATIC[name], charset="utf-8")

    async def status(self, request: web.Request) -> web.Response:
        runtime = self._config.storage.data_dir / "runtime.json"
        daemon = await asyncio.to_thread(_read_runtime, runtime)
        document = await status_document(
            self._config, self._catalog, self._store, scope=self._scope, daemon=daemon
        )
        return web.json_response(document)

    async def clients(self, request: web.Request) -> web.Response:
        wanted = _filter(dict(request.query))
        since = None
        if wanted.since_days is not None:
            since = host_now(self._config) - timedelta(days=wanted.since_days)
        records = await self._store.clients(app=wanted.app, since=since)
        total, rows = await asyncio.to_thread(_page, records, self._catalog, wanted)
        if wanted.csv:
            text = await asyncio.to_thread(_csv, rows)
            return web.Response(text=text, content_type="text/csv", charset="utf-8")
        limit = wanted.limit
        return web.json_response(
            {"total": total, "offset": wanted.offset, "limit": limit, "clients": rows}
        )

    async def activations(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        after = int(_number(query, "after", 0, 2**62) or 0)
        limit = int(_number(query, "limit", 1, FEED_SIZE) or FEED_SIZE)
        return web.json_response(
            {
                "available": self._feed.available,
                "activations": self._feed.recent(after=after, limit=limit),
            }
        )


@contextlib.asynccontextmanager
async def serve_web(
    config: Config,
    *,
    catalog: Catalog,
    scope: frozenset[str],
    store: ClientStore,
    feed: ActivationFeed,
) -> AsyncIterator[tuple[tuple[str, int], ...]]:
    """Serve the dashboard on ``[web] listen`` until the context exits; nothing when off.

    Bound before the context is entered (a port in use stops the start, as for metrics);
    yields the bound addresses.
    """
    listen = config.web.listen
    if listen is None:
        yield ()
        return
    api = _Api(config, catalog=catalog, scope=scope, store=store, feed=feed)
    await api.load_static()
    app = web.Application(middlewares=[api.guard])
    app.router.add_get("/", api.static)
    app.router.add_get("/static/{name}", api.static)
    app.router.add_get("/api/status", api.status)
    app.router.add_get("/api/clients", api.clients)
    app.router.add_get("/api/activations", api.activations)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, listen.host, listen.port).start()
        bound = tuple((str(a[0]), int(a[1])) for a in runner.addresses)
        log.info("web_listening", addresses=[format_address(a) for a in bound])
        yield bound
    finally:
        await runner.cleanup()
