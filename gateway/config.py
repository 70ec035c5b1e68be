"""Settings: four environment variables, and a TOML file for everything with structure.

Environment (the contract of DESIGN.md §3): ``DATABASE_URL``, ``REDIS_URL``, ``GATEWAY_CONFIG``
(path of the TOML file), ``PORT``. The TOML file names each backend's URL, timeouts and keys, the
channels' API keys and scopes, and the customer-token settings. Secrets may also come from the
environment (``GATEWAY_JWT_SECRET``), so that a checked-in file need not hold them.
"""

from __future__ import annotations

import tomllib
from decimal import Decimal
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from gateway.db import DEFAULT_CONNECTIONS

DEFAULT_CONFIG = Path("config/demo.toml")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HttpBackend(_Strict):
    url: str
    timeout: float = Field(default=5.0, gt=0)
    max_connections: int = Field(default=32, gt=0)


class PimBackend(HttpBackend):
    locale: str = "en_GB"
    fallback_locale: str = "de_DE"


class PricingBackend(HttpBackend):
    max_concurrency: int = Field(default=8, gt=0)


class PromotionsBackend(_Strict):
    folder: Path
    # How often the folder is looked at for new files (a stat of each, no read).
    check_interval: float = Field(default=0.2, ge=0)


class ErpBackend(_Strict):
    url: str
    timeout: float = Field(default=5.0, gt=0)
    pool_size: int = Field(default=10, gt=0)


class LoyaltyBackend(HttpBackend):
    api_key: SecretStr
    max_retries: int = Field(default=3, ge=0)


class OmsBackend(HttpBackend):
    timeout: float = Field(default=10.0, gt=0)


class BackendsConfig(_Strict):
    pim: PimBackend
    pricing: PricingBackend
    promotions: PromotionsBackend
    erp: ErpBackend
    loyalty: LoyaltyBackend
    oms: OmsBackend


class ChannelConfig(_Strict):
    """A sales channel, identified by the API key it is configured under, and what it may
    spend: the cost of one operation (see gateway/limits.py), requests per second (with a
    burst), whether only persisted operations are run, whether introspection answers."""

    name: str
    scopes: frozenset[str] = frozenset()
    max_cost: int = Field(default=5000, ge=1)
    # One key serves all of a channel's users: its own limit is high; customers have theirs.
    requests_per_second: float = Field(default=500.0, gt=0)
    burst: int = Field(default=1000, ge=1)
    persisted_only: bool = False
    introspection: bool = True


class AuthConfig(_Strict):
    jwt_secret: SecretStr | None = None
    jwt_public_key: str | None = None
    algorithm: str = "HS256"
    issuer: str = "commerce-gateway"
    audience: str = "commerce-gateway"
    token_ttl_seconds: int = Field(default=3600, gt=0)


class LoyaltyProgramConfig(_Strict):
    """Points earned per whole currency unit paid (times the tier's multiplier), and what one
    point is worth when spent, in the shop's currency."""

    point_value: Decimal = Decimal("0.01")
    currency: str = "EUR"
    points_per_unit: Decimal = Decimal(1)
    tier_multipliers: dict[str, Decimal] = Field(
        default_factory=lambda: {
            "BRONZE": Decimal(1),
            "SILVER": Decimal("1.25"),
            "GOLD": Decimal("1.5"),
            "PLATINUM": Decimal(2),
        }
    )


class LimitsConfig(_Strict):
    """How much one process takes on at once; see gateway/admission.py."""

    max_in_flight: int = Field(default=16, ge=1)
    max_wait: float = Field(default=10.0, gt=0)
    # PostgreSQL connections this process keeps at most (requests, the outbox, the stock sync).
    database_connections: int = Field(default=DEFAULT_CONNECTIONS, ge=1)


class SecurityConfig(_Strict):
    """What a request may be before any work is done for it (gateway/limits.py), the rate
    limit per customer (gateway/ratelimit.py), and who may read the operator endpoints."""

    max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    # A refusal by the parser costs about 5 µs per token: the limits keep it to ~2.5 ms.
    max_document_length: int = Field(default=8 * 1024, ge=100)  # characters of the document
    max_tokens: int = Field(default=500, ge=10)
    max_depth: int = Field(default=12, ge=1)
    max_aliases: int = Field(default=30, ge=0)
    max_directives: int = Field(default=20, ge=0)
    max_field_repeats: int = Field(default=5, ge=1)  # the same field in one selection set
    max_string_length: int = Field(default=2000, ge=1)
    customer_requests_per_second: float = Field(default=10.0, gt=0)
    customer_burst: int = Field(default=40, ge=1)
    rate_limit_prefix: str = "gateway:ratelimit"
    # /metrics and the detailed /readyz answer only with this key (X-Operator-Key); without
    # one they are not served at all. GATEWAY_OPERATOR_KEY overrides it.
    operator_key: SecretStr | None = None
    websocket_origins: tuple[str, ...] = ()
    connection_init_timeout: float = Field(default=5.0, gt=0)
    # A folder of .graphql documents, the persisted operations (relative to the config file).
    persisted_operations: Path | None = None


class OrdersConfig(_Strict):
    """Sourcing policy, and how often stock, the OMS's statuses and the outbox are worked
    through."""

    stock_sync_interval: float = Field(default=0.25, gt=0)  # seconds between ERP change reads
    status_sync_interval: float = Field(default=0.25, gt=0)  # between OMS status feed reads
    outbox: bool = True  # deliver the outbox from this process
    outbox_batch: int = Field(default=50, ge=1)
    max_shipments: int = Field(default=3, ge=1)
    delivery_radius_km: float = Field(default=25.0, gt=0)
    max_delivery_stores: int = Field(default=2, ge=1)
    pickup_alternatives: int = Field(default=3, ge=0)
    # Seconds. A placement renews its idempotency key's lease while it runs; a key whose
    # placement died is taken over by the next request with it within this.
    placement_lease: float = Field(default=3.0, gt=0)
    # Orders of one price zone asking at once share calls to the pricing engine, at most this
    # many at a time per zone and process (gateway.orders.prices).
    price_calls_per_zone: int = Field(default=1, ge=1)
    # Delivered outbox rows are kept this long (for an operator to look into), then purged
    # by every process every ``outbox_purge_interval``.
    outbox_retention: float = Field(default=7 * 24 * 3600.0, ge=0)
    outbox_purge_interval: float = Field(default=60.0, gt=0)


class ReadModelConfig(_Strict):
    """The shared read model, the change feeds' followers and the response cache; see
    docs/read-model.md. Seconds unless named otherwise."""

    enabled: bool = True
    namespace: str = Field(default="cg", pattern=r"^[A-Za-z0-9_.-]{1,32}$")  # Redis key prefix
    local_entries: int = Field(default=50_000, ge=1)  # the in-process level's size
    local_ttl: float = Field(default=300.0, gt=0)
    shared_ttl: float = Field(default=3600.0, gt=0)
    degraded_ttl: float = Field(default=5.0, gt=0)  # entries' life while Redis is unreachable
    redis_timeout: float = Field(default=0.25, gt=0)  # one Redis call, before it counts as down
    response_cache_megabytes: int = Field(default=64, ge=0)  # 0: no response cache
    response_ttl: float = Field(default=30.0, gt=0)
    pim_interval: float = Field(default=0.25, gt=0)  # seconds between reads of each feed
    pricing_interval: float = Field(default=0.25, gt=0)
    promotions_interval: float = Field(default=0.25, gt=0)
    lease_ttl: float = Field(default=3.0, gt=0)  # a dead holder's feed is taken over after this
    # The ledger's positions held for reads that show stock, per SKU (0: none held); each is
    # dropped when the bus says it moved, and after ``stock_ttl`` at most.
    stock_entries: int = Field(default=50_000, ge=0)
    stock_ttl: float = Field(default=1.0, gt=0)


class SubscriptionsConfig(_Strict):
    """Bounds of the live subscriptions (stockChanged, priceChanged)."""

    max_skus: int = Field(default=100, ge=1)  # per subscription
    max_stores: int = Field(default=20, ge=1)  # per stockChanged subscription
    max_lag: float = Field(default=10.0, gt=0)  # seconds a subscriber may fall behind
    max_per_connection: int = Field(default=20, ge=1)  # subscriptions on one WebSocket
    max_connections_per_key: int = Field(default=2000, ge=1)  # subscribed sockets per channel


class ResilienceConfig(_Strict):
    """Deadlines, retries and circuit breakers for the calls to the legacy systems (see
    gateway/resilience.py); each backend's own ``timeout`` bounds one call to it."""

    request_deadline: float = Field(default=10.0, gt=0)  # an HTTP request's backend calls, all told
    retries: int = Field(default=2, ge=0)  # further attempts of a read
    backoff: float = Field(default=0.05, ge=0)
    max_backoff: float = Field(default=0.5, ge=0)
    retry_ratio: float = Field(default=0.1, ge=0)  # retries at most this share of calls
    retry_floor: float = Field(default=1.0, ge=0)  # plus this many per second
    window: float = Field(default=10.0, gt=0)
    failure_ratio: float = Field(default=0.8, gt=0, le=1)
    min_calls: int = Field(default=20, ge=1)
    open_for: float = Field(default=5.0, gt=0)
    # A feed not read for this long (ERP stock; prices held by the read model) is flagged stale.
    feed_stale_after: float = Field(default=5.0, gt=0)


class ShutdownConfig(_Strict):
    """What happens on SIGTERM (seconds): ``/readyz`` answers 503 for ``drain`` while
    requests are still served, so that load balancers stop sending any; then the listener
    closes, requests in flight get up to ``grace`` to finish, and the background work (the
    outbox round in progress) ends before the process exits. SIGINT skips the drain."""

    drain: float = Field(default=5.0, ge=0)
    grace: float = Field(default=30.0, gt=0)


class GatewayConfig(_Strict):
    backends: BackendsConfig | None = None
    channels: dict[str, ChannelConfig] = Field(default_factory=dict)
    auth: AuthConfig = AuthConfig()
    loyalty: LoyaltyProgramConfig = LoyaltyProgramConfig()
    limits: LimitsConfig = LimitsConfig()
    orders: OrdersConfig = OrdersConfig()
    read_model: ReadModelConfig = ReadModelConfig()
    subscriptions: SubscriptionsConfig = SubscriptionsConfig()
    security: SecurityConfig = SecurityConfig()
    resilience: ResilienceConfig = ResilienceConfig()
    shutdown: ShutdownConfig = ShutdownConfig()


class Settings(BaseSettings):
    """What the environment says. ``config()`` reads the TOML file it points at."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", frozen=True)

    database_url: str = "sqlite+aiosqlite:///var/gateway.sqlite"
    redis_url: str | None = None
    gateway_config: Path = DEFAULT_CONFIG
    port: int = 8000
    host: str = "127.0.0.1"
    gateway_jwt_secret: SecretStr | None = None
    gateway_operator_key: SecretStr | None = None

    @classmethod
    def from_env(cls) -> Settings:
        return cls()

    def config(self) -> GatewayConfig:
        """Parse and validate the TOML file; raises ValueError naming the file on any error."""
        try:
            raw = tomllib.loads(self.gateway_config.read_text())
            config = GatewayConfig.model_validate(raw)
        except (OSError, tomllib.TOMLDecodeError, ValueError) as exc:
            raise ValueError(f"invalid gateway config {self.gateway_config}: {exc}") from exc
        if self.gateway_jwt_secret is not None:
            auth = config.auth.model_copy(update={"jwt_secret": self.gateway_jwt_secret})
            config = config.model_copy(update={"auth": auth})
        security = config.security
        if self.gateway_operator_key is not None:
            security = security.model_copy(update={"operator_key": self.gateway_operator_key})
        if security.persisted_operations is not None:
            folder = self.gateway_config.parent / security.persisted_operations
            security = security.model_copy(update={"persisted_operations": folder})
        return config.model_copy(update={"security": security})
