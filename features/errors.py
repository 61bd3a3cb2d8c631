"""The project's one exception root, and the errors raised by the feature code.

``features`` is the bottom package (``models`` and ``consumer`` import it, it imports neither), so
the root lives here and each package subclasses it with its own root. Catch ``StreamrankError``
for "anything this project raises on purpose"; anything else is a bug (or a library's error).
``streamrank`` (``consumer.cli.main``) prints one line ``error: ...`` for the root and exits 1.

The whole tree (module: class; an indented class subclasses the one above it)::

    StreamrankError                  features.errors  the root
        FeatureError                 features.errors  root of the feature code's errors
            InvalidEvent                              an event breaks a rule the Avro schema cannot express
            SpecError                                 a malformed or mismatched feature spec
            UnreadableState                           serialized state this code cannot read
                StateVersionError                     ... written by another state version or spec
                CorruptState                          ... bytes that do not parse (truncated, garbled)
        ModelError                   models.errors    root of the models package's errors
            ModelRefused                              a registered model must not be served
            RegistryError                             the registry directory is unusable
            TrainingError                             training cannot produce a model
                SplitGroupError                       ... a ranking group would be cut across batches or workers
                CheckpointMismatch                    ... the build's checkpoint is ahead of the log it reads
        ConsumerError                consumer.errors  root of the Kafka side's errors
            ConfigError                               a setting is missing, malformed or inconsistent
            BrokerUnavailable                         no broker answered at the bootstrap address
            EmbeddedBrokerError                       a broker we start ourselves could not start
                JavaUnavailable                       ... Apache Kafka asked for, no Java/Maven here
            SchemaRegistryError                       unknown schema id, or a schema not registered
            DecodeError                               a record's bytes are not a valid event
            PublishError                              the broker refused records we published
            TopicLayoutError                          topics missing or not co-partitioned
                TopicNotFound                         ... one named topic does not exist
            TransportError                            the Kafka client failed; the worker backs off
                DeliveryError                         ... a batch's output was not acknowledged
                CommitFailed                          ... the broker refused a checkpoint's commit
            StaleState                                a changelog entry this feature set cannot read
                CorruptChangelog                      ... its bytes do not parse; both: rebuild
            UnprocessableBatch                        our code raised on a batch: re-run it record by record
            ProducerFenced                            exactly_once: another worker took our transactional id: stop
            ProcessingHalted                          our code failed record after record: stop
            InputLogError                             the input topics could not be read to their end
            TimeLookupError                           records needed to resolve a time unreadable
            ReplayError                               ``streamrank replay`` cannot start or finish
            DiffError                                 ``streamrank diff``: two sides not comparable
            ReportError                               ``streamrank report``: nothing to report on
            ClosedLoopError                           the closed-loop experiment cannot go on
            YelpImportError                           ``import-yelp``: the input cannot be imported
            BadLine                                   one Yelp line skipped (counted, never escapes)

Messages carry their context: a record's coordinates as ``topic[partition]@offset``, a changelog
entry's partition and key, a model's version. Code that wraps a lower error raises ``... from
exc``. Callers branch on the class, never on message text.
"""


class StreamrankError(Exception):
    """Root of every error this project raises on purpose (``features``, ``models``, ``consumer``)."""


class FeatureError(StreamrankError):
    """Root of every error the ``features`` package raises."""


class InvalidEvent(FeatureError):
    """An event breaks a rule of the contract that the Avro schema cannot express."""


class UnreadableState(FeatureError):
    """Serialized state (``features.state.from_bytes``) this code cannot read."""


class StateVersionError(UnreadableState):
    """Serialized state was written by an incompatible state version or another feature spec."""


class CorruptState(UnreadableState):
    """Serialized state has this version's header but its bytes do not parse (truncated, garbled)."""


class SpecError(FeatureError):
    """A feature spec is malformed, or does not match the spec a state or model was built with."""
