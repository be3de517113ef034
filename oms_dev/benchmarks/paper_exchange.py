"""Order rate of the paper exchange: ``python -m oms_dev.benchmarks.paper_exchange``.

Starts ``oms paper-exchange`` as its own process (or uses ``--url``), opens ``--connections``
WebSocket connections, one account each, and keeps ``--inflight`` request chains running on
each for ``--seconds``. A chain repeats: a resting limit order far from the market, its
cancel, a market buy and a market sell (both fill against the synthetic market maker, so
every cycle writes orders, trades, positions and balances). Prints requests/s, orders/s and
reply latency percentiles as one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from oms_dev.devstack.net import free_port

PERP = "BTC-PERPETUAL"


class Connection:
    """One pipelined JSON-RPC connection."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = orjson.loads(msg.data)
            fut = self.pending.pop(data.get("id"), None)
            if fut is not None and not fut.done():
                fut.set_result(data)

    async def call(self, method: str, check: bool = True, **params: Any) -> dict[str, Any]:
        req_id = next(self.ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[req_id] = fut
        body = {"jsonrpc": "2.0", "id": req_id, "method": method, "params": params}
        await self.ws.send_bytes(orjson.dumps(body))
        response = await asyncio.wait_for(fut, 30)
        if check and "error" in response:
            raise RuntimeError(f"{method}: {response['error']}")
        return response


async def _chain(
    conn: Connection, rest_price: float, until: float, latencies: list[float], counts: list[int]
) -> None:
    while time.monotonic() < until:
        t0 = time.perf_counter()
        placed = await conn.call("private/buy", instrument_name=PERP, amount=10, price=rest_price)
        t1 = time.perf_counter()
        # Unchecked: market orders of other chains may sweep the book down to it first.
        await conn.call(
            "private/cancel", check=False, order_id=placed["result"]["order"]["order_id"]
        )
        t2 = time.perf_counter()
        await conn.call("private/buy", instrument_name=PERP, amount=10, type="market")
        t3 = time.perf_counter()
        await conn.call("private/sell", instrument_name=PERP, amount=10, type="market")
        t4 = time.perf_counter()
        latencies.extend((t1 - t0, t2 - t1, t3 - t2, t4 - t3))
        counts[0] += 4
        counts[1] += 3


async def run(url: str, seconds: float, connections: int, inflight: int) -> dict[str, Any]:
    """Drive the exchange at ``url`` and return the figures."""
    latencies: list[float] = []
    counts = [0, 0]  # requests, orders
    async with aiohttp.ClientSession() as http:
        conns = []
        for i in range(connections):
            ws = await http.ws_connect(url, max_msg_size=1 << 22)
            conn = Connection(ws)
            await conn.call(
                "public/auth", grant_type="client_credentials",
                client_id=f"bench-{i}", client_secret="bench",
            )
            conns.append(conn)
        ticker = await conns[0].call("public/ticker", instrument_name=PERP)
        rest_price = round(ticker["result"]["mark_price"] * 0.985 * 2) / 2
        start = time.monotonic()
        until = start + seconds
        await asyncio.gather(
            *(
                _chain(conn, rest_price, until, latencies, counts)
                for conn in conns
                for _ in range(inflight)
            )
        )
        elapsed = time.monotonic() - start
        stats = await conns[0].call("admin/get_stats", include_labels=False)
        for conn in conns:
            await conn.ws.close()
            conn.reader.cancel()
    latencies.sort()

    def pct(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 2)

    return {
        "seconds": round(elapsed, 2),
        "connections": connections,
        "inflight": inflight,
        "requests": counts[0],
        "requests_per_s": round(counts[0] / elapsed),
        "orders_per_s": round(counts[1] / elapsed),
        "latency_ms_p50": pct(0.5),
        "latency_ms_p99": pct(0.99),
        "journal": stats["result"].get("journal"),
    }


async def _wait_listening(port: int, proc: asyncio.subprocess.Process, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise RuntimeError("the paper exchange exited before listening")
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        await asyncio.sleep(0.1)
    raise TimeoutError("the paper exchange did not listen in time")


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    if args.url:
        return await run(args.url, args.seconds, args.connections, args.inflight)
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(args.data_dir or tmp)
        env = {**os.environ, "OMS_DATA_DIR": str(data_dir), "OMS_LOG_LEVEL": "warning"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "oms.cli.main", "paper-exchange", "--port", str(port),
            "--no-rate-limits", *args.exchange_arg,
            env=env, start_new_session=True,
        )
        try:
            await _wait_listening(port, proc)
            figures = await run(
                f"ws://127.0.0.1:{port}/ws/api/v2", args.seconds, args.connections, args.inflight
            )
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 30)
        return figures


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="an already running exchange (ws://.../ws/api/v2)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--inflight", type=int, default=8, help="request chains per connection")
    parser.add_argument("--data-dir", help="OMS_DATA_DIR of the started exchange (default: temp)")
    parser.add_argument(
        "--exchange-arg", action="append", default=[],
        help="extra argument for oms paper-exchange (repeatable)",
    )
    figures = asyncio.run(main_async(parser.parse_args()))
    print(orjson.dumps(figures).decode())


if __name__ == "__main__":
    main()
