"""The sink's read-only SQL endpoint: ``POST /query`` and ``GET /health`` (aiohttp).

Only the sink may open the embedded chDB path, so other processes (``oms sql``, the client
SDK) read through here. Queries run on a dedicated ``readonly=1`` client in a worker thread.

With desks configured, every request carries a desk's (or the operator's) bearer token
(:mod:`oms.sinks.access`) and a desk's SQL is rewritten to its own accounts' rows
(:mod:`oms.sinks.scope`) before anything runs. Refusals answer
``{"error": "...", "reason": "<code>"}``: 401 for a missing or unknown token, 403 for SQL a
desk may not run, 400 for SQL that does not parse or fails in ClickHouse.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web
from clickhouse_connect.driver.client import Client

from oms.sinks.access import AccessDenied, QueryAccess
from oms.sinks.errors import QueryError, ReadOnlyViolation
from oms.sinks.query import execute_readonly
from oms.sinks.scope import EVERYTHING, ScopeViolation

MAX_BODY_BYTES = 1 << 20


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _bad_request(message: str) -> web.Response:
    return _json({"error": message, "reason": "bad_request"}, 400)


# Reasons that mean the SQL itself is malformed rather than not allowed.
BAD_REQUEST_REASONS = frozenset({"parse_error", "multiple_statements"})


def refusal(exc: QueryError) -> web.Response:
    """The JSON answer for a refused or failed query (never echoes a token)."""
    if isinstance(exc, AccessDenied):
        return _json({"error": str(exc), "reason": exc.reason}, exc.status)
    if isinstance(exc, ScopeViolation):
        status = 400 if exc.reason in BAD_REQUEST_REASONS else 403
        return _json({"error": str(exc), "reason": exc.reason}, status)
    if isinstance(exc, ReadOnlyViolation):
        return _json({"error": str(exc), "reason": "read_only"}, 400)
    return _json({"error": str(exc), "reason": "query_failed"}, 400)


def make_app(
    client: Client,
    health: Callable[[], dict[str, Any]] | None = None,
    access: QueryAccess | None = None,
) -> web.Application:
    """The endpoint app over a read-only client; ``access`` (None: open, as without desks)
    decides whose rows each request may read.

    Body: ``{"sql": "...", "parameters": {...}}`` as JSON, or the SQL as plain text.
    Answers ``{"columns", "types", "rows", "elapsed_ms"}``, or ``{"error", "reason"}``.
    """

    async def query(request: web.Request) -> web.Response:
        try:
            scope = access.scope_for(request.headers.get("Authorization")) if access else EVERYTHING
        except AccessDenied as exc:
            return refusal(exc)
        raw = await request.read()
        parameters: dict[str, Any] | None = None
        if request.content_type == "application/json":
            try:
                body = orjson.loads(raw)
                sql = body["sql"]
                parameters = body.get("parameters") or None
            except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
                return _bad_request('expected JSON {"sql": "...", "parameters": {}}')
        else:
            sql = raw.decode("utf-8", errors="replace")
        if not isinstance(sql, str) or not isinstance(parameters, dict | None):
            return _bad_request("sql must be a string and parameters an object")
        try:
            result = await asyncio.to_thread(execute_readonly, client, sql, parameters, scope)
        except QueryError as exc:
            return refusal(exc)
        return web.Response(body=result.model_dump_json(), content_type="application/json")

    async def health_view(_: web.Request) -> web.Response:
        return _json({"status": "ok", **(health() if health else {})})

    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_post("/query", query)
    app.router.add_get("/health", health_view)
    return app


async def start_query_server(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Listen on ``host:port``; stop with ``await runner.cleanup()``."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
