"""Errors raised by the Kafka side of streamrank. One root, specific subclasses.

Messages carry their coordinates (``topic[partition]@offset``) so a log line alone says which
record to look at.
"""


class StreamrankError(Exception):
    """Root of every error the ``consumer`` package raises."""


class ConfigError(StreamrankError):
    """A setting is missing, malformed or inconsistent."""


class BrokerUnavailable(StreamrankError):
    """No broker answered at the bootstrap address within the timeout."""


class EmbeddedBrokerError(StreamrankError):
    """A broker this project starts itself (Tansu, or Apache Kafka on the JVM) could not be found or started."""


class JavaUnavailable(EmbeddedBrokerError):
    """Apache Kafka was asked for but this machine has no Java (or no Maven to fetch the jars)."""


class SchemaRegistryError(StreamrankError):
    """A schema id is unknown, or a schema could not be registered."""


class DecodeError(StreamrankError):
    """A record's bytes are not a valid event. Names the record it came from."""

    def __init__(self, reason: str, topic: str = "?", partition: int = -1, offset: int = -1):
        self.reason = reason
        self.topic = topic
        self.partition = partition
        self.offset = offset
        super().__init__(f"{topic}[{partition}]@{offset}: {reason}")


class PublishError(StreamrankError):
    """The broker refused records we published (named: how many, which setting, the first one)."""


class TopicLayoutError(StreamrankError):
    """Topics are missing or not co-partitioned."""


class TransportError(StreamrankError):
    """The Kafka client failed (poll, commit, seek, ...): the worker backs off and rewinds."""


class DeliveryError(TransportError):
    """The broker did not acknowledge a batch's output within the delivery timeout."""


class StaleState(StreamrankError):
    """A changelog entry cannot be read by this feature set (another version, or corrupt): the
    worker rebuilds its partition's state from the input topics instead of stopping."""

    def __init__(self, partition: int, business_id: str, reason: str):
        self.partition = partition
        self.business_id = business_id
        super().__init__(f"changelog partition {partition} key {business_id!r}: {reason}")


class ProcessingHalted(StreamrankError):
    """Our own code failed on record after record: a bug, not bad input. The worker stops (exit 1)
    rather than dead-letter its whole input; the records stay uncommitted for the fixed version."""
