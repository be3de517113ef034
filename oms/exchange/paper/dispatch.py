"""From a decoded JSON-RPC request to Deribit's response envelope: method lookup,
authentication, rate limits, fault knobs and the handler call."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from oms.exchange.paper import errors
from oms.exchange.paper.errors import RpcError
from oms.exchange.paper.methods import METHODS, State
from oms.exchange.paper.params import Params
from oms.exchange.paper.ratelimit import DEFAULT_TIER, RateLimiter
from oms.exchange.paper.session import Session

log = logging.getLogger("oms.paper")


@dataclass(slots=True)
class Outcome:
    """A response plus what the transport must do after sending it."""

    response: dict[str, Any]
    close: bool = False  # Deribit terminates the session after 10028
    delay_s: float = 0.0
    lost: bool = False  # fault: cut the connection instead of replying


def _us() -> int:
    return time.time_ns() // 1000


def _envelope(
    req_id: Any, us_in: int, result: Any = None, error: RpcError | None = None
) -> dict[str, Any]:
    us_out = _us()
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": req_id}
    if error is None:
        body["result"] = result
    else:
        body["error"] = error.to_dict()
    body["usIn"] = us_in
    body["usOut"] = us_out
    body["usDiff"] = us_out - us_in
    body["testnet"] = True
    return body


def error_response(req_id: Any, us_in: int, error: RpcError) -> dict[str, Any]:
    """Deribit's envelope for a request refused before any method ran."""
    return _envelope(req_id, us_in, error=error)


def handle(st: State, session: Session, msg: Any, http: bool = False, us_in: int = 0) -> Outcome:
    """Execute one request for ``session``; never raises."""
    us_in = us_in or _us()
    if not isinstance(msg, dict):
        return Outcome(_envelope(None, us_in, error=RpcError(errors.INVALID_REQUEST)))
    req_id = msg.get("id")
    name = msg.get("method")
    method = METHODS.get(name) if isinstance(name, str) else None
    if method is None:
        return Outcome(_envelope(req_id, us_in, error=RpcError(errors.METHOD_NOT_FOUND)))
    raw = msg.get("params")
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        return Outcome(_envelope(req_id, us_in, error=RpcError(errors.INVALID_PARAMS)))
    assert isinstance(name, str)
    counts = st.method_counts
    counts[name] = counts.get(name, 0) + 1
    try:
        if http and method.ws_only:
            raise RpcError(errors.MUST_BE_WEBSOCKET)
        if method.private and session.account is None:
            token = raw.get("access_token")
            account = st.accounts.by_access_token(token) if isinstance(token, str) else None
            if account is None:
                raise RpcError(errors.UNAUTHORIZED)
            session.account = account
        if not method.admin:
            if st.rate_limits:
                limiter = _limiter(session)
                if not limiter.allow(method.matching):
                    log.info(
                        "paper.rate_limited session=%s account=%s method=%s",
                        session.id, session.account.account_id if session.account else "-", name,
                    )
                    return Outcome(
                        _envelope(req_id, us_in, error=RpcError(errors.TOO_MANY_REQUESTS)),
                        close=True,
                    )
            faults = st.faults
            if method.order_entry:
                if faults.take("reject_next"):
                    faults.count("rejected")
                    raise RpcError(faults.reject_code, {"reason": "injected fault"})
                if faults.hit(faults.reject_fraction):
                    faults.count("rejected")
                    raise RpcError(faults.reject_code, {"reason": "injected fault"})
                if faults.hit(faults.rate_limit_fraction):
                    faults.count("rate_limited")
                    raise RpcError(errors.TOO_MANY_REQUESTS)
        result = method.handler(st, session, Params(raw))
        outcome = Outcome(_envelope(req_id, us_in, result))
    except RpcError as exc:
        outcome = Outcome(_envelope(req_id, us_in, error=exc))
    except Exception:  # a bug must not take the connection down: answer like Deribit would
        log.exception("paper.internal_error method=%s", name)
        outcome = Outcome(_envelope(req_id, us_in, error=RpcError(11050, {"reason": "internal"})))
    faults = st.faults
    if method.order_entry and not http and faults.take("drop_after_next"):
        faults.count("replies_lost")
        outcome.lost = True
    if not method.admin and faults.hit(faults.delay_fraction):
        faults.count("delayed")
        outcome.delay_s = faults.delay_s
    return outcome


def _limiter(session: Session) -> RateLimiter:
    if session.account is not None:
        assert session.account.limiter is not None
        return session.account.limiter
    if session.limiter is None:
        session.limiter = RateLimiter(DEFAULT_TIER)
    return session.limiter
