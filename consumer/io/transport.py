"""Transport: the Kafka client under the worker, kafka-python (default) or confluent-kafka.

The worker reads through an :class:`InputConsumer` and writes through an :class:`OutputProducer`;
those two small surfaces are all it knows of the client, so the client can change without the
worker (or the passthrough ceiling of ``consumer.tools.benchkit``, which uses the same two) changing.

``kafka-python`` (pure Python, always installed): ``KafkaConsumer`` *is* the input surface (the
names below are its names), the output wraps ``KafkaProducer`` and its per-record futures.

``confluent`` (``pip install 'streamrank[confluent]'``, librdkafka underneath): fetching,
batching and delivery run in librdkafka's C threads, so the per-record Python cost is a fraction
of kafka-python's; the figures are in ``make bench``. Adapted here to the same surface:
kafka-python's ``TopicPartition``/``OffsetAndMetadata`` stay the worker's types; rebalance
callbacks arrive inside ``poll`` on the worker's thread (as with kafka-python); only failed
deliveries call back into Python (``delivery.report.only.error``), and ``flush`` turns them
into :class:`~consumer.errors.DeliveryError`.

The worker's input, outputs and state restore go through its transport; the replay, diff and
trainer reads use kafka-python.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any, NamedTuple, Protocol

from consumer.config import TRANSPORTS, Config
from consumer.errors import CommitFailed, ConfigError, ConsumerError, DeliveryError, ProducerFenced, TransportError
from consumer.io.clients import (
    GROUP_TIMING,
    consumer_kwargs,
    producer_kwargs,
    security_settings,
)

KAFKA_PYTHON, CONFLUENT = TRANSPORTS
# A reader goes start to end: large fetches mean fewer round trips (the worker's input keeps small
# per-partition fetches, so every partition gets data in each response).
RESTORE_FETCH_BYTES = 8 * 1024 * 1024
# librdkafka's prefetch queue for a reader: room for more than one full fetch response of a few
# partitions, so the next fetch goes out while the last one is consumed.
RESTORE_QUEUE_KBYTES = 64 * 1024
# librdkafka >= 2.4 waits fetch.queue.backoff.ms (1 s by default) before fetching again once its
# queue is over the limit: with RESTORE_FETCH_BYTES per partition one response fills it, and a
# restore then spent most of its time in that wait (200,000 entries: 4.5 s, ~1 s without it).
RESTORE_QUEUE_BACKOFF_MS = 1
_LIBRDKAFKA_QUEUE_BACKOFF = 0x02040000  # the first librdkafka with fetch.queue.backoff.ms


class InputConsumer(Protocol):
    """What the worker calls on its input consumer (kafka-python's ``KafkaConsumer`` names)."""

    def subscribe(self, topics: list[str], listener: Any) -> None: ...
    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[Any, list[Any]]: ...
    def highwater(self, tp: Any) -> int | None: ...
    def position(self, tp: Any, timeout_ms: int | None = None) -> int | None: ...
    def committed(self, tp: Any, timeout_ms: int | None = None) -> int | None: ...
    def commit(self, offsets: dict[Any, Any]) -> None: ...
    def seek(self, tp: Any, offset: int) -> None: ...
    def seek_to_beginning(self, *tps: Any) -> None: ...
    def assignment(self) -> set[Any]: ...
    def group_metadata(self) -> Any: ...
    def close(self) -> None: ...


class OutputProducer(Protocol):
    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None: ...

    def send_many(
        self, topic: str, keys: list[bytes], values: list[bytes], partitions: list[int] | None = None
    ) -> None:
        """``send`` of each (key, value[, partition]), in order, without headers: a batch's predictions."""

    def flush(self, timeout_s: float) -> None:
        """Block until every send since the last flush is acknowledged; raise DeliveryError if not."""

    def close(self) -> None: ...


class TransactionalOutput(OutputProducer, Protocol):
    """exactly_once: every send belongs to a transaction, begun by the first send after a commit
    or an abort; ``commit`` adds the consumed offsets (with the consumer's group metadata, so a
    worker whose partitions moved is fenced by the group coordinator: KIP-447) and commits."""

    in_transaction: bool

    def commit(self, offsets: dict[Any, int], consumer: Any) -> None: ...
    def abort(self) -> None: ...


# How long a transaction may stay open before the coordinator aborts it. A transaction spans a
# checkpoint interval, plus a broker outage it waits through; a crashed worker's open transaction
# blocks read_committed readers of its partitions this long unless it restarts (with its stable
# transactional id) sooner.
TRANSACTION_TIMEOUT_MS = 60_000


def transactional_id(cfg: Config) -> str:
    """``STREAMRANK_TRANSACTIONAL_ID``, else ``<group>-<host name>``: stable across restarts of a
    worker (its restart aborts what it left open at once) and unique while one worker runs per host."""
    return cfg.transactional_id or f"{cfg.group_id}-{socket.gethostname()}"


def check_transport(name: str) -> str:
    if name not in TRANSPORTS:
        raise ConfigError(f"unknown transport {name!r}: choose one of {', '.join(TRANSPORTS)}")
    if name == CONFLUENT:
        try:
            import confluent_kafka  # noqa: F401
        except ImportError as exc:
            raise ConfigError(
                "transport 'confluent' needs confluent-kafka: pip install 'streamrank[confluent]'"
            ) from exc
    return name


def input_consumer(cfg: Config, group_id: str) -> InputConsumer:
    """A group consumer with the range assignor: partition p of every input topic lands on one worker."""
    if check_transport(cfg.transport) == CONFLUENT:
        return ConfluentInput(cfg, group_id)
    from kafka import KafkaConsumer
    from kafka.coordinator.assignors.range import RangePartitionAssignor

    return KafkaConsumer(**consumer_kwargs(cfg, group_id, partition_assignment_strategy=(RangePartitionAssignor,)))


def subscribe(consumer: InputConsumer, topics: list[str], listener: Any) -> None:
    """Join the group for ``topics``. With kafka-python the topics' metadata is fetched before the
    first join: otherwise the leader assigns from an empty metadata snapshot (the range assignor
    hands out nothing, or the snapshot changes right after) and a second rebalance follows at
    once, for every member of the group, each time a worker starts (seen on Apache Kafka)."""
    from kafka import KafkaConsumer

    consumer.subscribe(list(topics), listener=listener)
    if isinstance(consumer, KafkaConsumer):
        consumer.topics()  # a blocking metadata fetch; kafka-python updates its snapshot from it


def reader(cfg: Config, name: str) -> Any:
    """A consumer without a group for reading partitions start to end (``assign``,
    ``seek_to_beginning``, ``poll``, ``highwater``, ``position``, ``pause``): the state restore."""
    if check_transport(cfg.transport) == CONFLUENT:
        # librdkafka wants a group id even for a manual assignment; nothing is ever committed to it.
        return ConfluentInput(cfg, f"{cfg.group_id}-{name}", **_confluent_reader_settings())
    from kafka import KafkaConsumer

    # kafka-python keeps the input's fetch sizes: its cost is decoding records in Python, and with
    # RESTORE_FETCH_BYTES a restore took more CPU, not less (50,000 entries: 1.3-1.45 s against 0.8).
    return KafkaConsumer(**consumer_kwargs(cfg, None))


def _confluent_reader_settings() -> dict[str, Any]:
    from confluent_kafka import libversion

    conf: dict[str, Any] = {
        "max.partition.fetch.bytes": RESTORE_FETCH_BYTES,
        "queued.max.messages.kbytes": RESTORE_QUEUE_KBYTES,
    }
    if libversion()[1] >= _LIBRDKAFKA_QUEUE_BACKOFF:
        conf["fetch.queue.backoff.ms"] = RESTORE_QUEUE_BACKOFF_MS
    return conf


def output_producer(cfg: Config) -> OutputProducer:
    if check_transport(cfg.transport) == CONFLUENT:
        return ConfluentOutput(cfg)
    from kafka import KafkaProducer

    return KafkaPythonOutput(KafkaProducer(**producer_kwargs(cfg)))


def transactional_output(cfg: Config, txn_id: str) -> TransactionalOutput:
    """A transactional producer with ``txn_id``, initialised: a previous instance with the same
    id is fenced and its open transaction aborted."""
    if check_transport(cfg.transport) == CONFLUENT:
        return ConfluentTransactions(cfg, txn_id)
    return KafkaPythonTransactions(cfg, txn_id)


def _fenced_or_expired(txn_id: str, begun: float, exc: BaseException) -> ConsumerError:
    """The coordinator refused this producer's epoch: either it aborted our transaction for running
    past the timeout (an outage: make a new producer and go on) or another worker initialised our
    transactional id (stop: two live workers with one id would fence each other forever)."""
    if time.monotonic() - begun >= TRANSACTION_TIMEOUT_MS / 1000:
        return TransportError(f"transaction {txn_id} outlived the transaction timeout and was aborted: {exc}")
    return ProducerFenced(
        f"fenced: another worker started with transactional id {txn_id!r} ({exc}); "
        "give each worker its own STREAMRANK_TRANSACTIONAL_ID"
    )


# ----------------------------------------------------------------------------- kafka-python
class KafkaPythonOutput:
    """``KafkaProducer`` with its futures kept until the next flush. Takes any object with
    kafka-python's ``send``/``flush``/``close`` (tests wrap a real producer to make it fail)."""

    def __init__(self, producer: Any):
        self.producer = producer
        self._futures: list[Any] = []

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        self._futures.append(self.producer.send(topic, key=key, value=value, partition=partition, headers=headers))

    def send_many(
        self, topic: str, keys: list[bytes], values: list[bytes], partitions: list[int] | None = None
    ) -> None:
        send, futures = self.producer.send, self._futures
        if partitions is None:
            futures.extend(send(topic, key=k, value=v) for k, v in zip(keys, values, strict=True))
        else:
            futures.extend(
                send(topic, key=k, value=v, partition=p) for k, v, p in zip(keys, values, partitions, strict=True)
            )

    def flush(self, timeout_s: float) -> None:
        futures, self._futures = self._futures, []
        if not futures:
            return
        self.producer.flush(timeout=timeout_s)
        for f in futures:
            if not f.is_done:
                raise DeliveryError(f"{len(futures)} records not acknowledged within {timeout_s:.0f}s")
            if f.failed():
                raise DeliveryError(f"delivery failed: {f.exception}") from f.exception

    def close(self) -> None:
        try:
            self.producer.flush(timeout=10)
        finally:
            self.producer.close(timeout=10)


class KafkaPythonTransactions(KafkaPythonOutput):
    """``KafkaProducer`` with a ``transactional_id`` (see :class:`TransactionalOutput`)."""

    def __init__(self, cfg: Config, txn_id: str):
        self._cfg = cfg
        self.transactional_id = txn_id
        super().__init__(self._new_producer())
        self.in_transaction = False
        self._begun = 0.0

    def _new_producer(self) -> Any:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        p = KafkaProducer(
            **producer_kwargs(
                self._cfg,
                transactional_id=self.transactional_id,
                transaction_timeout_ms=TRANSACTION_TIMEOUT_MS,
                delivery_timeout_ms=TRANSACTION_TIMEOUT_MS,  # a record cannot outlive its transaction
            )
        )
        try:
            p.init_transactions()
        except KafkaError as exc:
            p.close(timeout=1)
            raise TransportError(f"init_transactions({self.transactional_id}): {exc}") from exc
        return p

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        if not self.in_transaction:
            self._begin()
        self._futures.append(self.producer.send(topic, key=key, value=value, partition=partition, headers=headers))

    def send_many(
        self, topic: str, keys: list[bytes], values: list[bytes], partitions: list[int] | None = None
    ) -> None:
        if not self.in_transaction:
            self._begin()
        super().send_many(topic, keys, values, partitions)

    def _begin(self) -> None:
        self.producer.begin_transaction()
        self.in_transaction = True
        self._begun = time.monotonic()

    def commit(self, offsets: dict[Any, int], consumer: Any) -> None:
        from kafka import OffsetAndMetadata
        from kafka.errors import InvalidProducerEpochError, KafkaError, ProducerFencedError

        try:
            if offsets:
                meta = consumer.group_metadata()
                if meta.generation_id < 0 or not meta.member_id:
                    # kafka-python resets the generation when a stalled consumer leaves the group
                    # (max.poll.interval); the broker accepts offsets without one unfenced, so a
                    # zombie's commit would go through. Its partitions may have moved: abort.
                    raise CommitFailed(
                        f"transaction {self.transactional_id} not committed: this worker is no longer a member "
                        "of its group (its partitions may have moved)"
                    )
                if not self.in_transaction:
                    self._begin()
                om = {tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()}
                self.producer.send_offsets_to_transaction(om, meta)
            if self.in_transaction:
                self.producer.commit_transaction()
                self.in_transaction = False
        except (ProducerFencedError, InvalidProducerEpochError) as exc:
            raise _fenced_or_expired(self.transactional_id, self._begun, exc) from exc
        except KafkaError as exc:
            raise CommitFailed(
                f"transaction {self.transactional_id} not committed: {type(exc).__name__}: {exc}"
            ) from exc

    def abort(self) -> None:
        from kafka.errors import InvalidProducerEpochError, KafkaError, ProducerFencedError

        self._futures = []
        if not self.in_transaction:
            return
        self.in_transaction = False
        try:
            self.producer.abort_transaction()
        except (ProducerFencedError, InvalidProducerEpochError) as exc:
            err = _fenced_or_expired(self.transactional_id, self._begun, exc)
            if isinstance(err, ProducerFenced):
                raise err from exc
            self._replace_producer()
        except KafkaError:
            # The producer is in a fatal state: a new one with the same id aborts what is open.
            self._replace_producer()

    def _replace_producer(self) -> None:
        old, self.producer = self.producer, None
        try:
            old.close(timeout=1)
        finally:
            self.producer = self._new_producer()

    def close(self) -> None:
        try:
            if self.in_transaction:  # stopped between checkpoints: nothing of it is committed
                self.abort()
        finally:
            self.producer.close(timeout=10)


# ----------------------------------------------------------------------------- confluent-kafka
def confluent_settings(cfg: Config) -> dict[str, Any]:
    """librdkafka's names for the connection and security settings of ``consumer.io.clients.client_kwargs``."""
    if not cfg.bootstrap:
        raise ConfigError("no Kafka bootstrap servers: pass --bootstrap HOST:PORT or set KAFKA_BOOTSTRAP_SERVERS")
    conf: dict[str, Any] = {
        "bootstrap.servers": cfg.bootstrap,
        "client.id": cfg.client_id,
        "security.protocol": cfg.security_protocol.lower(),
        "socket.timeout.ms": 30_000,
        "reconnect.backoff.ms": 100,
        "reconnect.backoff.max.ms": 5_000,
        # librdkafka's own log lines go through Python logging (JSON like every other line),
        # not straight to stderr.
        "logger": logging.getLogger("streamrank.librdkafka"),
    }
    conf.update(security_settings(cfg, librdkafka=True))
    return conf


class Record(NamedTuple):
    """The fields of a consumed record the worker reads (kafka-python's ``ConsumerRecord`` names)."""

    key: bytes | None
    value: bytes | None
    offset: int
    timestamp: int
    partition: int


METADATA_WARMUP_S = 5.0


class ConfluentInput:
    """confluent-kafka's ``Consumer`` behind kafka-python's names (see the module docstring)."""

    def __init__(self, cfg: Config, group_id: str, **overrides: Any):
        from confluent_kafka import Consumer
        from confluent_kafka import TopicPartition as CTP

        self._CTP = CTP
        conf = confluent_settings(cfg)
        conf.update(
            {
                "group.id": group_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",  # librdkafka's default; as consumer_kwargs
                "partition.assignment.strategy": "range",
                "session.timeout.ms": GROUP_TIMING["session_timeout_ms"],
                "heartbeat.interval.ms": GROUP_TIMING["heartbeat_interval_ms"],
                # As consumer_kwargs: the embedded broker holds a fetch for the full max wait.
                "fetch.wait.max.ms": cfg.fetch_max_wait_ms,
                "max.partition.fetch.bytes": 512 * 1024,
                "fetch.max.bytes": 64 * 1024 * 1024,
                # librdkafka prefetches per partition in the background; bound what it holds.
                "queued.max.messages.kbytes": 32 * 1024,
            }
        )
        conf.update(overrides)
        self._c = Consumer(conf)
        self._tps: dict[tuple[str, int], Any] = {}
        self._from_start: set[Any] = set()  # manually assigned, at the log start, nothing read yet

    def _tp(self, topic: str, partition: int) -> Any:
        tp = self._tps.get((topic, partition))
        if tp is None:
            from kafka import TopicPartition

            tp = self._tps[(topic, partition)] = TopicPartition(topic, partition)
        return tp

    def _run(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from confluent_kafka import KafkaException

        try:
            return fn(*args, **kwargs)
        except KafkaException as exc:
            raise TransportError(f"{what}: {exc.args[0] if exc.args else exc}") from exc

    def subscribe(self, topics: list[str], listener: Any) -> None:
        def assigned(_c: Any, parts: list[Any]) -> None:
            listener.on_partitions_assigned({self._tp(p.topic, p.partition) for p in parts})

        def revoked(_c: Any, parts: list[Any]) -> None:
            listener.on_partitions_revoked({self._tp(p.topic, p.partition) for p in parts})

        self._c.subscribe(list(topics), on_assign=assigned, on_revoke=revoked)

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[Any, list[Record]]:
        # kafka-python's poll returns as soon as anything is there; librdkafka's consume waits
        # for a full batch until the timeout. So: take what is there; if nothing, wait for one
        # record, then take what came with it.
        n = max_records or 500
        consume = self._c.consume
        msgs = self._run("poll", consume, num_messages=n, timeout=0)
        if not msgs and timeout_ms > 0:
            msgs = self._run("poll", consume, num_messages=1, timeout=timeout_ms / 1000)
            if msgs and n > 1:
                msgs += self._run("poll", consume, num_messages=n - 1, timeout=0)
        out: dict[Any, list[Record]] = {}
        last = None
        recs: list[Record] = []
        p = -1
        new = tuple.__new__  # Record(...) without its Python-level __new__: a restore makes one per entry
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.fatal():
                    raise TransportError(f"poll: {err.str()}")
                continue  # transient (librdkafka retries by itself) or informational
            where = (m.topic(), m.partition())
            if where != last:
                last = where
                p = where[1]
                recs = out.setdefault(self._tp(*where), [])
            recs.append(new(Record, (m.key(), m.value(), m.offset(), m.timestamp()[1], p)))
        if self._from_start and out:
            self._from_start.difference_update(out)
        return out

    def highwater(self, tp: Any) -> int | None:
        # cached=True: the mark of the last fetch response, no broker round trip (and not the
        # ListOffsets answer, which the embedded broker gets wrong).
        _, high = self._c.get_watermark_offsets(self._CTP(tp.topic, tp.partition), cached=True)
        return high if high >= 0 else None

    def position(self, tp: Any, timeout_ms: int | None = None) -> int | None:
        ctp = self._CTP(tp.topic, tp.partition)
        pos = self._run("position", self._c.position, [ctp])[0].offset
        if pos >= 0:
            return pos
        # Nothing consumed yet: where the fetch starts, the committed offset or the log start.
        if tp not in self._from_start:  # (a manual assignment from the start has no committed offset)
            committed = self.committed(tp)
            if committed is not None:
                return committed
        low, _ = self._run("watermarks", self._c.get_watermark_offsets, ctp, timeout=(timeout_ms or 10_000) / 1000)
        return low if low >= 0 else None

    def committed(self, tp: Any, timeout_ms: int | None = None) -> int | None:
        timeout_s = (timeout_ms or 10_000) / 1000
        off = self._run("committed", self._c.committed, [self._CTP(tp.topic, tp.partition)], timeout=timeout_s)[
            0
        ].offset
        return off if off >= 0 else None

    def commit(self, offsets: dict[Any, Any]) -> None:
        parts = [self._CTP(tp.topic, tp.partition, om.offset) for tp, om in offsets.items()]
        if parts:
            self._run("commit", self._c.commit, offsets=parts, asynchronous=False)

    def seek(self, tp: Any, offset: int) -> None:
        self._run("seek", self._c.seek, self._CTP(tp.topic, tp.partition, offset))

    def seek_to_beginning(self, *tps: Any) -> None:
        from confluent_kafka import OFFSET_BEGINNING

        for tp in tps:
            if tp in self._from_start:  # librdkafka refuses a seek before the first fetch; no need
                continue
            self._run("seek", self._c.seek, self._CTP(tp.topic, tp.partition, OFFSET_BEGINNING))

    def assign(self, tps: list[Any]) -> None:
        """A manual assignment, from the log start (its only user, the restore, reads without a
        group: kafka-python starts there too, by auto_offset_reset)."""
        from confluent_kafka import OFFSET_BEGINNING, KafkaException

        # Leaders known before the assignment: librdkafka otherwise finds none for the partitions
        # and retries their start-offset lookup only after a fixed 500 ms (most of a small restore).
        # Only a head start: on failure the assignment goes on as it would have without it.
        for topic in sorted({tp.topic for tp in tps}):
            try:
                self._c.list_topics(topic, timeout=METADATA_WARMUP_S)
            except KafkaException:
                break
        self._run("assign", self._c.assign, [self._CTP(tp.topic, tp.partition, OFFSET_BEGINNING) for tp in tps])
        self._from_start = set(tps)

    def pause(self, *tps: Any) -> None:
        self._run("pause", self._c.pause, [self._CTP(tp.topic, tp.partition) for tp in tps])

    def assignment(self) -> set[Any]:
        return {self._tp(p.topic, p.partition) for p in self._run("assignment", self._c.assignment)}

    def group_metadata(self) -> Any:
        return self._c.consumer_group_metadata()

    def commit_transactional(self, producer: Any, offsets: dict[Any, int], timeout_s: float) -> None:
        """``producer.send_offsets_to_transaction`` with this consumer's offsets and group metadata."""
        parts = [self._CTP(tp.topic, tp.partition, o) for tp, o in offsets.items()]
        producer.send_offsets_to_transaction(parts, self._c.consumer_group_metadata(), timeout_s)

    def close(self) -> None:
        self._run("close", self._c.close)


class ConfluentOutput:
    """confluent-kafka's ``Producer``: sends are queued in librdkafka; ``flush`` waits for all of
    them and reports the failures, the only deliveries that call back into Python."""

    def __init__(self, cfg: Config):
        from confluent_kafka import Producer

        self._p = Producer(self.settings(cfg))
        self._failed: list[str] = []
        self._lock = threading.Lock()
        self._pending = 0

    @staticmethod
    def settings(cfg: Config) -> dict[str, Any]:
        conf = confluent_settings(cfg)
        conf.update(
            {
                "acks": "all",
                "linger.ms": 5,
                # Ordering across retries matters for the changelog: one in-flight request per broker.
                "max.in.flight.requests.per.connection": 1,
                "enable.idempotence": False,
                "message.timeout.ms": 120_000,
                "batch.size": 1024 * 1024,
                "message.max.bytes": 8 * 1024 * 1024,
                "queue.buffering.max.messages": 1_000_000,
                "delivery.report.only.error": True,
                # Keyed records land where kafka-python (and the Java client) would put them: workers
                # of either client agree on a business's output partition.
                "partitioner": "murmur2_random",
            }
        )
        return conf

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            with self._lock:
                self._failed.append(f"{msg.topic()}[{msg.partition()}]: {err.str()}")

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        kw: dict[str, Any] = {"key": key, "on_delivery": self._on_delivery}
        if partition is not None:
            kw["partition"] = partition
        if headers:
            kw["headers"] = headers
        self._pending += 1
        while True:
            try:
                self._p.produce(topic, value, **kw)
                return
            except BufferError:  # local queue full: serve delivery reports until there is room
                self._p.poll(0.05)

    def send_many(
        self, topic: str, keys: list[bytes], values: list[bytes], partitions: list[int] | None = None
    ) -> None:
        # produce's positional form (topic, value, key, partition, on_delivery): no dict per record
        produce, report = self._p.produce, self._on_delivery
        parts = partitions if partitions is not None else [-1] * len(values)  # -1: the partitioner's choice
        self._pending += len(values)
        for k, v, p in zip(keys, values, parts, strict=True):
            while True:
                try:
                    produce(topic, v, k, p, report)
                    break
                except BufferError:  # local queue full: serve delivery reports until there is room
                    self._p.poll(0.05)

    def flush(self, timeout_s: float) -> None:
        pending, self._pending = self._pending, 0
        if not pending:
            return
        left = self._p.flush(timeout_s)
        with self._lock:
            failed, self._failed = self._failed, []
        if failed:
            raise DeliveryError(f"delivery failed for {len(failed)} of {pending} records, e.g. {failed[0]}")
        if left:
            raise DeliveryError(f"{left} records not acknowledged within {timeout_s:.0f}s")

    def close(self) -> None:
        self._p.flush(10)


class ConfluentTransactions(ConfluentOutput):
    """confluent-kafka's transactional ``Producer`` (see :class:`TransactionalOutput`)."""

    TIMEOUT_S = 30.0

    def __init__(self, cfg: Config, txn_id: str):
        self._cfg = cfg
        self.transactional_id = txn_id
        self._failed: list[str] = []
        self._lock = threading.Lock()
        self._pending = 0
        self._p = self._new_producer()
        self.in_transaction = False
        self._begun = 0.0

    def _new_producer(self) -> Any:
        from confluent_kafka import KafkaException, Producer

        conf = self.settings(self._cfg)
        conf.update(
            {
                "transactional.id": self.transactional_id,
                "enable.idempotence": True,
                "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
                # A record cannot outlive its transaction (librdkafka refuses a longer one).
                "message.timeout.ms": TRANSACTION_TIMEOUT_MS,
            }
        )
        p = Producer(conf)
        try:
            p.init_transactions(self.TIMEOUT_S)
        except KafkaException as exc:
            raise TransportError(f"init_transactions({self.transactional_id}): {exc.args[0]}") from exc
        return p

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        if not self.in_transaction:
            self._begin()
        super().send(topic, key, value, partition, headers)

    def send_many(
        self, topic: str, keys: list[bytes], values: list[bytes], partitions: list[int] | None = None
    ) -> None:
        if not self.in_transaction:
            self._begin()
        super().send_many(topic, keys, values, partitions)

    def _begin(self) -> None:
        self._p.begin_transaction()
        self.in_transaction = True
        self._begun = time.monotonic()

    def commit(self, offsets: dict[Any, int], consumer: Any) -> None:
        from confluent_kafka import KafkaException

        try:
            if offsets:
                if not self.in_transaction:
                    self._begin()
                consumer.commit_transactional(self._p, offsets, self.TIMEOUT_S)
            if self.in_transaction:
                self._p.commit_transaction(self.TIMEOUT_S)
                self.in_transaction = False
        except KafkaException as exc:
            err = exc.args[0]
            if err.fatal():
                raise _fenced_or_expired(self.transactional_id, self._begun, exc) from exc
            raise CommitFailed(f"transaction {self.transactional_id} not committed: {err.str()}") from exc

    def abort(self) -> None:
        from confluent_kafka import KafkaException

        self._pending = 0
        with self._lock:
            self._failed = []
        if not self.in_transaction:
            return
        self.in_transaction = False
        try:
            self._p.abort_transaction(self.TIMEOUT_S)
        except KafkaException as exc:
            err = exc.args[0]
            if not err.fatal():
                raise TransportError(f"abort of transaction {self.transactional_id}: {err.str()}") from exc
            fenced = _fenced_or_expired(self.transactional_id, self._begun, exc)
            if isinstance(fenced, ProducerFenced):
                raise fenced from exc
            self._p = self._new_producer()

    def close(self) -> None:
        try:
            if self.in_transaction:
                self.abort()
        finally:
            self._p.flush(10)
