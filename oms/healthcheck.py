"""Container health check: ``python -m oms.healthcheck [auto|worker|sink|...]``
(also paper, gateway, notify, positions, fanout).

Exit 0 when the service answers, 1 otherwise. ``auto`` (the Dockerfile's HEALTHCHECK) reads
the service from PID 1's command line (``oms worker`` -> worker), so one image-level check
serves every service.
"""

from __future__ import annotations

import socket
import sys
import urllib.request
from pathlib import Path

from oms.settings import get_settings


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _tcp_ok(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=3):
            return True
    except OSError:
        return False


def _detect() -> str:
    try:
        args = Path("/proc/1/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "unknown"
    for service in (
        b"worker",
        b"sink",
        b"paper-exchange",
        b"gateway",
        b"notify",
        b"positions",
        b"fanout",
    ):
        if service in args:
            return service.decode()
    return "unknown"


def check(service: str) -> bool:
    """True when ``service`` (worker, sink, paper-exchange, gateway, notify, positions,
    fanout) is healthy."""
    s = get_settings()
    if service == "auto":
        service = _detect()
    if service == "worker":
        return _http_ok(f"http://127.0.0.1:{s.worker.web_port}/health")
    if service == "sink":
        return _http_ok(f"http://127.0.0.1:{s.sink.query_port}/health")
    if service == "notify":
        return _http_ok(f"http://127.0.0.1:{s.notify.web_port}/health")
    if service == "positions":
        return _http_ok(f"http://127.0.0.1:{s.positions.web_port}/health")
    if service in ("paper", "paper-exchange"):
        return _tcp_ok("127.0.0.1", s.paper.port)
    # The gateway and the fan-out serve nothing; being alive (PID 1 runs it) is all a probe
    # can see (the fan-out exits when it cannot start).
    return service in ("gateway", "fanout")


def main() -> int:
    """Entry point; prints nothing on success (Docker keeps the output)."""
    service = sys.argv[1] if len(sys.argv) > 1 else "auto"
    ok = check(service)
    if not ok:
        print(f"{service}: unhealthy")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
