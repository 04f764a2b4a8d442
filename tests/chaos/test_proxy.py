"""The latency proxy itself: delays are real, a pause hangs, a kill refuses, revive heals."""

from __future__ import annotations

import time

import pytest
import redis

from tests.chaos.proxy import LatencyProxy

pytestmark = pytest.mark.chaos


def _ping_ms(client: redis.Redis) -> float:
    began = time.perf_counter()
    client.ping()
    return (time.perf_counter() - began) * 1000


def test_delay_pause_kill_and_revive(redis_server) -> None:
    with LatencyProxy("127.0.0.1", redis_server.port) as proxy:
        client = redis.Redis.from_url(proxy.url, socket_timeout=0.3)
        assert _ping_ms(client) < 50
        proxy.set_delay(120)
        assert 110 <= _ping_ms(client) < 300
        proxy.set_delay(0)
        proxy.pause()
        with pytest.raises(redis.exceptions.TimeoutError):
            client.ping()
        proxy.resume()
        fresh = redis.Redis.from_url(proxy.url, socket_timeout=0.3)
        assert fresh.ping()
        proxy.kill()
        with pytest.raises(redis.exceptions.ConnectionError):
            redis.Redis.from_url(proxy.url, socket_timeout=0.3).ping()
        proxy.revive()
        assert redis.Redis.from_url(proxy.url, socket_timeout=0.3).ping()
