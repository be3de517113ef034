"""The sink's read-only SQL endpoint: ``POST /query`` and ``GET /health`` (aiohttp).

Only the sink may open the embedded chDB path, so other processes (``oms sql``, the client
SDK) read through here. Queries run on a dedicated ``readonly=1`` client in a worker thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web
from clickhouse_connect.driver.client import Client

from oms.sinks.errors import QueryError
from oms.sinks.query import execute_readonly

MAX_BODY_BYTES = 1 << 20


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def make_app(client: Client, health: Callable[[], dict[str, Any]] | None = None) -> web.Application:
    """The endpoint app over a read-only client.

    Body: ``{"sql": "...", "parameters": {...}}`` as JSON, or the SQL as plain text.
    Answers ``{"columns", "types", "rows", "elapsed_ms"}``, or ``{"error"}`` with 400.
    """

    async def query(request: web.Request) -> web.Response:
        raw = await request.read()
        parameters: dict[str, Any] | None = None
        if request.content_type == "application/json":
            try:
                body = orjson.loads(raw)
                sql = body["sql"]
                parameters = body.get("parameters") or None
            except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
                return _json({"error": 'expected JSON {"sql": "...", "parameters": {}}'}, 400)
        else:
            sql = raw.decode("utf-8", errors="replace")
        if not isinstance(sql, str) or not isinstance(parameters, dict | None):
            return _json({"error": "sql must be a string and parameters an object"}, 400)
        try:
            result = await asyncio.to_thread(execute_readonly, client, sql, parameters)
        except QueryError as exc:
            return _json({"error": str(exc)}, 400)
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
