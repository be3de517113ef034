"""Deribit API v2 client (JSON-RPC over WebSocket) for the real exchange and the paper one."""

from oms.exchange.deribit.client import ClientStats, DeribitClient, is_private_channel
from oms.exchange.deribit.rate_limit import (
    MATCHING_ENGINE_METHODS,
    RateLimitConfig,
    RateLimiter,
    is_matching_engine,
)

__all__ = [
    "MATCHING_ENGINE_METHODS",
    "ClientStats",
    "DeribitClient",
    "RateLimitConfig",
    "RateLimiter",
    "is_matching_engine",
    "is_private_channel",
]
