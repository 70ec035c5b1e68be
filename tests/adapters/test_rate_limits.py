"""Rate limits: token buckets shared by every instance through a real Redis, in-process when
Redis is missing or down, and the 429 a served gateway answers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from redis.asyncio import Redis

from gateway.config import SecurityConfig, Settings
from gateway.ratelimit import Bucket, LocalBuckets, Rate, SharedBuckets
from legacy.launcher import RunningEstate
from tests.support import (
    DEMO_CONFIG,
    REDIS_TEST_URL,
    ManualClock,
    ServedGateway,
    missing_service,
    serve_gateway,
)

pytestmark = pytest.mark.redis
UNREACHABLE = "redis://127.0.0.1:1/0"


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_TEST_URL)
    try:
        await client.ping()
    except OSError:
        missing_service("Redis", "redis-server --port 6379")
    yield client
    await client.aclose()


@pytest.fixture
def prefix() -> str:
    """Keys of this test only: other test runs share the server."""
    return f"test:ratelimit:{uuid.uuid4().hex}"


def bucket(prefix: str, name: str, per_second: float = 1.0, burst: int = 3) -> Bucket:
    return Bucket(f"{prefix}:{name}", Rate(per_second, burst))


async def test_two_instances_draw_on_one_bucket(redis: Redis, prefix: str) -> None:
    # given two gateway instances over one Redis
    first, second = SharedBuckets(redis), SharedBuckets(redis)
    channel = [bucket(prefix, "channel:web", per_second=0.5, burst=3)]
    # when
    waits = [await first.take(channel), await second.take(channel), await first.take(channel)]
    refused = await second.take(channel)
    # then
    assert waits == [0.0, 0.0, 0.0]
    assert 1.9 < refused <= 2.0  # one token at half a token per second
    assert first.shared
    assert second.shared


async def test_a_customer_over_their_limit_takes_nothing_from_the_channel(
    redis: Redis, prefix: str
) -> None:
    # given
    limits = SharedBuckets(redis)
    channel = bucket(prefix, "channel:mobile", burst=10)
    customer = bucket(prefix, "customer:C0001", burst=1)
    assert await limits.take([channel, customer]) == 0
    # when
    refused = await limits.take([channel, customer])
    # then: the channel still holds 9 tokens, of which another customer takes one
    assert refused > 0
    tokens = float(await redis.hget(channel.key, "tokens") or 0)
    assert 9.0 <= tokens < 9.1
    assert await limits.take([channel, bucket(prefix, "customer:C0002", burst=1)]) == 0


async def test_without_redis_the_buckets_are_this_processs() -> None:
    clock = ManualClock()
    limits = SharedBuckets(None, LocalBuckets(clock), clock=clock)
    channel = [Bucket("channel:kiosk", Rate(per_second=2, burst=2))]

    taken = [await limits.take(channel) for _ in range(3)]
    clock.now += 0.5
    refilled = await limits.take(channel)

    assert taken[:2] == [0.0, 0.0]
    assert taken[2] == pytest.approx(0.5)
    assert refilled == 0.0
    assert not limits.shared


async def test_an_unreachable_redis_falls_back_to_the_process_and_is_retried_later() -> None:
    # given a Redis that refuses connections
    clock = ManualClock()
    down = Redis.from_url(UNREACHABLE)
    limits = SharedBuckets(down, LocalBuckets(clock), retry_after=5.0, clock=clock)
    channel = [Bucket("channel:pos", Rate(per_second=1, burst=2))]
    # when
    taken = [await limits.take(channel) for _ in range(3)]
    # then the process's buckets decided, and Redis is left alone until retry_after
    assert taken[:2] == [0.0, 0.0]
    assert taken[2] > 0
    assert not limits.shared
    clock.now += 5.0
    assert limits.shared
    await down.aclose()


# --------------------------------------------------------------------------- served


@pytest.fixture
def limited_gateway(
    estate: RunningEstate, pg_databases: Callable[[], str], prefix: str, redis: Redis
) -> Iterator[ServedGateway]:
    """The gateway with the partner's key limited to a burst of 3 requests, a customer to 2."""
    demo = Settings(gateway_config=DEMO_CONFIG).config()
    channels = {
        key: channel.model_copy(update={"requests_per_second": 0.1, "burst": 3})
        if channel.name == "partner"
        else channel
        for key, channel in demo.channels.items()
    }
    security = SecurityConfig(
        **{
            **demo.security.model_dump(),
            "rate_limit_prefix": prefix,
            "customer_requests_per_second": 0.1,
            "customer_burst": 2,
        }
    )
    served = serve_gateway(
        estate,
        pg_databases(),
        redis_url=REDIS_TEST_URL,
        config={"channels": channels, "security": security},
    )
    yield served
    served.stop()


def test_a_channel_over_its_rate_gets_429_with_retry_after(
    limited_gateway: ServedGateway,
) -> None:
    answers = [limited_gateway.graphql("{ __typename }", key="demo-partner") for _ in range(4)]
    others = limited_gateway.graphql("{ __typename }", key="demo-web")

    assert [answer.status_code for answer in answers] == [200, 200, 200, 429]
    refused = answers[3]
    assert 1 <= int(refused.headers["retry-after"]) <= 10
    assert refused.json()["errors"][0]["extensions"] == {"code": "RATE_LIMITED"}
    assert others.status_code == 200


def test_a_customer_over_their_rate_gets_429_on_any_channel(
    limited_gateway: ServedGateway,
) -> None:
    from gateway.security import CustomerTokens

    config = Settings(gateway_config=DEMO_CONFIG).config()
    token = CustomerTokens(config.auth).issue("C0007")

    answers = [
        limited_gateway.graphql("{ me { id } }", key=key, token=token)
        for key in ("demo-web", "demo-mobile", "demo-kiosk")
    ]
    anonymous = limited_gateway.graphql("{ __typename }", key="demo-web")

    assert [answer.status_code for answer in answers] == [200, 200, 429]
    assert anonymous.status_code == 200


def test_the_gateway_serves_with_its_redis_down(
    estate: RunningEstate, pg_databases: Callable[[], str]
) -> None:
    served = serve_gateway(estate, pg_databases(), redis_url=UNREACHABLE)
    try:
        answers = [served.graphql("{ __typename }") for _ in range(3)]
    finally:
        served.stop()

    assert [answer.status_code for answer in answers] == [200, 200, 200]
