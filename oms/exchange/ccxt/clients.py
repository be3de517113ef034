"""ccxt clients of a venue: REST (``ccxt.async_support``) for orders and account views,
``ccxt.pro`` (REST plus WebSocket streams) for the live account feed, each pointed at the
venue's URLs."""

from __future__ import annotations

from types import ModuleType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from oms.secrets import Credentials
from oms.settings import VenueSettings

# Where an exchange's WebSocket API lives beside its REST base, for the exchanges that serve
# both from one host: what lets a venue whose REST URL is replaced (a test exchange) stream
# from the same place without naming its WebSocket URL too.
_WS_PATHS = {"deribit": "/ws/api/v2"}
_WS_SCHEMES = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}


def ws_url_of(config: VenueSettings) -> str | None:
    """The WebSocket URL of the venue's live streams: ``ws_url``, else the one beside ``url``
    for exchanges in :data:`_WS_PATHS`, else None (``url`` unset: ccxt's own URLs are used).

    Raises ValueError when ``url`` replaces the REST base and the WebSocket cannot be told
    from it: streaming from ccxt's own URL would reach another exchange than the orders."""
    if config.ws_url:
        return config.ws_url
    if config.url is None:
        return None
    path = _WS_PATHS.get(config.ccxt_id or "")
    parts = urlsplit(config.url)
    scheme = _WS_SCHEMES.get(parts.scheme)
    if path is None or scheme is None:
        raise ValueError(
            f"ccxt {config.ccxt_id}: its REST URL is replaced ({config.url}) and its WebSocket "
            "URL is not known from it: set the venue's ws_url"
        )
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + path, "", ""))


def new_client(
    namespace: ModuleType,
    config: VenueSettings,
    credentials: Credentials | None,
    *,
    ws_url: str | None = None,
) -> Any:
    """A client of the venue's ccxt exchange from ``namespace`` (``ccxt.async_support`` or
    ``ccxt.pro``), logged in with ``credentials`` if any, at the venue's REST URL (and
    ``ws_url`` for streams) when it has its own."""
    options: dict[str, Any] = {"enableRateLimit": True}
    if credentials is not None:
        options |= {"apiKey": credentials.client_id, "secret": credentials.client_secret}
    client = getattr(namespace, str(config.ccxt_id))(options)
    if config.url is not None:
        api = client.urls.get("api")
        if not isinstance(api, dict) or "rest" not in api:
            raise ValueError(
                f"ccxt {config.ccxt_id}: its API URLs are not one REST base; "
                "the venue's url cannot replace them"
            )
        urls = {"rest": config.url.rstrip("/")}
        if ws_url is not None:
            urls["ws"] = ws_url
        client.urls["api"] = urls
    elif ws_url is not None:
        client.urls["api"] = {**client.urls["api"], "ws": ws_url}
    return client
