"""The notifier's HTTP endpoints: ``/health``, ``/stats`` (JSON) and ``/metrics``
(Prometheus, see :mod:`oms.notify.prometheus`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from oms.notify.prometheus import CONTENT_TYPE as PROMETHEUS_CONTENT_TYPE
from oms.notify.prometheus import render as render_prometheus


class StatusServer:
    """Serves what ``stats`` returns; ``ready`` says whether the notifier has started."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        stats: Callable[[], dict[str, Any]],
        ready: Callable[[], bool],
    ) -> None:
        self._host = host
        self._port = port
        self._stats = stats
        self._ready = ready
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Listen on ``host:port``."""
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/stats", self._stats_json)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "ready": self._ready()})

    async def _stats_json(self, request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(self._stats()), content_type="application/json")

    async def _metrics(self, request: web.Request) -> web.Response:
        body = render_prometheus(self._stats())
        return web.Response(body=body, headers={"Content-Type": PROMETHEUS_CONTENT_TYPE})
