"""Errors raised by the Kafka side of streamrank: ``ConsumerError`` and its subclasses, under the
project's root ``StreamrankError`` (``features.errors``, re-exported here; its docstring shows the
whole tree). Every error class of ``consumer`` lives here, tools' included.

Messages carry their coordinates (``topic[partition]@offset``) so a log line alone says which
record to look at.
"""

from __future__ import annotations

from features.errors import StreamrankError as StreamrankError  # re-exported: the root, for ``consumer`` code


class ConsumerError(StreamrankError):
    """Root of every error the ``consumer`` package raises."""


class ConfigError(ConsumerError):
    """A setting is missing, malformed or inconsistent."""


class BrokerUnavailable(ConsumerError):
    """No broker answered at the bootstrap address within the timeout."""


class EmbeddedBrokerError(ConsumerError):
    """A broker this project starts itself (Tansu, or Apache Kafka on the JVM) could not be found or started."""


class JavaUnavailable(EmbeddedBrokerError):
    """Apache Kafka was asked for but this machine has no Java (or no Maven to fetch the jars)."""


class SchemaRegistryError(ConsumerError):
    """A schema id is unknown, or a schema could not be registered."""


class DecodeError(ConsumerError):
    """A record's bytes are not a valid event. Names the record it came from."""

    def __init__(self, reason: str, topic: str = "?", partition: int = -1, offset: int = -1):
        self.reason = reason
        self.topic = topic
        self.partition = partition
        self.offset = offset
        super().__init__(f"{topic}[{partition}]@{offset}: {reason}")


class PublishError(ConsumerError):
    """The broker refused records we published (named: how many, which setting, the first one)."""


class TopicLayoutError(ConsumerError):
    """Topics are missing or not co-partitioned."""


class TopicNotFound(TopicLayoutError):
    """A topic we were asked to read does not exist (``topic``: its name)."""

    def __init__(self, topic: str, hint: str = ""):
        self.topic = topic
        super().__init__(f"topic {topic} does not exist" + (f" ({hint})" if hint else ""))


class TransportError(ConsumerError):
    """The Kafka client failed (poll, commit, seek, ...): the worker backs off and rewinds."""


class DeliveryError(TransportError):
    """The broker did not acknowledge a batch's output within the delivery timeout."""


class StaleState(ConsumerError):
    """A changelog entry cannot be read by this feature set (another state version or spec): the
    worker rebuilds its partition's state from the input topics instead of stopping.

    Found on the business's next event (restore checks headers only), so the message names the
    partition and key; the changelog offset is not kept per key (it would cost memory per business
    held), and on a compacted topic the key names the value."""

    def __init__(self, reason: str, *, partition: int = -1, business_id: str = "?", topic: str = "changelog"):
        self.reason = reason
        self.partition = partition
        self.business_id = business_id
        self.topic = topic
        super().__init__(f"{topic}[{partition}] key {business_id!r}: {reason}")

    def at(self, *, partition: int, business_id: str, topic: str = "changelog") -> StaleState:
        """The same error, naming where the entry was found."""
        return type(self)(self.reason, partition=partition, business_id=business_id, topic=topic)


class CorruptChangelog(StaleState):
    """A changelog value's bytes do not parse: not our framing (``SR1`` header), truncated, or a
    state body that does not decode. Treated like ``StaleState``: the worker rebuilds the partition
    from the input topics and rewrites its changelog (a corrupt entry must not stop the worker, and
    must not crash-loop it either: the rebuild replaces the entry)."""


class ProducerFenced(ConsumerError):
    """exactly_once: another worker started with this worker's transactional id and fenced it. The
    worker stops (exit 1): two live workers with one id would fence each other forever."""


class ProcessingHalted(ConsumerError):
    """Our own code failed on record after record: a bug, not bad input. The worker stops (exit 1)
    rather than dead-letter its whole input; the records stay uncommitted for the fixed version."""


class InputLogError(ConsumerError):
    """The input topics could not be read to their end (``consumer.io.inputlog``: a stalled fetch)."""


# ------------------------------------------------------------------------------------- tools
class TimeLookupError(ConsumerError):
    """Records needed to resolve a time could not be read (``consumer.io.timeindex``)."""


class ReplayError(ConsumerError):
    """A replay cannot start or cannot finish (bad range, unknown model, unsafe output topic)."""


class DiffError(ConsumerError):
    """The two sides cannot be compared (ambiguous versions, nothing to join, a topic unreadable)."""


class ReportError(ConsumerError):
    """Nothing to report on (no predictions, no activity), or a topic unreadable."""


class ClosedLoopError(ConsumerError):
    """The closed-loop experiment cannot go on: its worker stopped, or a day was not scored in time."""


class YelpImportError(ConsumerError):
    """The input cannot be imported at all (no such directory, no Yelp files, unreadable file)."""


class BadLine(ConsumerError):
    """One Yelp input line that cannot become events; ``reason`` groups the import's report. The
    importer counts and skips such lines: this never leaves it."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class CommitFailed(TransportError):
    """The broker refused the commit of a checkpoint's offsets: the worker rewinds to the last
    commit and re-reads (its outputs were acknowledged; their ids make the re-emission harmless)."""


class UnprocessableBatch(ConsumerError):
    """Our own code raised on a batch (not Kafka, not bad input): the worker rewinds to the last
    checkpoint and re-runs the batch record by record, dead-lettering the record that raises."""
