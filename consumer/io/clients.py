"""Kafka client settings in one place, reachability checks and topic administration.

Every producer, consumer and admin client in streamrank is built from these functions, so
security settings pass through everywhere and the group-timing settings that make joins fast on
the embedded broker (a ~23 s join with kafka-python's defaults, ~3 s with these) are set once.
"""

from __future__ import annotations

import socket
import time
from bisect import bisect_left
from operator import attrgetter
from typing import Any

from consumer.config import Config
from consumer.errors import BrokerUnavailable, ConfigError, TopicLayoutError, TopicNotFound

# Shorter session/heartbeat than kafka-python's defaults: a rebalance after a crash or a join
# completes in seconds, not tens of seconds. Safe for the worker: a poll batch takes milliseconds.
GROUP_TIMING = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}
_offset = attrgetter("offset")


def client_kwargs(cfg: Config) -> dict[str, Any]:
    """Connection and security settings shared by every client."""
    if not cfg.bootstrap:
        raise ConfigError("no Kafka bootstrap servers: pass --bootstrap HOST:PORT or set KAFKA_BOOTSTRAP_SERVERS")
    kw: dict[str, Any] = {
        "bootstrap_servers": cfg.bootstrap.split(","),
        "client_id": cfg.client_id,
        "security_protocol": cfg.security_protocol,
        "request_timeout_ms": 30_000,
        "reconnect_backoff_ms": 100,
        "reconnect_backoff_max_ms": 5_000,
    }
    kw.update(security_settings(cfg))
    return kw


# (Config field, kafka-python argument, librdkafka property, the protocols it applies to)
_SECURITY = (
    ("sasl_mechanism", "sasl_mechanism", "sasl.mechanism", "SASL"),
    ("sasl_username", "sasl_plain_username", "sasl.username", "SASL"),
    ("sasl_password", "sasl_plain_password", "sasl.password", "SASL"),
    ("ssl_cafile", "ssl_cafile", "ssl.ca.location", "SSL"),
    ("ssl_certfile", "ssl_certfile", "ssl.certificate.location", "SSL"),
    ("ssl_keyfile", "ssl_keyfile", "ssl.key.location", "SSL"),
    ("ssl_password", "ssl_password", "ssl.key.password", "SSL"),
)


def security_settings(cfg: Config, *, librdkafka: bool = False) -> dict[str, Any]:
    """The SASL/SSL settings that apply to ``cfg.security_protocol``, under kafka-python's
    argument names or librdkafka's property names (``consumer.io.transport``)."""
    proto = cfg.security_protocol
    out: dict[str, Any] = {}
    for field_name, kafka_python, rdkafka, applies in _SECURITY:
        value = getattr(cfg, field_name)
        if value and (proto.startswith("SASL") if applies == "SASL" else proto.endswith("SSL")):
            out[rdkafka if librdkafka else kafka_python] = value
    return out


def producer_kwargs(cfg: Config, **overrides: Any) -> dict[str, Any]:
    kw = client_kwargs(cfg)
    kw.update(
        acks="all",
        linger_ms=5,
        batch_size=256 * 1024,
        max_request_size=8 * 1024 * 1024,
        retries=2_147_483_647,
        # Ordering across retries matters for the changelog: one in-flight request per broker.
        max_in_flight_requests_per_connection=1,
        delivery_timeout_ms=120_000,
    )
    kw.update(overrides)
    return kw


def consumer_kwargs(cfg: Config, group_id: str | None, **overrides: Any) -> dict[str, Any]:
    kw = client_kwargs(cfg)
    kw.update(
        group_id=group_id,
        enable_auto_commit=False,
        # A fetch that gets no answer is retried after this long. The embedded broker now and then
        # leaves a fetch unanswered; kafka-python's 30 s default would stall the worker that long.
        request_timeout_ms=10_000,
        # The embedded broker holds a fetch for the full max wait whenever some partitions in it
        # are at their end, even when others have data; a short wait bounds that stall (100 ms →
        # 20 ms took the half-load p50 from ~45 to ~15 ms in make bench). On real Kafka it only
        # means more frequent empty fetches while idle.
        fetch_max_wait_ms=cfg.fetch_max_wait_ms,
        auto_offset_reset="earliest",
        # Every reader skips aborted transactions (exactly_once workers write in transactions);
        # without transactions it reads exactly what read_uncommitted would.
        isolation_level="read_committed",
        max_poll_records=cfg.batch_size,
        # The per-partition limit times the partition count stays under the response limit, so
        # every assigned partition gets data in every fetch: the per-partition merge of the two
        # input topics waits for the slower one, and a broker that fills a response partition by
        # partition (the embedded one does) would otherwise starve the business topic.
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=512 * 1024,
        **GROUP_TIMING,
    )
    kw.update(overrides)
    return kw


def check_reachable(bootstrap: str, timeout_s: float = 5.0) -> None:
    """Fail fast, with one clear line, when no bootstrap server accepts a TCP connection."""
    if not bootstrap:
        raise ConfigError("no Kafka bootstrap servers: pass --bootstrap HOST:PORT or set KAFKA_BOOTSTRAP_SERVERS")
    errors = []
    deadline = time.monotonic() + timeout_s
    for hostport in bootstrap.split(","):
        host, _, port = hostport.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"bootstrap server {hostport!r} is not HOST:PORT")
        try:
            with socket.create_connection((host, int(port)), timeout=max(0.5, deadline - time.monotonic())):
                return
        except OSError as exc:
            errors.append(f"{hostport}: {exc.strerror or exc}")
    raise BrokerUnavailable(f"no Kafka broker reachable at {bootstrap} ({'; '.join(errors)})")


def admin_client(cfg: Config):
    from kafka import KafkaAdminClient

    check_reachable(cfg.bootstrap)
    return KafkaAdminClient(**client_kwargs(cfg))


def topic_specs(cfg: Config) -> list[tuple[str, int, dict[str, str]]]:
    """(name, partitions, configs) of every topic streamrank uses.

    The two input topics always get the same partition count: the worker joins business and
    activity events by business_id within a partition (co-partitioning).
    """
    compact = {"cleanup.policy": "compact"}
    # Record timestamps are event times: under a time retention, history older than retention.ms
    # (by event time) is deleted within minutes of being published (seen on Apache Kafka).
    event_log = {"retention.ms": str(cfg.input_retention_ms)}
    return [
        (cfg.business_topic, cfg.partitions, compact),
        (cfg.activity_topic, cfg.partitions, event_log),
        (cfg.predictions_topic, cfg.partitions, {}),
        (cfg.dead_letter_topic, cfg.partitions, {}),
        (cfg.changelog_topic, cfg.partitions, compact),
    ]


def create_topics(cfg: Config, specs: list[tuple[str, int, dict[str, str]]] | None = None) -> dict[str, str]:
    """Create missing topics; leave existing ones alone. Returns name → "created" | "exists"."""
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    specs = topic_specs(cfg) if specs is None else specs
    admin = admin_client(cfg)
    try:
        existing = set(admin.list_topics())
        result: dict[str, str] = {}
        missing = []
        for name, parts, configs in specs:
            if name in existing:
                result[name] = "exists"
            else:
                missing.append(NewTopic(name, parts, cfg.replication, topic_configs=configs))
        for topic in missing:
            # One at a time: a concurrent creator makes one fail with "exists", not the batch.
            try:
                admin.create_topics([topic])
                result[topic.name] = "created"
            except TopicAlreadyExistsError:
                result[topic.name] = "exists"
        _wait_for_topics(admin, [s[0] for s in specs])
        return result
    finally:
        admin.close()


def _wait_for_topics(admin, names: list[str], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if set(names) <= set(admin.list_topics()):
            return
        time.sleep(0.1)
    raise TopicLayoutError(f"topics {names} not visible {timeout_s:.0f}s after creation")


def partition_counts(cfg: Config, topics: list[str] | tuple[str, ...]) -> dict[str, int]:
    admin = admin_client(cfg)
    try:
        described = admin.describe_topics(list(topics))
    finally:
        admin.close()
    counts = {}
    for t in described:
        if t.get("error_code", 0) != 0 or not t.get("partitions"):
            raise TopicNotFound(t.get("name"), "run `streamrank topics create`")
        counts[t["name"]] = len(t["partitions"])
    return counts


def topic_config(cfg: Config, topic: str, name: str) -> str | None:
    """The broker's value of one topic setting (defaults included); None where the broker cannot
    say: the embedded Tansu has no DescribeConfigs (it drops the connection)."""
    from kafka.admin import ConfigResource, ConfigResourceType
    from kafka.errors import KafkaError

    admin = admin_client(cfg)
    try:
        described = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, configs=[name])], config_filter="all"
        )
    except (KafkaError, OSError):
        return None
    finally:
        admin.close()
    entry = described.get("topic", {}).get(topic, {}).get(name)
    return None if entry is None else entry.get("value")


def check_compacted(cfg: Config, topic: str, role: str) -> bool:
    """Refuse a ``topic`` whose cleanup policy does not compact. A state changelog (or the business
    table) under ``delete`` loses the latest value of every key idle longer than ``retention.ms``:
    after a restore those businesses would be scored from empty state, silently. Returns False
    when the broker cannot tell (then nothing was verified)."""
    policy = topic_config(cfg, topic, "cleanup.policy")
    if policy is None:
        return False
    if "compact" not in [p.strip() for p in policy.split(",")]:
        raise TopicLayoutError(
            f"{role} topic {topic} has cleanup.policy={policy}: state kept there would expire with retention.ms. "
            f"Make it compacted (kafka-configs.sh --alter --entity-type topics --entity-name {topic} "
            f"--add-config cleanup.policy=compact) or let `streamrank topics create` create it"
        )
    return True


def check_copartitioned(cfg: Config) -> int:
    """The partition count shared by both input topics; refuse a layout where they differ."""
    counts = partition_counts(cfg, cfg.input_topics)
    if len(set(counts.values())) != 1:
        detail = ", ".join(f"{t}={n}" for t, n in counts.items())
        raise TopicLayoutError(
            f"input topics are not co-partitioned ({detail}): business and activity events for one business "
            "must land in the same partition number; recreate them with the same partition count"
        )
    return next(iter(counts.values()))


def iter_to_highwater(
    consumer: Any,
    tps: list[Any],
    *,
    poll_ms: int = 300,
    max_records: int = 10_000,
    idle_timeout_s: float = 30.0,
    on_poll: Any = None,
    until: dict[Any, int] | None = None,
) -> Any:
    """Yield every record of the assigned ``tps`` from the consumer's position up to the
    high-water mark each partition reported on its first fetch (or up to ``until[tp]``,
    exclusive, for the partitions it names), then stop.

    The high-water mark comes from the fetch, not ``end_offsets`` (wrong on the embedded broker).
    Records produced after the snapshot are not read. ``on_poll(pending)`` is called after each
    poll with the number of partitions still unfinished. A read that makes no progress for
    ``idle_timeout_s`` raises :class:`TimeoutError`.
    """
    for _, recs in iter_batches_to_highwater(
        consumer,
        tps,
        poll_ms=poll_ms,
        max_records=max_records,
        idle_timeout_s=idle_timeout_s,
        on_poll=on_poll,
        until=until,
    ):
        yield from recs


def iter_batches_to_highwater(
    consumer: Any,
    tps: list[Any],
    *,
    poll_ms: int = 300,
    max_records: int = 10_000,
    idle_timeout_s: float = 30.0,
    on_poll: Any = None,
    until: dict[Any, int] | None = None,
) -> Any:
    """:func:`iter_to_highwater` a poll batch at a time: ``(tp, records)``, the records of one
    partition in offset order (never empty), for readers whose per-record work is cheaper in bulk."""
    targets: dict[Any, int] = dict(until or {})
    pending = set(tps)
    last = time.monotonic()
    while pending:
        batch = consumer.poll(timeout_ms=poll_ms, max_records=max_records)
        for tp in pending:
            if tp not in targets:
                hw = consumer.highwater(tp)
                if hw is not None:
                    targets[tp] = hw
        for tp, recs in batch.items():
            target = targets.get(tp)
            if target is not None and recs and recs[-1].offset >= target:
                recs = recs[: bisect_left(recs, target, key=_offset)]
            if recs:
                yield tp, recs
            last = time.monotonic()
        for tp in list(pending):
            if tp in targets and consumer.position(tp) >= targets[tp]:
                pending.discard(tp)
                # Past the snapshot: not ours to read. (Never resumed, so kafka-python's
                # stranded-fetch-after-resume problem cannot arise here.)
                consumer.pause(tp)
        if on_poll is not None:
            on_poll(len(pending))
        if pending and time.monotonic() - last > idle_timeout_s:
            stuck = sorted(f"{tp.topic}[{tp.partition}]" for tp in pending)
            raise TimeoutError(f"reading to the high-water mark stalled for {idle_timeout_s:.0f}s on {stuck}")
