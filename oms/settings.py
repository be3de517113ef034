"""Every tunable of the system in one typed place.

Each field can be overridden by an environment variable: ``OMS_<FIELD>`` for top-level
fields and ``OMS_<GROUP>__<FIELD>`` for nested ones (e.g. ``OMS_KAFKA__BOOTSTRAP``).
Secrets never live here: they come from the environment or the secrets file
(see :mod:`oms.secrets`).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from oms.schemas.base import DEFAULT_VENUE
from oms.schemas.risk import AccountControls, AccountLimits, AccountPermissions

KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_SSL"]
KafkaSaslMechanism = Literal["SCRAM-SHA-512", "PLAIN"]

# What a desk's name and its accounts' may contain. Both end up in prefixed Kafka ACLs
# (oms.kafka.acls): ``oms.acct.<account>.`` for the account's topics and ``<desk>.`` for the
# desk's groups, where the dot ends the name. A dot inside a name would let one prefix cover
# another's resources (account ``a``'s ``oms.acct.a.`` covers ``oms.acct.a.b.``, account
# ``a.b``'s topics).
DESK_NAME = re.compile(r"[A-Za-z0-9_-]+")


class KafkaSettings(BaseModel):
    """Broker connection and topic layout."""

    bootstrap: str = "127.0.0.1:9092"
    topic_prefix: str = "oms."
    partitions: int = Field(8, ge=1, description="partitions of every keyed topic")
    replication_factor: int = Field(1, ge=1)
    # Kafka release fetched and run by the project's own tooling (oms_dev/devstack/kafka/).
    version: str = "4.1.2"
    # Transport security of every client (oms.kafka.security builds each library's options
    # from these). SASL_SSL: TLS to the broker, then a SASL login as ``username`` whose
    # password comes only from the secrets store (OMS_KAFKA_PASSWORD or the secrets file's
    # "kafka_users"), never from settings.
    security_protocol: KafkaSecurityProtocol = "PLAINTEXT"
    sasl_mechanism: KafkaSaslMechanism = "SCRAM-SHA-512"
    username: str | None = None
    # CA bundle that signed the broker's certificate (None: the system's trust store).
    ca_file: Path | None = None
    # Client certificate and its key, for brokers that also authenticate clients by TLS.
    cert_file: Path | None = None
    key_file: Path | None = None

    @model_validator(mode="after")
    def _certificate_with_its_key(self) -> Self:
        # A missing username under SASL_SSL is refused when a client is built
        # (oms.kafka.security), not here: processes that never connect to Kafka (the paper
        # exchange) share the environment of those that do.
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("kafka.cert_file and kafka.key_file go together")
        return self


# The per-account copies of the shared output topics (Settings.account_topic).
AccountTopicKind = Literal["events", "positions", "notifications"]

# How the Deribit client logs in (oms/exchange/deribit/auth.py).
AuthGrant = Literal["client_credentials", "client_signature"]


# How the OMS reaches a venue: "deribit" is the native Deribit API v2 client
# (oms.exchange.deribit; the paper exchange speaks it too), "ccxt" any exchange ccxt knows,
# through oms.exchange.ccxt.
VenueKind = Literal["deribit", "ccxt"]


class VenueSettings(BaseModel):
    """One venue orders may name (``OrderRequest.venue``): how to reach it and who trades there."""

    kind: VenueKind = "deribit"
    # ccxt's exchange id (``ccxt.exchanges``), e.g. "deribit"; only for kind "ccxt".
    ccxt_id: str | None = None
    # deribit: the WebSocket URL (None: exchange.url). ccxt: the REST base URL the ccxt
    # exchange is pointed at (None: ccxt's own URL of the exchange).
    url: str | None = None
    # ccxt only: the WebSocket URL of the venue's live account streams (ccxt.pro). None:
    # ccxt's own, or, when ``url`` replaces the REST base, the WebSocket beside it for
    # exchanges that serve both from one host (deribit: ``<url>/ws/api/v2``).
    ws_url: str | None = None
    # Accounts that trade at this venue; None: every account.
    accounts: list[str] | None = None
    # Where this venue's exchange credentials live (None: the process's secrets store):
    # the same account usually has other API keys at another venue.
    secrets_file: Path | None = None
    # The venue's taker fee, a fraction of the notional (Deribit's 0.05% by default): smart
    # order routing ranks venues by price net of it.
    taker_fee: float = Field(0.0005, ge=0, lt=1)

    @model_validator(mode="after")
    def _ccxt_needs_its_id(self) -> Self:
        if self.kind == "ccxt" and not self.ccxt_id:
            raise ValueError("a ccxt venue needs ccxt_id (the ccxt exchange id, e.g. 'deribit')")
        return self

    def trades(self, account_id: str) -> bool:
        """Whether ``account_id`` may trade at this venue."""
        return self.accounts is None or account_id in self.accounts


class ExchangeSettings(BaseModel):
    """Where the workers trade (``venues``) and how the native Deribit client talks to its
    venues; the paper exchange (which speaks Deribit's API) by default."""

    # The native implementation of venues of kind "deribit", by its name in
    # oms.exchange.venues.VENUES ("deribit", or "paper": the same API, named apart).
    venue: str = "deribit"
    # wss://test.deribit.com/ws/api/v2 or wss://www.deribit.com/ws/api/v2 for the real one.
    url: str = "ws://127.0.0.1:8765/ws/api/v2"
    request_timeout: float = Field(10.0, gt=0)
    heartbeat_interval: int = Field(10, ge=10, description="public/set_heartbeat interval, s")
    reconnect_min_delay: float = 0.2
    reconnect_max_delay: float = 10.0
    # Deribit's default non-matching-engine credit pool (docs: rate limits).
    credits_max: int = 50_000
    credits_refill_per_s: int = 10_000
    credits_cost: int = 500
    # Matching-engine (order) requests per second and burst, per sub-account tier.
    matching_rate_per_s: float = 5.0
    matching_burst: int = 20
    instruments: list[str] = ["BTC-PERPETUAL", "ETH-PERPETUAL"]
    ticker_interval: str = "100ms"
    # public/auth grant: "client_signature" proves the key with an HMAC of a timestamp and a
    # nonce instead of sending the client secret (OMS_EXCHANGE__AUTH_GRANT).
    auth_grant: AuthGrant = "client_credentials"
    # Every venue orders may name, by name (the order's ``venue``): kind, URL and accounts.
    # The default is the one Deribit venue at ``url``; set e.g. OMS_EXCHANGE__VENUES=
    # '{"deribit": {}, "paper2": {"kind": "ccxt", "ccxt_id": "deribit", "url": "http://..."}}'.
    venues: dict[str, VenueSettings] = Field(
        default_factory=lambda: {DEFAULT_VENUE: VenueSettings()}
    )

    @field_validator("venues")
    @classmethod
    def _some_venue(cls, venues: dict[str, VenueSettings]) -> dict[str, VenueSettings]:
        if not venues:
            raise ValueError("exchange.venues needs at least one venue")
        for name in venues:
            if not DESK_NAME.fullmatch(name):
                raise ValueError(f"venue name {name!r}: only letters, digits, '_' and '-'")
        primary = DEFAULT_VENUE if DEFAULT_VENUE in venues else next(iter(venues))
        if venues[primary].kind != "deribit":
            # Market data and the instrument catalog of the processes that see one venue
            # come from the primary venue, and only the native adapter has them.
            raise ValueError(f"the primary venue {primary!r} must be of kind 'deribit'")
        return venues

    @property
    def primary_venue(self) -> str:
        """The venue of market data and of the processes that see one venue (the default
        venue if configured, else the first one)."""
        return DEFAULT_VENUE if DEFAULT_VENUE in self.venues else next(iter(self.venues))


class PaperExchangeSettings(BaseModel):
    """The local Deribit-compatible exchange."""

    host: str = "127.0.0.1"
    port: int = 8765
    seed: int = 7
    tick_interval_s: float = 0.1
    # Tier used for accounts the paper exchange creates on first auth.
    default_tier: int = 4
    auto_create_accounts: bool = True
    starting_btc: float = 100.0
    starting_eth: float = 1000.0
    starting_usdc: float = 1_000_000.0
    # Keep orders, trades, positions, balances, accounts and id counters across restarts
    # (``oms paper-exchange``; an in-process PaperExchange is durable only given a state_dir).
    durable: bool = True
    # Where the durable state lives; None: <data_dir>/paper.
    state_dir: Path | None = None
    # How often the synthetic market (prices, random state, ticker statistics) is saved: a
    # restart continues from at most this far back.
    market_save_interval_s: float = Field(1.0, gt=0)
    # Closed orders kept for get_order_state / history (ids are never reused regardless).
    history_limit: int = Field(200_000, ge=1)

    def resolved_state_dir(self, data_dir: Path) -> Path:
        """The state directory: ``state_dir``, or ``paper`` under the settings' data dir."""
        return self.state_dir or data_dir / "paper"


class SinkSettings(BaseModel):
    """ClickHouse sink batching and query endpoint."""

    batch_size: int = Field(5_000, ge=1)
    flush_interval_s: float = Field(1.0, gt=0)
    # Embedded (chDB) data is readable by other processes only through this endpoint.
    query_host: str = "127.0.0.1"
    query_port: int = 8124
    # The desk this process reads history as (``oms sql``, the SDK): its query token from the
    # secrets store goes with every query, and on a ClickHouse server it logs in as the
    # desk's user. None: the operator (with the operator token, if one is configured).
    query_desk: str | None = None
    tick_sample_ms: int = Field(
        1_000, ge=0, description="keep at most one tick per instrument per period"
    )
    retention_days: int = Field(90, ge=1)
    # A failed insert (or dead-letter send) is retried forever, never sooner than retry_min_s
    # after the previous attempt and never later than retry_max_s.
    retry_min_s: float = Field(0.2, ge=0)
    retry_max_s: float = Field(10.0, ge=0)


class WorkerSettings(BaseModel):
    """Order-processing worker (Faust)."""

    app_id: str = "oms"
    web_port: int = 6066
    max_inflight_per_account: int = 64
    recovery_check_interval_s: float = 5.0
    # An order without exchange confirmation this long after sending is looked up by label.
    submit_timeout_s: float = 15.0
    # Producer batching. 0: a record goes out at once when no produce request is in flight,
    # and under load records batch up behind the one request in flight (aiokafka keeps one
    # per broker), so batching grows with load without costing latency at low load; every
    # ms of linger is paid on each of the three hops of an order.
    producer_linger_ms: int = Field(0, ge=0)
    # How soon a dead worker's partitions move to the others (Kafka group session timeout).
    session_timeout_s: float = Field(10.0, ge=6.0)
    # Faust table_standby_replicas: other workers keep a warm copy of each table partition
    # (read from its changelog), so a takeover skips most of the changelog replay. Costs
    # that many times the table memory and changelog reads; 0 keeps the failover-tested path.
    standby_replicas: int = Field(0, ge=0)
    # Ticks of each market-ticks partition a starting worker reads again into its market cache
    # (oms.market): enough for every instrument of a partition to have current values before
    # anything reads them (marks for risk, previous values for crosses, the touch for chase).
    tick_replay_per_partition: int = Field(500, ge=1)
    # An order that ended (filled, cancelled, rejected, expired) leaves the worker's table this
    # long after its last change (a tombstone on the changelog); ClickHouse keeps its history.
    terminal_retention_s: float = Field(600.0, ge=0)
    # A compact marker of it refuses a duplicate request_id (and cancels/amends of it) for
    # this long after it ended; a submit created longer ago than this is refused as stale.
    dedupe_retention_s: float = Field(86_400.0, gt=0)
    # How often the ended orders and markers that are due are handed to their purge.
    purge_interval_s: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _markers_outlive_orders(self) -> Self:
        if self.dedupe_retention_s < self.terminal_retention_s:
            raise ValueError(
                "dedupe_retention_s must be at least terminal_retention_s: the marker that "
                "refuses duplicates must outlive the order's record"
            )
        return self


class QueueSettings(BaseModel):
    """Non-immediate orders: queue limits and delays."""

    priority_levels: list[str] = ["high", "normal", "low"]
    max_queue_size: int = 10_000
    batch_size: int = 10
    processing_interval: float = 1.0
    max_delay: float = 300.0
    max_conditions: int = 5
    # Reduce-only orders shrink risk: let them overtake like high-priority ones.
    reduce_only_as_high: bool = True


class LifecycleSettings(BaseModel):
    """Order lifecycle. Policies can be overridden per order in its
    ``metadata`` (same key names)."""

    # An open order without news this long is re-checked with private/get_order_state.
    monitoring_interval: float = Field(5.0, gt=0)
    # An order open (resting) longer than this is cancelled (reason auto_cancelled); 0: never.
    auto_cancel_timeout: float = Field(3600.0, ge=0)
    partial_fill_handling: Literal["wait_remaining", "cancel_remaining"] = "wait_remaining"
    # cancel_remaining: how long after the first partial fill the rest may keep working.
    partial_fill_grace: float = Field(0.0, ge=0)
    error_handling: Literal["retry", "cancel", "manual"] = "retry"
    retry_attempts: int = Field(3, ge=0)
    retry_delay: float = Field(1.0, ge=0)
    retry_max_delay: float = Field(30.0, ge=0)
    # Waits (s) before retry 1, 2, ... per error kind (reason code, "*": any other), as
    # picked by `oms tune apply` from the retry history; each is kept within retry_delay ..
    # retry_max_delay, the last repeats, and jittered between half of it and it. An error
    # kind not listed backs off exponentially.
    retry_schedule: dict[str, list[float]] = {}
    # How often the lifecycle timer looks at the orders of owned partitions.
    check_interval: float = Field(1.0, gt=0)
    # Budget of private/get_order_state re-checks per timer run (credits are shared).
    max_rechecks_per_run: int = Field(5, ge=0)
    # How often a worker samples its metrics into the ClickHouse `metrics` table; 0: never.
    metrics_sample_interval: float = Field(10.0, ge=0)
    # Deribit cancel-on-disconnect (scope "connection") for these accounts.
    cancel_on_disconnect_accounts: list[str] = []
    # Reconciliation with the exchange (oms.lifecycle.reconcile, after NautilusTrader's live
    # execution engine). An acknowledged order the exchange does not know is looked up by label
    # again every open_check_interval s; once open_check_missing_retries lookups in a row missed
    # it, it is resolved (cancelled, reason lost_at_venue) with an emergency notification. So a
    # lost order ends within (retries - 1) x interval of its first miss (10 s by default). More
    # retries or a longer interval tolerate an exchange slow to show its orders; fewer, sooner.
    open_check_missing_retries: int = Field(3, ge=1)
    open_check_interval: float = Field(5.0, gt=0)
    # Label lookups of a reconciliation in flight at once (each also waits for the account's
    # rate-limit credits, so a pass over many orders never provokes 10028).
    reconcile_concurrency: int = Field(8, ge=1)


class TuningSettings(BaseModel):
    """Execution tuned from the order history (``oms tune show|apply``, :mod:`oms.algos.tuner`)."""

    # A passive order counts as filled if its first fill came within this many seconds.
    horizon_s: float = Field(30.0, gt=0)
    # Distances from the touch are grouped in buckets this wide (bps).
    offset_bucket_bps: float = Field(1.0, gt=0)
    # A bucket smaller than this is shown but never picked.
    min_samples: int = Field(30, ge=1)
    # The TWAP slice limit keeps the upper 95% bound of mean slippage under this (bps).
    max_slippage_bps: float = Field(5.0, gt=0)
    # Slice sizes relative to the visible depth are grouped in buckets this wide.
    depth_ratio_bucket: float = Field(0.25, gt=0)
    # The touch recorded at placement older than this (market_ticks fallback) is not used.
    max_tick_age_s: float = Field(5.0, gt=0)


class StrategySettings(BaseModel):
    """Execution strategy plugins (:mod:`oms.algos.registry`): where they come from, and how
    often the worker checks them for a change of code or settings (reloaded without a
    restart)."""

    reload_interval_s: float = Field(5.0, gt=0)
    # Read the ``oms.strategies`` entry points of the installed packages.
    entry_points: bool = True
    # name -> "package.module:attr" or "/path/to/file.py:attr" (besides the entry points).
    sources: dict[str, str] = {}
    # JSON file read again at every check: {name: {"source"?, "settings"?, "enabled"?}}.
    config_file: Path | None = None
    # name -> the strategy's settings (the file's "settings" replace them).
    settings: dict[str, dict[str, Any]] = {}


class RiskSettings(BaseModel):
    """Request authentication, account permissions, risk limits."""

    # "signed": every request must carry a valid HMAC signature of its account's signing key;
    # "trusted": the request topic is protected by Kafka ACLs, signatures are not checked.
    auth_mode: Literal["signed", "trusted"] = "signed"
    # A signed request older than this (signer's clock vs ours) is stale...
    max_request_age_s: float = Field(30.0, gt=0)
    # ... and one dated further than this in the future is refused too (clock skew).
    max_clock_skew_s: float = Field(5.0, ge=0)
    # Nonces remembered per order id (a replay of any of them is refused).
    nonces_kept_per_order: int = Field(64, ge=1)
    # Pre-trade checks (permissions, limits, trading state) on or off.
    checks_enabled: bool = True
    # Controls of accounts without their own entry, and per-account ones; runtime changes
    # (``oms risk ...``) on the risk-controls topic override both.
    default_permissions: AccountPermissions = AccountPermissions()
    default_limits: AccountLimits = AccountLimits()
    accounts: dict[str, AccountControls] = {}
    # Orders above this amount are sliced (TWAP) rather than sent at once; None: never.
    slice_above_amount: float | None = Field(None, gt=0)
    # ... over this many seconds, one slice per slice_above_amount (TWAP, at most 100 slices).
    slice_duration_s: float = Field(300.0, gt=0, le=86_400)

    def exchange_accounts(self) -> dict[str, str]:
        """Account -> Deribit sub-account (secrets entry) for accounts mapped to another one."""
        return {
            account: controls.permissions.exchange_account
            for account, controls in self.accounts.items()
            if controls.permissions.exchange_account
        }


class NotifySettings(BaseModel):
    """The notifier process: consumption, delivery, emergencies."""

    web_port: int = 6068
    # Interface of /health, /stats, /metrics: 0.0.0.0 in containers (Prometheus scrapes it).
    web_host: str = "127.0.0.1"
    batch_max_records: int = Field(10_000, ge=1, description="records per Kafka fetch")
    tick_interval_s: float = Field(0.2, gt=0, description="how often due groups are sent")
    retry_attempts: int = Field(3, ge=1, description="tries per channel before falling back")
    retry_base_delay_s: float = Field(0.5, ge=0)
    retry_max_delay_s: float = Field(10.0, ge=0)
    http_timeout_s: float = Field(10.0, gt=0, description="per provider request")
    max_concurrent_sends: int = Field(32, ge=1)
    wecom_per_minute: int = Field(20, ge=1, description="WeCom robot limit, per webhook key")
    wecom_max_wait_s: float = Field(5.0, ge=0, description="wait for a token, then fall back")
    max_group_events: int = Field(500, ge=1, description="a group is sent once this full")
    # Delivery markers older than this are forgotten (compaction then drops them).
    dedupe_retention_s: float = Field(7 * 86400, gt=0)
    margin_check_interval_s: float = Field(15.0, gt=0)
    margin_currencies: list[str] = ["BTC", "ETH"]
    exchange_down_alert_s: float = Field(60.0, gt=0)
    kafka_down_alert_s: float = Field(30.0, gt=0)


class PositionSettings(BaseModel):
    """Position keeper, its records and reconciliation."""

    # Faust app id of the keeper; default "<worker.app_id>-positions".
    app_id: str | None = None
    web_port: int = 6067
    # real_time: every record is produced as its fill is applied; batch: records are
    # buffered and flushed every batch_flush_interval_s or batch_size records (and on stop).
    recording_mode: Literal["real_time", "batch"] = "real_time"
    batch_size: int = Field(1_000, ge=1)
    batch_flush_interval_s: float = Field(1.0, gt=0)
    # Reports taken from execution-reports per step of the repartitioning agent.
    take_max: int = Field(2_000, ge=1)
    take_within_s: float = Field(0.05, gt=0)
    # Reconciliation against the exchange's positions, also on start and after reconnects.
    monitoring_interval_s: float = Field(60.0, gt=0)
    reconcile: bool = True
    # ClickHouse TTL of execution records in position_changes.
    retention_days: int = Field(90, ge=1)
    # Corrections and adjustments (the audit trail) are kept this long.
    audit_trail: bool = True
    audit_retention_days: int = Field(2_555, ge=1)
    # Relative tolerance when comparing recorded and exchange figures.
    tolerance: float = Field(1e-6, ge=0)
    # Seen-trades table (trade_id -> record, the keeper's dedupe store): entries whose fill is
    # older than this are deleted (tombstones; the changelog is compacted). Execution reports
    # are replayed after a crash or reconnect within minutes or hours, never weeks, so a week
    # bounds memory and changelog while keeping every realistic replay a duplicate. A fill
    # older than this is refused (stale_fill) and flagged, since its entry may be gone.
    seen_trades_retention_s: float = Field(7 * 86_400.0, gt=0)
    # How often each keeper asks its partitions to drop expired seen trades.
    seen_trades_prune_interval_s: float = Field(600.0, gt=0)

    @property
    def ttl_days(self) -> tuple[int, int]:
        """(execution records, audit trail) retention in days for ``position_changes``."""
        audit = self.audit_retention_days if self.audit_trail else self.retention_days
        return self.retention_days, max(audit, self.retention_days)


class AccessSettings(BaseModel):
    """Who sees what on Kafka: the per-account topics and the fan-out that fills them."""

    # Copy every record of oms.order-events, oms.positions and oms.notifications to its
    # account's own topic (Settings.account_topic) with the fan-out service (``oms fanout``,
    # oms/fanout/). Off: nothing fills the per-account topics; desks then need the shared
    # topics, where they see every account.
    per_account_topics: bool = True
    # Consumer group of the fan-out; default "<worker.app_id>-fanout".
    fanout_group: str | None = None
    # Records taken per fetch (one produce round and one commit per batch).
    fanout_max_records: int = Field(2_000, ge=1)
    # Producer batching of the copies: a little linger lets one request carry many records.
    fanout_linger_ms: int = Field(5, ge=0)
    # Per-account topics the fan-out creates on demand, beyond those of the configured
    # accounts (``accounts`` and ``desks``): an account id comes from a trader's request, so
    # a flood of made-up accounts must not create topics without bound. Past it, records of
    # new accounts are dead-lettered (unknown_account).
    fanout_max_new_accounts: int = Field(1_000, ge=0)


class ExperimentVariant(BaseModel):
    """One arm of an experiment: how often it is drawn and how its orders execute."""

    name: str = Field(pattern=DESK_NAME.pattern)
    # Relative share of the experiment's orders (normalised over the variants).
    weight: float = Field(gt=0, allow_inf_nan=False)
    # An execution algorithm by its ``metadata.algo`` name ("twap", "chase"), or "none": the
    # order goes out as sent. Checked with the algorithm's own parameter model when a worker
    # builds its experiments (oms.orders.experiments), not here: settings know no algorithms.
    algo: str = "none"
    # The algorithm's parameters as flat metadata keys (e.g. {"twap_duration": 60,
    # "twap_slices": 6}); a chase variant may leave chase_limit to the order.
    params: dict[str, str | int | float | bool] = {}


ExperimentSelect = Literal["tagged", "untagged"]


class ExperimentSettings(BaseModel):
    """An A/B test of execution strategies: which orders take part and the variants they are
    spread over (by a hash of the order id: see oms.orders.experiments)."""

    name: str = Field(pattern=DESK_NAME.pattern)
    # Only orders of these accounts / instruments; empty: any.
    accounts: list[str] = []
    instruments: list[str] = []
    # "tagged": only orders whose metadata asks for it (``"experiment": NAME``);
    # "untagged": also every order that names no algorithm itself (no ``metadata.algo``).
    select: ExperimentSelect = "tagged"
    variants: list[ExperimentVariant] = Field(min_length=2)

    @field_validator("variants")
    @classmethod
    def _distinct_variants(cls, variants: list[ExperimentVariant]) -> list[ExperimentVariant]:
        names = [v.name for v in variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be distinct, got {names}")
        return variants


class Settings(BaseSettings):
    """Root settings object; build it with :func:`get_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="OMS_", env_nested_delimiter="__", extra="ignore", env_file=None
    )

    data_dir: Path = Path(".local")
    log_level: str = "info"
    log_json: bool = False
    # None means embedded chDB under data_dir; set http://host:8123 for a ClickHouse server.
    clickhouse_url: str | None = None
    secrets_file: Path | None = None
    # Known accounts. Their exchange credentials come from the secrets store.
    accounts: list[str] = ["demo"]
    # Desks: who may read what. Each desk (a team or a bot) owns some accounts and sees only
    # theirs: its Kafka principal (named like the desk) reads only those accounts' topics
    # (account_topic), and its query token returns only their rows. Empty: one operator
    # sees everything, as before desks existed.
    desks: dict[str, list[str]] = {}

    kafka: KafkaSettings = KafkaSettings()
    exchange: ExchangeSettings = ExchangeSettings()
    paper: PaperExchangeSettings = PaperExchangeSettings()
    sink: SinkSettings = SinkSettings()
    worker: WorkerSettings = WorkerSettings()
    queue: QueueSettings = QueueSettings()
    lifecycle: LifecycleSettings = LifecycleSettings()
    strategies: StrategySettings = StrategySettings()
    tuning: TuningSettings = TuningSettings()
    risk: RiskSettings = RiskSettings()
    notify: NotifySettings = NotifySettings()
    positions: PositionSettings = PositionSettings()
    access: AccessSettings = AccessSettings()
    # A/B experiments on execution strategies (OMS_EXPERIMENTS, a JSON list); the first
    # experiment that applies to an order enrols it.
    experiments: list[ExperimentSettings] = []

    @field_validator("desks")
    @classmethod
    def _desk_names_fit_prefix_acls(cls, desks: dict[str, list[str]]) -> dict[str, list[str]]:
        for desk, accounts in desks.items():
            for kind, name in [("desk", desk), *(("account", a) for a in accounts)]:
                if not DESK_NAME.fullmatch(name):
                    raise ValueError(
                        f"desks: {kind} {name!r} (desk {desk!r}) may contain only letters, "
                        "digits, '_' and '-': its Kafka ACLs are name prefixes that a '.' "
                        "or other separator would let cover another's topics or groups"
                    )
        return desks

    @field_validator("experiments")
    @classmethod
    def _distinct_experiments(
        cls, experiments: list[ExperimentSettings]
    ) -> list[ExperimentSettings]:
        names = [e.name for e in experiments]
        if len(set(names)) != len(names):
            raise ValueError(f"experiment names must be distinct, got {names}")
        return experiments

    @property
    def clickhouse_dsn(self) -> str:
        """DSN for clickhouse-connect: a server URL, or chDB embedded under data_dir."""
        if self.clickhouse_url:
            return self.clickhouse_url
        return f"chdb://{(self.data_dir / 'clickhouse').resolve()}"

    @property
    def embedded_clickhouse(self) -> bool:
        return not self.clickhouse_url

    @property
    def resolved_secrets_file(self) -> Path:
        return self.secrets_file or self.data_dir / "secrets.json"

    def account_topic(self, account: str, kind: AccountTopicKind) -> str:
        """One account's own copy of a shared output topic (``oms.acct.<account>.events``):
        ACLs cannot filter records inside a topic, so per-account readers get topics of
        their own, granted by a prefixed ACL on ``oms.acct.<account>.``."""
        return f"{self.kafka.topic_prefix}acct.{account}.{kind}"

    def desk_of(self, account: str) -> str | None:
        """The desk that owns ``account``, if any."""
        for desk, accounts in self.desks.items():
            if account in accounts:
                return desk
        return None

    def topic(self, name: str) -> str:
        """Full topic name for a logical topic (``order-requests`` -> ``oms.order-requests``)."""
        return f"{self.kafka.topic_prefix}{name}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings, read once from the environment."""
    return Settings()
