"""Cross-region replication on two real Redis servers: convergence, no double counting,
partitions and restarts, data residency, and what crosses the boundary."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import redis

from checkout_risk.cli import main
from feature_views.contract import normalize_attempts
from feature_views.offline import prepare
from feature_views.online import OnlineFeatureStore
from feature_views.replication import (
    REPLICATED_FIELDS,
    Destination,
    ReplicationError,
    Replicator,
    decode_update,
    outbox_key,
)
from feature_views.store import StoreUnavailable, connect, embedded_url, stop_embedded
from serve_graph.config import (
    PUBLISH_ENV,
    load_region,
    publish_outbox,
    regions,
    replication_targets,
)
from serve_graph.stages import FeatureLookup

T0 = pd.Timestamp("2026-03-02T12:00:00Z")


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Two independent embedded Redis servers, one per region, on their own sockets."""
    base = Path(tmp_path_factory.mktemp("repl"))
    dirs = {"a": base / "a", "b": base / "b"}
    urls = {name: embedded_url(d) for name, d in dirs.items()}
    assert urls["a"] != urls["b"]
    yield urls
    for d in dirs.values():
        stop_embedded(d)


class Region:
    """One region: its Redis, a namespace, a store that publishes to its outbox."""

    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.client = connect(url, timeout_s=5.0)
        self.ns = f"{name}-{uuid.uuid4().hex[:6]}"
        self.store = OnlineFeatureStore(self.client, self.ns, outbox=outbox_key(self.ns))

    def destination(self) -> Destination:
        return Destination(self.name, self.client, self.ns)


@pytest.fixture
def pair(servers: dict[str, str]) -> Iterator[tuple[Region, Region]]:
    a, b = Region("us-east", servers["a"]), Region("ap-southeast", servers["b"])
    yield a, b
    for region in (a, b):
        region.store.flush_namespace()


def attempts(n: int, start: pd.Timestamp = T0, prefix: str = "t", **kw) -> list[dict]:
    rows = []
    for i in range(n):
        rows.append(
            {
                "transaction_id": f"{prefix}{i}",
                "event_time": start + pd.Timedelta(minutes=i),
                "card_id": kw.get("card_id", "tok_alice"),
                "shopper_id": "shopper_alice",
                "device_id": kw.get("device_id", "dev_alice"),
                "merchant_id": kw.get("merchant_id", "m1"),
                "merchant_category": "5411",
                "card_bin": "411111",
                "amount": 25.0 + i,
                "ip_country": "US",
            }
        )
    return prepare(normalize_attempts(pd.DataFrame(rows))).to_dict("records")


def drain(rep: Replicator) -> tuple[int, int]:
    delivered = applied = 0
    for dest in rep.destinations:
        while (step := rep.step(dest)).delivered:
            delivered += step.delivered
            applied += step.applied
    return delivered, applied


def velocity(store: OnlineFeatureStore, probe: dict) -> dict:
    vec = store.read(probe).values
    names = ("card_count_1h", "card_amount_usd_1h", "shopper_count_24h", "device_count_1h")
    return {k: vec[k] for k in names}


def test_a_shopper_paying_in_two_regions_is_seen_whole_in_both(pair) -> None:
    a, b = pair
    paid = attempts(3)
    probe = attempts(4)[3]  # a fourth attempt, after the three
    assert a.store.write(paid[0]) and a.store.write(paid[1])  # two in us-east
    assert b.store.write(paid[2])  # then one in ap-southeast
    assert velocity(a.store, probe)["card_count_1h"] == 2
    assert velocity(b.store, probe)["card_count_1h"] == 1
    a_to_b = Replicator(a.client, a.ns, [b.destination()])
    b_to_a = Replicator(b.client, b.ns, [a.destination()])
    assert drain(a_to_b) == (2, 2) and drain(b_to_a) == (1, 1)
    # both regions now equal a single store that saw all three attempts
    reference = OnlineFeatureStore(a.client, f"ref-{uuid.uuid4().hex[:6]}")
    try:
        for attempt in paid:
            reference.write(attempt)
        want = reference.read(probe).values
    finally:
        reference.flush_namespace()
    assert a.store.read(probe).values == want
    assert b.store.read(probe).values == want
    assert velocity(a.store, probe)["card_count_1h"] == 3
    # replicated updates are not republished: no echo back to the source
    assert a.client.xlen(outbox_key(a.ns)) == 2 and b.client.xlen(outbox_key(b.ns)) == 1


def test_replay_redelivery_and_failover_retries_never_double_count(pair) -> None:
    a, b = pair
    paid = attempts(3)
    for attempt in paid:
        a.store.write(attempt)
    # the checkout client timed out on us-east and retried t2 in ap-southeast: both applied it
    assert b.store.write(paid[2])
    rep = Replicator(a.client, a.ns, [b.destination()])
    assert drain(rep) == (3, 2)  # t2 was already counted in ap-southeast
    probe = attempts(4)[3]
    once = velocity(b.store, probe)
    assert once["card_count_1h"] == 3
    # replay the whole stream from its start (a new consumer group at 0)
    a.client.xgroup_setid(outbox_key(a.ns), "to:ap-southeast", id="0")
    assert drain(rep) == (3, 0)
    # a consumer that read entries and died before acknowledging: they are re-delivered
    a.store.write(attempts(1, T0 + pd.Timedelta(minutes=10), prefix="late")[0])
    a.client.xreadgroup("to:ap-southeast", "replicator", {outbox_key(a.ns): ">"}, count=10)
    restarted = Replicator(a.client, a.ns, [b.destination()])
    assert drain(restarted) == (1, 1)
    assert drain(restarted) == (0, 0)
    later = attempts(1, T0 + pd.Timedelta(minutes=20), prefix="probe")[0]
    assert velocity(b.store, later) == velocity(a.store, later)
    assert velocity(b.store, later)["card_count_1h"] == 4
    # a retried attempt in the source is neither re-applied nor re-published
    before = a.client.xlen(outbox_key(a.ns))
    assert a.store.write(paid[0]) is False
    assert a.client.xlen(outbox_key(a.ns)) == before


def test_replicators_share_an_outbox_and_take_over_a_dead_ones_entries(pair) -> None:
    a, b = pair
    for attempt in attempts(6):
        a.store.write(attempt)
    one = Replicator(a.client, a.ns, [b.destination()], consumer="pod-1", batch=2)
    two = Replicator(a.client, a.ns, [b.destination()], consumer="pod-2", batch=2)
    assert one.step(one.destinations[0]).delivered == 2
    assert two.step(two.destinations[0]).delivered == 2  # the next two, not the same ones
    # pod-3 reads two entries and dies before applying them
    a.client.xreadgroup("to:ap-southeast", "pod-3", {outbox_key(a.ns): ">"}, count=2)
    assert drain(one) == (0, 0)  # pod-3's entries are not idle long enough to claim
    eager = Replicator(a.client, a.ns, [b.destination()], consumer="pod-1", claim_idle_ms=0)
    assert drain(eager) == (2, 2)
    probe = attempts(7)[6]
    assert velocity(b.store, probe) == velocity(a.store, probe)
    assert velocity(b.store, probe)["card_count_1h"] == 6


def test_a_partition_holds_updates_and_converges_after_restart(pair, tmp_path: Path) -> None:
    a, b = pair
    probe = attempts(7)[6]
    unreachable = redis.Redis(unix_socket_path=str(tmp_path / "nowhere.sock"))
    cut = Replicator(a.client, a.ns, [Destination(b.name, unreachable, b.ns)])
    for attempt in attempts(3):
        a.store.write(attempt)
    with pytest.raises(StoreUnavailable):
        cut.step(cut.destinations[0])
    assert cut.pending() == {"ap-southeast": 3}  # delivered, never acknowledged
    for attempt in attempts(6)[3:]:  # traffic goes on during the partition
        a.store.write(attempt)
    assert velocity(b.store, probe)["card_count_1h"] == 0
    # the link returns; a fresh replicator process (same consumer name) resumes
    healed = Replicator(a.client, a.ns, [b.destination()])
    stop = threading.Event()
    thread = threading.Thread(target=healed.run, args=(stop,), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while velocity(b.store, probe)["card_count_1h"] < 6 and time.monotonic() < deadline:
            time.sleep(0.02)
        # live traffic after the heal flows within milliseconds
        a.store.write(attempts(1, T0 + pd.Timedelta(seconds=330), prefix="live")[0])
        while velocity(b.store, probe)["card_count_1h"] < 7 and time.monotonic() < deadline:
            time.sleep(0.005)
    finally:
        stop.set()
        thread.join(5)
    assert velocity(b.store, probe) == velocity(a.store, probe)
    assert velocity(b.store, probe)["card_count_1h"] == 7
    assert healed.pending() == {"ap-southeast": 0}


def test_entries_trimmed_during_a_long_partition_are_reported(pair, caplog) -> None:
    a, b = pair
    small = OnlineFeatureStore(a.client, a.ns, outbox=outbox_key(a.ns), outbox_maxlen=1)
    rep = Replicator(a.client, a.ns, [b.destination()])
    small.write(attempts(1, prefix="x")[0])
    assert drain(rep) == (1, 1)
    for attempt in attempts(400, T0 + pd.Timedelta(hours=1), prefix="y"):
        small.write(attempt)  # MAXLEN ~ 1 trims whole nodes of ~100 entries
    with caplog.at_level("ERROR"):
        drain(rep)
    assert "trimmed before delivery" in caplog.text


def test_only_the_declared_fields_cross_and_never_a_card_number(pair) -> None:
    a, _ = pair
    attempt = attempts(1)[0] | {"email_domain": "example.com", "billing_country": "FR"}
    a.store.write(attempt)
    ((_, fields),) = a.client.xrange(outbox_key(a.ns))
    update = json.loads(fields[b"u"])
    assert set(update) == set(REPLICATED_FIELDS) | {"event_ms"}
    assert set(REPLICATED_FIELDS) == {
        "amount_usd",
        "card_bin",
        "card_id",
        "device_id",
        "ip_country",
        "merchant_category",
        "merchant_id",
        "shopper_id",
        "transaction_id",
    }
    assert decode_update(fields[b"u"]) == update
    with pytest.raises(ReplicationError, match="card number"):
        a.store.write(attempt | {"transaction_id": "pan", "card_id": "4111111111111111"})
    assert a.client.exists(f"{a.ns}:g:tx:pan") == 0  # refused before anything was written
    with pytest.raises(ReplicationError, match="unknown fields"):
        decode_update(json.dumps(update | {"email": "alice@example.com"}))
    with pytest.raises(ReplicationError):
        decode_update(b"not json")
    with pytest.raises(ReplicationError, match="device_id: contains control"):
        decode_update(json.dumps(update | {"device_id": "dev\x1eice"}))  # skipped, not applied


def test_residency_keeps_eu_updates_in_the_eu(monkeypatch) -> None:
    configs = regions()
    eu = load_region("eu-west")
    assert replication_targets(eu, configs) == []  # no other EU region today
    assert replication_targets(load_region("us-east"), configs) == ["ap-southeast", "eu-west"]
    second_eu = eu.model_copy(update={"name": "eu-central", "namespace": "eu-central"})
    assert replication_targets(eu, [*configs, second_eu]) == ["eu-central"]
    forbidden = eu.model_copy(update={"replicate_to": ["us-east"]})
    with pytest.raises(ValueError, match="data must stay in EU"):
        replication_targets(forbidden, configs)
    narrowed = load_region("us-east").model_copy(update={"replicate_to": ["eu-west"]})
    assert replication_targets(narrowed, configs) == ["eu-west"]
    with pytest.raises(ValueError, match="unknown regions"):
        replication_targets(narrowed.model_copy(update={"replicate_to": ["mars"]}), configs)
    # serving publishes only when switched on, and never where residency leaves no one
    monkeypatch.delenv(PUBLISH_ENV, raising=False)
    assert publish_outbox(load_region("us-east")) is None
    monkeypatch.setenv(PUBLISH_ENV, "1")
    assert publish_outbox(load_region("us-east")) == "us-east:repl:out"
    assert publish_outbox(eu) is None


def test_serving_writes_publish_to_the_outbox(servers, monkeypatch) -> None:
    ns = f"srv-{uuid.uuid4().hex[:6]}"
    lookup = FeatureLookup(servers["a"], ns, timeout_ms=1000, outbox=outbox_key(ns))
    lookup.update(attempts(2), ["{}", "{}"])
    client = connect(servers["a"], 5.0)
    try:
        assert client.xlen(outbox_key(ns)) == 2
    finally:
        OnlineFeatureStore(client, ns).flush_namespace()


def test_replicate_command_enforces_residency_and_drains(servers, capsys, monkeypatch) -> None:
    assert main(["replicate", "--region", "eu-west", "--to", f"us-east={servers['b']}"]) == 2
    assert "may not go to us-east" in capsys.readouterr().err
    monkeypatch.delenv("REDIS_URL_AP_SOUTHEAST", raising=False)
    assert main(["replicate", "--region", "us-east", "--to", "ap-southeast", "--once"]) == 2
    assert "REDIS_URL_AP_SOUTHEAST" in capsys.readouterr().err
    # the command uses the regions' own namespaces: us-east -> ap-southeast, databases 0 / 2
    source = OnlineFeatureStore(
        connect(servers["a"] + "?db=0", 5.0), "us-east", outbox=outbox_key("us-east")
    )
    dest = OnlineFeatureStore(connect(servers["b"] + "?db=2", 5.0), "ap-southeast")
    try:
        for attempt in attempts(2, prefix=f"cli{uuid.uuid4().hex[:4]}"):
            source.write(attempt)
        argv = ["replicate", "--region", "us-east", "--source", servers["a"]]
        assert main([*argv, "--to", f"ap-southeast={servers['b']}", "--once"]) == 0
        assert "us-east -> ap-southeast: 2 delivered, 2 new" in capsys.readouterr().out
        assert velocity(dest, attempts(3)[2])["card_count_1h"] == 2
    finally:
        source.flush_namespace()
        dest.flush_namespace()
